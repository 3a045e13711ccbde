"""On PostgreSQL the watchlist view's tables are the node's, shared by its replicas: a change one
replica stores is what every replica serves, and no view version is used twice (ADR 0070)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from customs.gateway.v1 import common_pb2, partner_pb2
from gateway.domain.fixtures import seed_declaration, seed_publish_request, seed_revocation
from gateway.exchange.watchlists import Watchlists
from gateway.pki import Jurisdiction
from gateway.server.config import load_config
from gateway.server.node import _load_signer
from gateway.store import Database, open_database
from tests.support import World

pytestmark = pytest.mark.postgres

ENTRY = common_pb2.MESSAGE_KIND_WATCHLIST_ENTRY
NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)


@pytest.fixture
def pg(postgres_url: str) -> Iterator[Database]:
    db = open_database(postgres_url, Path("unused"))
    yield db
    db.close()


def _entry(watchlist: str) -> partner_pb2.PublishWatchlistEntryRequest:
    request = seed_publish_request(NOW)
    request.entry.entry_id = str(uuid.uuid4())
    request.entry.watchlist = watchlist
    return request


def _listed(view: Watchlists, watchlist: str) -> tuple[int, set[str]]:
    response = view.list(partner_pb2.ListWatchlistRequest(watchlist=watchlist))
    return response.view_version, {item.entry.entry_id for item in response.items}


def test_two_replicas_serve_one_view(world: World, tmp_path: Path, pg: Database) -> None:
    config = load_config(world.write_config(Jurisdiction.CN, tmp_path / "cn"))
    key = _load_signer(config)
    first = Watchlists(key, lambda: NOW, pg)
    second = Watchlists(key, lambda: NOW, pg)
    try:
        one = _entry("strategic-minerals")
        first.apply(Jurisdiction.HK, ENTRY, one.entry, str(uuid.uuid4()), NOW)
        version, ids = _listed(second, "strategic-minerals")
        assert ids == {one.entry.entry_id}  # the other replica serves what the first stored
        two = _entry("strategic-minerals")
        second.apply(Jurisdiction.HK, ENTRY, two.entry, str(uuid.uuid4()), NOW)
        later, ids = _listed(first, "strategic-minerals")
        assert ids == {one.entry.entry_id, two.entry.entry_id}
        assert later > version  # versions only grow across replicas
        assert first.version == second.version == later
    finally:
        first.close()
        second.close()


def test_replicas_screen_against_one_stored_index(
    world: World, tmp_path: Path, pg: Database
) -> None:
    """The screening index is kept in the shared database (ADR 0038): what one replica
    publishes or revokes is what the other screens against, without reloading a view."""
    config = load_config(world.write_config(Jurisdiction.CN, tmp_path / "cn"))
    key = _load_signer(config)
    first = Watchlists(key, lambda: NOW, pg)
    second = Watchlists(key, lambda: NOW, pg)
    try:
        entry = _entry("strategic-minerals").entry
        first.apply(Jurisdiction.HK, ENTRY, entry, str(uuid.uuid4()), NOW)
        request = partner_pb2.ScreenDeclarationRequest(declaration=seed_declaration())
        assert [h.entry_id for h in second.screen(request).hits] == [entry.entry_id]
        revocation = seed_revocation()
        revocation.watchlist, revocation.entry_id = entry.watchlist, entry.entry_id
        second.apply(
            Jurisdiction.HK, common_pb2.MESSAGE_KIND_WATCHLIST_REVOCATION, revocation,
            str(uuid.uuid4()), NOW,
        )  # fmt: skip
        assert first.screen(request).hits == []
        assert first.version == second.version
    finally:
        first.close()
        second.close()
