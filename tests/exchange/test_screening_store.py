"""The node's screening index is kept in the view's store, not in memory (ADR 0038): screening
answers as the in-memory index does, across restarts, after revocations and with a facts cache
smaller than the list; a view file from before the index (or one whose index is lost) gets its
index built at the next start."""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from pathlib import Path

import pytest

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2
from gateway.domain.fixtures import seed_declaration, seed_revocation, seed_watchlist_entry
from gateway.domain.watchlist import WatchlistView
from gateway.exchange import watchlists as watchlists_module
from gateway.exchange.watchlists import Watchlists
from gateway.pki import Jurisdiction
from gateway.server.config import load_config
from gateway.server.node import _load_signer
from tests.support import World

ENTRY = common_pb2.MESSAGE_KIND_WATCHLIST_ENTRY
REVOCATION = common_pb2.MESSAGE_KIND_WATCHLIST_REVOCATION
NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
NAMES = [
    "Golden Dragon Mining Limited",
    "Golden Dragon Minerals Ltd",
    "Pearl River Antimony Trading",
    "Harbour Line Shipping Company",
    "Jade Mountain Metals",
    "Silver Crane Logistics",
]


def _entries() -> list[domain_pb2.WatchlistEntry]:
    out = [seed_watchlist_entry(NOW)]
    for i, name in enumerate(NAMES):
        entry = seed_watchlist_entry(NOW)
        entry.entry_id = f"entry-{i}"
        del entry.names[:]
        entry.names.add(full_name=name)
        entry.identifiers[0].value = f"{12345670 + i:08d}"
        out.append(entry)
    return out


def _declarations() -> list[domain_pb2.Declaration]:
    out = [seed_declaration()]
    for name in [*NAMES, "Golden Dragon Mining", "Perl River Antimony", "Unrelated Bakery"]:
        declaration = seed_declaration()
        del declaration.parties[0].names[:]
        declaration.parties[0].names.add(full_name=name)
        del declaration.parties[0].identifiers[:]
        out.append(declaration)
    return out


def _hits(response: partner_pb2.ScreenDeclarationResponse) -> list[tuple[str, float, int]]:
    return [(h.entry_id, h.score, len(h.reasons)) for h in response.hits]


def _open(world: World, tmp_path: Path) -> Watchlists:
    config = load_config(world.write_config(Jurisdiction.CN, tmp_path / "cn"))
    return Watchlists(_load_signer(config), lambda: NOW, tmp_path / "watchlist-view.db")


