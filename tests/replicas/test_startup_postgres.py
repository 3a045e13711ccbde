"""A node on PostgreSQL starts, and refuses to start on a database it must not use (ADR 0070):
one line, exit status 2, from the real ``serve`` command."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from gateway.exchange._store import EXCHANGE_SCHEMA
from gateway.exchange.watchlists import VIEW_SCHEMA
from gateway.pki import Jurisdiction
from gateway.server import Node, load_config
from tests.failclosed.serving import assert_one_line_refusal, finish, start_serve
from tests.support import World

pytestmark = pytest.mark.postgres

CN, HK = Jurisdiction.CN, Jurisdiction.HK


def _made_by(world: World, tmp_path: Path, url: str, jurisdiction: Jurisdiction) -> None:
    """A node of ``jurisdiction`` ran once on the database at ``url``."""
    config = world.write_config(jurisdiction, tmp_path / f"{jurisdiction.value}-first", storage=url)
    node = Node(load_config(config))
    node.ledger.close()
    node.watchlists.close()
    node.data_dir.release()


def test_a_node_starts_on_postgres_and_keeps_nothing_in_sqlite(
    world: World, tmp_path: Path, postgres_url: str
) -> None:
    _made_by(world, tmp_path, postgres_url, CN)
    assert not list((tmp_path / "CN-first").glob("*.db"))
    with psycopg.connect(postgres_url) as conn:
        names = dict(conn.execute("SELECT name, version FROM store_schema").fetchall())
    assert names == {
        "ledger": 1,
        "exchange": EXCHANGE_SCHEMA.version,
        "watchlist_view": VIEW_SCHEMA.version,
        "replicas": 1,
    }
    _made_by(world, tmp_path, postgres_url, CN)  # and again, on what it made


def test_database_of_another_node_is_refused(
    world: World, tmp_path: Path, postgres_url: str
) -> None:
    _made_by(world, tmp_path, postgres_url, HK)
    config = world.write_config(CN, tmp_path / "cn-data", storage=postgres_url)
    assert_one_line_refusal(
        finish(start_serve(config)), r"is the ledger of 'hk\.customs-exchange/ledger', not 'cn\."
    )


def test_newer_schema_version_is_refused(world: World, tmp_path: Path, postgres_url: str) -> None:
    _made_by(world, tmp_path, postgres_url, CN)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE store_schema SET version = 2 WHERE name = 'ledger'")
    config = world.write_config(CN, tmp_path / "cn-data", storage=postgres_url)
    assert_one_line_refusal(
        finish(start_serve(config)),
        r"the ledger schema in this database is version 2; this gateway knows versions up to 1",
    )


def test_missing_database_is_refused(world: World, tmp_path: Path, postgres_server: str) -> None:
    url = postgres_server.rsplit("/", 1)[0] + "/customs_no_such_database"
    config = world.write_config(CN, tmp_path / "cn-data", storage=url)
    assert_one_line_refusal(
        finish(start_serve(config)), r"unreachable: .*database \"customs_no_such_database\""
    )
