"""The node's screening index is kept in the view's store, not in memory (ADR 0038): screening
answers as the in-memory index does, across restarts, after revocations and with a facts cache
smaller than the list; a view file from before the index (or one whose index is lost) gets its
index built at the next start."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2
from gateway.domain.fixtures import seed_declaration, seed_revocation, seed_watchlist_entry
from gateway.domain.screening import BLOCK_LIMIT, EntryKey, ScreeningIndex
from gateway.domain.screening import NAMES as NAME_KEYS
from gateway.domain.watchlist import WatchlistView
from gateway.errors import NotFoundError
from gateway.exchange import watchlists as watchlists_module
from gateway.exchange.watchlists import POSTINGS_KEPT, StoredIndex, ViewStore, Watchlists
from gateway.pki import Jurisdiction
from gateway.server.config import load_config
from gateway.server.node import _load_signer
from gateway.store import Database, open_database
from tests.support import TEST_STORE, World, postgres_database, postgres_server_url

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
        conn.execute("DROP INDEX view_entries_screening")
        conn.execute("ALTER TABLE view_entries DROP COLUMN screening_n")
        conn.execute("ALTER TABLE view_entries DROP COLUMN screening_posted")
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
        assert _count(path, "view_entries WHERE screening_n IS NOT NULL") == len(_entries())
        assert _hits(again.screen(request)) == hits
        assert again.version == version
    finally:
        again.close()


def test_a_view_file_of_schema_6_gets_its_screening_keys_copied_into_the_entries(
    world: World, tmp_path: Path
) -> None:
    """ADR 0084: version 7 keeps an indexed entry's indexing number and posted keys in its
    ``view_entries`` row, and postings name their entry by that number; a file of version 6
    has its rows copied (the same indexing numbers, nothing built again) and screens as
    before, and what is published after the upgrade is indexed as before."""
    path = tmp_path / "watchlist-view.db"
    request = partner_pb2.ScreenDeclarationRequest(declaration=seed_declaration())
    hits, version = _screened_and_closed(world, tmp_path, request)
    entries_query = (
        "SELECT screening_n, origin, watchlist, entry_id, screening_posted FROM view_entries "
        "WHERE screening_n IS NOT NULL ORDER BY screening_n"
    )
    postings_query = (
        "SELECT p.tbl, p.k, p.n, e.origin, e.watchlist, e.entry_id, p.value "
        "FROM screening_postings AS p JOIN view_entries AS e ON e.screening_n = p.n "
        "ORDER BY 1, 2, 3"
    )
    with sqlite3.connect(path) as conn:
        keys = conn.execute(entries_query).fetchall()
        postings = conn.execute(postings_query).fetchall()
        # Back to schema 6's tables, as an older node left them.
        conn.execute("DROP INDEX view_entries_screening")
        conn.execute("ALTER TABLE view_entries DROP COLUMN screening_n")
        conn.execute("ALTER TABLE view_entries DROP COLUMN screening_posted")
        conn.execute("DROP TABLE screening_postings")
        conn.execute(
            "CREATE TABLE screening_postings (tbl INTEGER NOT NULL, k TEXT NOT NULL, "
            "n INTEGER NOT NULL, origin INTEGER NOT NULL, watchlist TEXT NOT NULL, "
            "entry_id TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (tbl, k, n)) WITHOUT ROWID"
        )
        conn.execute(
            "CREATE TABLE screening_keys (origin INTEGER NOT NULL, watchlist TEXT NOT NULL, "
            "entry_id TEXT NOT NULL, n INTEGER NOT NULL, posted TEXT NOT NULL, "
            "PRIMARY KEY (origin, watchlist, entry_id)) WITHOUT ROWID"
        )
        conn.execute("CREATE INDEX screening_keys_n ON screening_keys (n)")
        conn.executemany("INSERT INTO screening_postings VALUES (?, ?, ?, ?, ?, ?, ?)", postings)
        conn.executemany(
            "INSERT INTO screening_keys (n, origin, watchlist, entry_id, posted) "
            "VALUES (?, ?, ?, ?, ?)",
            keys,
        )
        conn.execute("UPDATE store_schema SET version = 6 WHERE name = 'watchlist_view'")
    assert len(keys) == len(_entries())
    assert len(postings) > len(keys)
    again = _open(world, tmp_path)
    try:
        with sqlite3.connect(path) as conn:
            assert conn.execute(entries_query).fetchall() == keys
            assert conn.execute(postings_query).fetchall() == postings
            assert [c[1] for c in conn.execute("PRAGMA table_info(screening_postings)")] == [
                "tbl", "k", "n", "value",
            ]  # fmt: skip
            assert (
                conn.execute(
                    "SELECT name FROM sqlite_master WHERE name = 'screening_keys'"
                ).fetchall()
                == []
            )
            assert conn.execute(
                "SELECT version FROM store_schema WHERE name = 'watchlist_view'"
            ).fetchone() == (watchlists_module.VIEW_SCHEMA.version,)
        assert _hits(again.screen(request)) == hits
        assert again.version == version
        late = seed_watchlist_entry(NOW)
        late.entry_id = "published-after-the-upgrade"
        again.apply(Jurisdiction.HK, ENTRY, late, str(uuid.uuid4()), NOW)
        found = {h[0] for h in _hits(again.screen(request))}
        assert found == {h[0] for h in hits} | {late.entry_id}
    finally:
        again.close()


# --- capped name keys (ADR 0079) -------------------------------------------------------------


@pytest.fixture
def view_store(tmp_path: Path) -> Iterator[ViewStore]:
    """The view's tables on this run's store: a SQLite file, or a PostgreSQL database of its own
    (``CUSTOMS_TEST_STORE=postgresql``)."""
    if TEST_STORE != "postgresql":
        store = ViewStore(tmp_path / "watchlist-view.db")
        yield store
        store.close()
        return
    with postgres_database(postgres_server_url()) as url:
        database = open_database(url, Path("unused"))
        store = ViewStore(database)
        try:
            yield store
        finally:
            store.close()
            database.close()


def _listed_entry(i: int) -> domain_pb2.WatchlistEntry:
    """Entry ``i`` of a list whose names share "Bench Front Company" (the bulk bench's); one in
    400 is named "Bench Front Limited", which a query of only common words finds."""
    entry = seed_watchlist_entry(NOW)
    entry.entry_id = f"listed-{i:05d}"
    del entry.names[:]
    name = "Bench Front Limited" if i % 400 == 5 else f"Bench Front Company {i:07d} Limited"
    entry.names.add(full_name=name)
    entry.identifiers[0].value = f"{(i * 7919) % 100_000_000:08d}"
    return entry


class _Pair:
    """The same entries in a stored index and an in-memory one, changed in batches (one
    transaction and one flush each, as the view's applier writes them)."""

    def __init__(self, store: ViewStore) -> None:
        self.store = store
        self.entries: dict[EntryKey, domain_pb2.WatchlistEntry] = {}
        self.memory = ScreeningIndex()
        self._open()

    def _open(self) -> None:
        self.storage = StoredIndex(self.store, self.entries.get)
        self.stored = ScreeningIndex(self.storage)

    def reopen(self) -> None:
        """A new stored index on the same tables (the capped keys read back)."""
        self._open()

    def batch(self, put: Sequence[int] = (), drop: Sequence[int] = ()) -> None:
        self.store.begin()
        for i in put:
            key = (common_pb2.JURISDICTION_HK, "listed", f"listed-{i:05d}")
            replacing = key in self.entries
            self.entries[key] = _listed_entry(i)
            for index in (self.memory, self.stored):
                index.put(key, self.entries[key], replacing=replacing)
        for i in drop:
            key = (common_pb2.JURISDICTION_HK, "listed", f"listed-{i:05d}")
            del self.entries[key]
            for index in (self.memory, self.stored):
                index.drop(key)
        self.store.save([], 1, NOW, None, self.storage)

    def found(self, name: str) -> dict[EntryKey, tuple[float, int, list[tuple[int, str, float]]]]:
        """What each index finds for a declaration naming ``name``; asserts they agree."""
        declaration = seed_declaration()
        del declaration.parties[0].names[:]
        declaration.parties[0].names.add(full_name=name)
        del declaration.parties[0].identifiers[:]
        answers = []
        for index in (self.memory, self.stored):
            self.store.begin()
            try:
                answers.append(
                    {
                        key: (
                            c.score,
                            c.tier,
                            [(r.kind, r.entry_field, r.similarity) for r in c.reasons],
                        )
                        for key, c in index.find(declaration).items()
                    }
                )
            finally:
                self.store.end()
        assert answers[1] == answers[0]
        return answers[0]

    def counted(self, sql: str) -> int:
        return int(self.store.conn.execute(sql).fetchone()[0])


def _ids(found: dict[EntryKey, object]) -> set[int]:
    return {int(key[2].removeprefix("listed-")) for key in found}


def test_a_key_past_the_cap_keeps_its_first_postings_and_screens_as_before(
    view_store: ViewStore,
) -> None:
    """A name key carried by more than POSTINGS_KEPT entries keeps only the first postings and
    counts the rest; a query of only common words (every key past BLOCK_LIMIT) finds what the
    in-memory index finds (the least common key's first entries), and so does a query of one
    entry's name, new or old."""
    pair = _Pair(view_store)
    total = POSTINGS_KEPT + 700
    for start in range(0, total, 900):
        pair.batch(put=range(start, min(total, start + 900)))
    capped = pair.counted("SELECT COUNT(*) FROM screening_counts")
    assert capped >= 5  # "p:ben", "p:fro", "2:bench|front", ... every entry has them
    assert pair.counted("SELECT MAX(total) FROM screening_counts") == total
    assert pair.counted("SELECT MAX(kept) FROM screening_counts") == POSTINGS_KEPT
    assert len(pair.storage.bucket(NAME_KEYS, "org\x1fp:fro")) == POSTINGS_KEPT
    common = pair.found("Bench Front")
    assert _ids(common) == {5}  # every key past the limit: the first entries in indexing order
    for i in (0, 7, POSTINGS_KEPT + 6, total - 1):
        assert i in _ids(pair.found(f"Bench Front Company {i:07d} Limited"))
    pair.reopen()  # the counts are read back from the store
    assert pair.found("Bench Front") == common
    assert pair.storage.bucket_size(NAME_KEYS, "org\x1fp:fro", BLOCK_LIMIT) == total


def test_a_capped_key_is_refilled_when_drops_bring_it_back(view_store: ViewStore) -> None:
    """Revoking the entries a capped key kept refills its bucket from the entries left (the
    first ones in indexing order), and once BLOCK_LIMIT or fewer carry it, the key holds every
    one of them again: each is found by a query of common words, as in memory."""
    pair = _Pair(view_store)
    total = POSTINGS_KEPT + 1500
    for start in range(0, total, 1000):
        pair.batch(put=range(start, min(total, start + 1000)))
    # Revoke the kept prefix and more: the key falls to BLOCK_LIMIT kept and is refilled.
    pair.batch(drop=range(0, POSTINGS_KEPT - BLOCK_LIMIT + 10))
    assert pair.counted("SELECT MIN(kept) FROM screening_counts") > BLOCK_LIMIT
    assert _ids(pair.found("Bench Front")) == {1205}  # 1010 to 1309 now come first
    # Entries put again go to the end of every bucket, as in memory.
    pair.batch(put=[1205, *range(total - 5, total)])
    assert _ids(pair.found("Bench Front")) == set()
    # Down to fewer than BLOCK_LIMIT entries: no key is capped, every entry is found.
    left = range(total - BLOCK_LIMIT + 100, total)
    pair.batch(drop=[i for i in range(POSTINGS_KEPT - BLOCK_LIMIT + 10, total) if i not in left])
    assert pair.counted("SELECT COUNT(*) FROM screening_counts") == 0
    assert pair.storage.bucket_size(NAME_KEYS, "org\x1fp:fro", -1) == len(left)
    assert _ids(pair.found("Bench Front")) == {2805}  # the first BLOCKED of equal weight
    for i in (left[0], left[-1], left[len(left) // 2 + 1]):
        assert i in _ids(pair.found(f"Bench Front Company {i:07d} Limited"))


def test_drops_in_small_batches_never_leave_a_capped_key_short(view_store: ViewStore) -> None:
    """Revocations one batch at a time, of old and new entries, keep every capped key at more
    than BLOCK_LIMIT kept postings (or uncapped and complete): the stored index answers as the
    in-memory one after each batch."""
    pair = _Pair(view_store)
    total = POSTINGS_KEPT + 400
    for start in range(0, total, 800):
        pair.batch(put=range(start, min(total, start + 800)))
    dropped = 0
    for step in range(6):
        doomed = list(range(dropped, dropped + 300))
        doomed.append(total - 1 - step)  # one of the newest (never kept) too
        pair.batch(drop=doomed)
        dropped += 300
        kept = pair.counted("SELECT COALESCE(MIN(kept), 1001) FROM screening_counts")
        assert kept > BLOCK_LIMIT
        pair.found("Bench Front")
    assert pair.counted("SELECT COUNT(*) FROM screening_counts") == 0  # 800 or so left
    pair.found("Bench Front Company 0002000 Limited")


def test_facts_of_a_replaced_entry_are_its_new_versions(world: World, tmp_path: Path) -> None:
    """ADR 0079: the stored index takes no facts at put; a screen computes them from the
    entry, and a new version drops what was cached of the old one."""
    memory = WatchlistView(b"screening-store-test-secret-0000")
    stored = _open(world, tmp_path)
    try:
        first = _entries()[1]  # Golden Dragon Mining Limited
        second = domain_pb2.WatchlistEntry()
        second.CopyFrom(first)
        second.version = 2
        second.names[0].full_name = "Silver Crane Logistics"
        old, new = _declarations()[1], _declarations()[6]
        for entry in (first, second):
            message_id = str(uuid.uuid4())
            memory.apply(common_pb2.JURISDICTION_HK, entry, message_id, received_at=NOW)
            stored.apply(Jurisdiction.HK, ENTRY, entry, message_id, NOW)
            for declaration in (old, new):  # facts cached after the first version
                expected = _hits(memory.screen(declaration, now=NOW))
                request = partner_pb2.ScreenDeclarationRequest(declaration=declaration)
                assert _hits(stored.screen(request)) == expected
        request = partner_pb2.ScreenDeclarationRequest(declaration=new)
        assert [h[0] for h in _hits(stored.screen(request))] == [first.entry_id]
        reasons = [r.detail for h in stored.screen(request).hits for r in h.reasons]
        assert any("silver crane" in detail.lower() for detail in reasons)
    finally:
        stored.close()


def test_a_key_with_a_nul_is_not_found_on_either_store(world: World, tmp_path: Path) -> None:
    """No stored entry has a NUL in its watchlist or id (entries are validated, PostgreSQL
    text refuses it): a get or a list naming one answers as for any unknown entry on both
    stores (on PostgreSQL the query itself used to fail: an internal error to the caller)."""
    config = load_config(world.write_config(Jurisdiction.CN, tmp_path / "cn"))
    with contextlib.ExitStack() as stack:
        where: Path | Database = tmp_path / "watchlist-view.db"
        if TEST_STORE == "postgresql":
            database = open_database(
                stack.enter_context(postgres_database(postgres_server_url())), Path("unused")
            )
            stack.callback(database.close)
            where = database
        view = Watchlists(_load_signer(config), lambda: NOW, where)
        stack.callback(view.close)
        entry = seed_watchlist_entry(NOW)
        view.apply(Jurisdiction.HK, ENTRY, entry, str(uuid.uuid4()), NOW)
        for watchlist, entry_id in ((entry.watchlist, "a\x00b"), ("w\x00", entry.entry_id)):
            with pytest.raises(NotFoundError):
                view.get(
                    partner_pb2.GetWatchlistEntryRequest(
                        origin=common_pb2.JURISDICTION_HK, watchlist=watchlist, entry_id=entry_id
                    )
                )
        listed = view.list(partner_pb2.ListWatchlistRequest(watchlist="w\x00"))
        assert list(listed.items) == []
        assert len(view.list(partner_pb2.ListWatchlistRequest(watchlist=entry.watchlist)).items)