def _count(path: Path, table: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def test_stored_index_screens_as_the_memory_index(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watchlists_module, "FACTS_CACHE", 2)  # facts computed again, often
    memory = WatchlistView(b"screening-store-test-secret-0000")
    stored = _open(world, tmp_path)
    try:
        told = []
        for entry in _entries():
            message_id = str(uuid.uuid4())
            memory.apply(common_pb2.JURISDICTION_HK, entry, message_id, received_at=NOW)
            told.append((Jurisdiction.HK, ENTRY, entry, message_id, NOW))
        stored.apply_many(told)
        assert _count(tmp_path / "watchlist-view.db", "screening_postings") > len(told)
        for declaration in _declarations():
            expected = _hits(memory.screen(declaration, now=NOW))
            request = partner_pb2.ScreenDeclarationRequest(declaration=declaration)
            assert _hits(stored.screen(request)) == expected
        assert any(_hits(memory.screen(d, now=NOW)) for d in _declarations())
    finally:
        stored.close()


def test_stored_index_survives_restart_and_follows_revocations(
    world: World, tmp_path: Path
) -> None:
    path = tmp_path / "watchlist-view.db"
    request = partner_pb2.ScreenDeclarationRequest(declaration=seed_declaration())
    entry = seed_watchlist_entry(NOW)
    first = _open(world, tmp_path)
    try:
        first.apply(Jurisdiction.HK, ENTRY, entry, str(uuid.uuid4()), NOW)
        hits = _hits(first.screen(request))
        assert [h[0] for h in hits] == [entry.entry_id]
    finally:
        first.close()
    postings = _count(path, "screening_postings")
    assert postings > 0
    again = _open(world, tmp_path)
    try:
        assert _hits(again.screen(request)) == hits  # served from the store, not rebuilt
        assert _count(path, "screening_postings") == postings
        revocation = seed_revocation()
        revocation.entry_id = entry.entry_id
        revocation.watchlist = entry.watchlist
        again.apply(Jurisdiction.HK, REVOCATION, revocation, str(uuid.uuid4()), NOW)
        assert _hits(again.screen(request)) == []
    finally:
        again.close()
    assert _count(path, "view_meta WHERE indexed = 0") == 1
    assert _count(path, "screening_postings") == 0


def _screened_and_closed(
    world: World, tmp_path: Path, request: partner_pb2.ScreenDeclarationRequest
) -> tuple[list[tuple[str, float, int]], int]:
    """Applies the test entries to a new view, screens ``request``, closes it: the hits and
    the view version."""
    first = _open(world, tmp_path)
    try:
        for entry in _entries():
            first.apply(Jurisdiction.HK, ENTRY, entry, str(uuid.uuid4()), NOW)
        return _hits(first.screen(request)), first.version
    finally:
        first.close()


def test_a_view_without_its_index_gets_it_built_at_start(world: World, tmp_path: Path) -> None:
    path = tmp_path / "watchlist-view.db"
    request = partner_pb2.ScreenDeclarationRequest(declaration=seed_declaration())
    hits, version = _screened_and_closed(world, tmp_path, request)
    with sqlite3.connect(path) as conn:  # as a file written before ADR 0038 has it
        conn.execute("DELETE FROM screening_postings")
        conn.execute("UPDATE view_meta SET indexed = 0")
    again = _open(world, tmp_path)
    try:
        assert _count(path, f"view_meta WHERE indexed = {len(_entries())}") == 1
        assert _hits(again.screen(request)) == hits
        assert again.version == version  # building the index is no change of the view
    finally:
        again.close()


def _open_deferred(world: World, tmp_path: Path) -> Watchlists:
    config = load_config(world.write_config(Jurisdiction.CN, tmp_path / "cn"))
    return Watchlists(
        _load_signer(config), lambda: NOW, tmp_path / "watchlist-view.db", deferred=True
    )


def test_a_deferred_view_answers_only_once_it_shows_what_it_was_told(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ADR 0059: apply_many only queues; a screen, a page, an entry and the version asked
    right after it see every payload told before; close applies what is still queued."""
    monkeypatch.setattr(watchlists_module, "QUEUED_ENTRIES", 2)  # telling waits, too
    memory = WatchlistView(b"screening-store-test-secret-0000")
    deferred = _open_deferred(world, tmp_path)
    entries = _entries()
    try:
        for entry in entries:  # one batch per entry: several queued at once
            message_id = str(uuid.uuid4())
            memory.apply(common_pb2.JURISDICTION_HK, entry, message_id, received_at=NOW)
            deferred.apply_many([(Jurisdiction.HK, ENTRY, entry, message_id, NOW)])
        for declaration in _declarations():
            request = partner_pb2.ScreenDeclarationRequest(declaration=declaration)
            assert _hits(deferred.screen(request)) == _hits(memory.screen(declaration, now=NOW))
        assert deferred.version == memory.version == len(entries)
        listed = deferred.list(partner_pb2.ListWatchlistRequest(watchlist=entries[0].watchlist))
        assert len(listed.items) == len(entries)
        revocation = seed_revocation()
        revocation.entry_id, revocation.watchlist = entries[-1].entry_id, entries[-1].watchlist
        deferred.apply_many([(Jurisdiction.HK, REVOCATION, revocation, str(uuid.uuid4()), NOW)])
        item = deferred.get(
            partner_pb2.GetWatchlistEntryRequest(
                origin=common_pb2.JURISDICTION_HK,
                watchlist=revocation.watchlist,
                entry_id=revocation.entry_id,
            )
        )
        assert item.state == partner_pb2.ENTRY_STATE_REVOKED
        last = seed_watchlist_entry(NOW)
        last.entry_id = "told-just-before-close"
        deferred.apply_many([(Jurisdiction.HK, ENTRY, last, str(uuid.uuid4()), NOW)])
    finally:
        deferred.close()
    assert _count(tmp_path / "watchlist-view.db", "view_entries") == len(entries) + 1


def test_a_view_file_of_schema_3_gets_ordered_postings_and_its_index_rebuilt(
    world: World, tmp_path: Path
) -> None:
    """ADR 0059: version 4 keys postings by (table, key, indexing number); a file written
    before it has its postings dropped and built again at start, screening as before."""
    path = tmp_path / "watchlist-view.db"
    request = partner_pb2.ScreenDeclarationRequest(declaration=seed_declaration())
    hits, version = _screened_and_closed(world, tmp_path, request)
    with sqlite3.connect(path) as conn:  # back to schema 3's tables, as an older node left them
        conn.execute("DROP TABLE screening_postings")
        conn.execute("DROP TABLE screening_keys")
        conn.execute(
            "CREATE TABLE screening_postings (tbl INTEGER NOT NULL, k TEXT NOT NULL, "
            "origin INTEGER NOT NULL, watchlist TEXT NOT NULL, entry_id TEXT NOT NULL, "
            "value TEXT NOT NULL, PRIMARY KEY (tbl, k, origin, watchlist, entry_id)) WITHOUT ROWID"
        )
        conn.execute(
            "CREATE TABLE screening_keys (origin INTEGER NOT NULL, watchlist TEXT NOT NULL, "
            "entry_id TEXT NOT NULL, posted TEXT NOT NULL, "
            "PRIMARY KEY (origin, watchlist, entry_id)) WITHOUT ROWID"
        )
        conn.execute("ALTER TABLE view_meta DROP COLUMN posted")
        conn.execute("UPDATE store_schema SET version = 3 WHERE name = 'watchlist_view'")
    again = _open(world, tmp_path)
    try:
        assert _count(path, f"view_meta WHERE indexed = {len(_entries())}") == 1
        assert _count(path, "screening_keys") == len(_entries())
        assert _hits(again.screen(request)) == hits
        assert again.version == version
    finally:
        again.close()
