"""The suite's second pass (``CUSTOMS_TEST_STORE=postgresql``, run by ``make test``) puts CN's
node of every test-written config on a fresh database of its own, the same one again for the
same data directory, and drops it after the test; HK and MO stay on SQLite."""

from __future__ import annotations

import tomllib
from pathlib import Path

import psycopg
import pytest

from gateway.pki import Jurisdiction
from tests import support
from tests.support import World, running_node

pytestmark = pytest.mark.postgres


def _url(config: Path) -> str | None:
    storage = tomllib.loads(config.read_text()).get("storage")
    return None if storage is None else str(storage["url"])


def _exists(server: str, url: str) -> bool:
    name = url.rpartition("/")[2]
    with psycopg.connect(server, autocommit=True) as admin:
        found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        return found.fetchone() is not None


def test_cn_alone_goes_to_a_database_of_its_own(
    world: World, tmp_path: Path, postgres_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(support, "TEST_STORE", "postgresql")
    cn = world.write_config(Jurisdiction.CN, tmp_path / "cn-data")
    url = _url(cn)
    assert url is not None
    assert "/customs_suite_" in url
    assert _url(world.write_config(Jurisdiction.HK, tmp_path / "hk-data")) is None
    assert _url(world.write_config(Jurisdiction.CN, tmp_path / "cn-data")) == url  # a restart
    assert _url(world.write_config(Jurisdiction.CN, tmp_path / "cn-other")) != url
    with running_node(cn) as node:
        assert node.ledger.size() >= 0
    assert not (tmp_path / "cn-data" / "ledger.db").exists()
    assert _exists(postgres_server, url)
    support.drop_suite_databases(tmp_path)
    assert not _exists(postgres_server, url)


def test_an_explicit_storage_url_is_kept(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(support, "TEST_STORE", "postgresql")
    url = "postgresql://gateway@127.0.0.1:1/elsewhere"
    assert _url(world.write_config(Jurisdiction.CN, tmp_path / "cn", storage=url)) == url
