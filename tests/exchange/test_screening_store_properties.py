"""Property: the stored screening index (capped name keys, facts on demand; ADR 0079) answers
every query exactly as the in-memory reference fed the same operations, on this run's store
(SQLite, or PostgreSQL with ``CUSTOMS_TEST_STORE=postgresql``).

Random interleavings of puts (new entries, new versions with other names), drops, flushes
mid-transaction, commits, reopenings (a new ``StoredIndex`` on the same tables), a second
replica writing the same tables, and an upgrade from a view file of schema 4 (every posting
kept, no counts, postings naming their entry, keys in a table of their own), with small
limits (module constants set for the test, nothing mocked) so that keys are capped, refilled
and uncapped within a few operations. After each query: the candidates of ``find`` agree,
every name key's stored bucket is a prefix of the reference's of at least
``min(size, BLOCK_LIMIT + 1)`` entries with the exact size, and every indexed entry's facts
are those of its latest version.
"""

from __future__ import annotations

import datetime as dt
import random
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2
from gateway.domain import screening
from gateway.domain.fixtures import seed_declaration, seed_revocation, seed_watchlist_entry
from gateway.domain.screening import NAMES, EntryKey, MemoryIndexStorage, ScreeningIndex
from gateway.domain.watchlist import WatchlistView
from gateway.exchange import watchlists as watchlists_module
from gateway.exchange.watchlists import StoredIndex, ViewStore, Watchlists
from gateway.pki import Jurisdiction
from gateway.server.config import load_config
from gateway.server.node import _load_signer
from gateway.store import Database, ddl, open_database
from gateway.store._schema import SCHEMA_TABLE
from tests.support import TEST_STORE, World, postgres_database, postgres_server_url

NOW = dt.datetime(2026, 12, 2, 12, 0, tzinfo=dt.UTC)
WORDS = ("Bench", "Front", "Golden", "Dragon", "金龍礦業")
COUNTRIES = ("HK", "CN", "MO")
BLOCK_LIMIT, POSTINGS_KEPT, BLOCKED, CAPPING_FROM = 3, 5, 2, 2
BENCH_FRONT = ("Bench", "Front")
ENTRIES = 10  # entries 0..9: more than POSTINGS_KEPT may share a key
ENTRY_KIND = common_pb2.MESSAGE_KIND_WATCHLIST_ENTRY
REVOCATION_KIND = common_pb2.MESSAGE_KIND_WATCHLIST_REVOCATION
_VIEW_TABLES = ("screening_postings", "view_entries", "screening_counts", "view_meta")
_BACK_TO_SCHEMA_4 = (  # the screening tables as a node of view schema 4 left them
    "CREATE TABLE postings_4 (tbl INTEGER NOT NULL, k TEXT NOT NULL, n INTEGER NOT NULL, "
    "origin INTEGER NOT NULL, watchlist TEXT NOT NULL, entry_id TEXT NOT NULL, "
    "value TEXT NOT NULL, PRIMARY KEY (tbl, k, n)) WITHOUT ROWID",
    "INSERT INTO postings_4 (tbl, k, n, origin, watchlist, entry_id, value) "
    "SELECT p.tbl, p.k, p.n, e.origin, e.watchlist, e.entry_id, p.value "
    "FROM screening_postings AS p JOIN view_entries AS e ON e.screening_n = p.n",
    "CREATE TABLE screening_keys (origin INTEGER NOT NULL, watchlist TEXT NOT NULL, "
    "entry_id TEXT NOT NULL, n INTEGER NOT NULL, posted TEXT NOT NULL, "
    "PRIMARY KEY (origin, watchlist, entry_id)) WITHOUT ROWID",
    "INSERT INTO screening_keys (origin, watchlist, entry_id, n, posted) "
    "SELECT origin, watchlist, entry_id, screening_n, screening_posted FROM view_entries "
    "WHERE screening_n IS NOT NULL",
    "DROP INDEX view_entries_screening",
    "ALTER TABLE view_entries DROP COLUMN screening_n",
    "ALTER TABLE view_entries DROP COLUMN screening_posted",
    "DROP TABLE screening_postings",
    "DROP TABLE screening_counts",
    "ALTER TABLE postings_4 RENAME TO screening_postings",
)


def _entry(i: int, words: tuple[str, ...], unique: bool, variant: int) -> domain_pb2.WatchlistEntry:
    entry = seed_watchlist_entry(NOW)
    entry.entry_id = f"e{i}"
    entry.version = variant
    del entry.names[:]
    entry.names.add(full_name=" ".join(words) + (f" Company {i:03d}" if unique else ""))
    entry.identifiers[0].value = f"{12345670 + i:08d}"
    entry.countries[:] = [COUNTRIES[variant % len(COUNTRIES)]]
    entry.flagged_transit_countries[:] = ["VN"] if variant % 2 else ["TH"]
    return entry


names_ = st.tuples(
    st.lists(st.sampled_from(WORDS), min_size=1, max_size=3, unique=True).map(tuple),
    st.booleans(),
)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("put"), st.integers(0, ENTRIES - 1), names_),
        st.tuples(st.just("put_many"), st.lists(st.integers(0, ENTRIES - 1), max_size=8), names_),
        st.tuples(st.just("fill"), st.integers(0, ENTRIES // 2), names_),
        st.tuples(st.just("fill"), st.integers(0, ENTRIES // 2), names_),
        st.tuples(st.just("drop"), st.integers(0, ENTRIES - 1)),
        st.tuples(st.just("drop_many"), st.lists(st.integers(0, ENTRIES - 1), max_size=8)),
        st.tuples(st.just("commit")),
        st.tuples(st.just("reopen")),
        st.tuples(st.just("replica")),
        st.tuples(st.just("query_words"), names_),
        st.tuples(st.just("query_entry"), st.integers(0, ENTRIES - 1)),
    ),
    min_size=1,
    max_size=40,
)


@dataclass
class _Replica:
    store: ViewStore
    storage: StoredIndex | None = None
    index: ScreeningIndex | None = None
    base: int = 0  # the stored version this replica's index was loaded at


@dataclass
class _Run:
    """One example: the reference and the stored index fed the same operations."""

    database: Database
    entries: dict[EntryKey, domain_pb2.WatchlistEntry] = field(default_factory=dict)
    memory: MemoryIndexStorage = field(default_factory=MemoryIndexStorage)
    replicas: list[_Replica] = field(default_factory=list)
    current: int = 0
    version: int = 0

    def __post_init__(self) -> None:
        self.reference = ScreeningIndex(self.memory)
        self.replicas = [_Replica(ViewStore(self.database)), _Replica(ViewStore(self.database))]
        self._load(self.replicas[0])

    @property
    def replica(self) -> _Replica:
        return self.replicas[self.current]

    def _load(self, replica: _Replica) -> None:
        """A new stored index on the replica's tables (as ``Watchlists._load``)."""
        replica.store.end()
        replica.storage = StoredIndex(replica.store, self.entries.get)
        replica.index = ScreeningIndex(replica.storage)
        replica.base = replica.store.stored_version()

    def _stored(self) -> tuple[ViewStore, StoredIndex, ScreeningIndex]:
        replica = self.replica
        assert replica.storage is not None
        assert replica.index is not None
        replica.store.begin(replica.base if replica.store.shared else None)
        return replica.store, replica.storage, replica.index

    def put(self, i: int, words: tuple[str, ...], unique: bool) -> None:
        key = (common_pb2.JURISDICTION_HK, "w", f"e{i}")
        old = self.entries.get(key)
        entry = _entry(i, words, unique, 1 if old is None else old.version + 1)
        entry.watchlist = "w"
        self.entries[key] = entry
        _, _, index = self._stored()
        for each in (self.reference, index):
            each.put(key, entry, replacing=old is not None)

    def drop(self, i: int) -> None:
        key = (common_pb2.JURISDICTION_HK, "w", f"e{i}")
        if self.entries.pop(key, None) is None:
            return
        _, _, index = self._stored()
        for each in (self.reference, index):
            each.drop(key)

    def commit(self) -> None:
        store, storage, _ = self._stored()
        self.version += 1
        store.save([], self.version, NOW, self.replica.base if store.shared else None, storage)
        self.replica.base = self.version

    def reopen(self) -> None:
        self.commit()
        self._load(self.replica)

    def switch(self) -> None:
        """The other replica writes next: reloaded first if the stored view moved since it
        loaded (as ``Watchlists._changing``)."""
        self.commit()
        self.current = 1 - self.current
        replica = self.replica
        if replica.storage is None or replica.store.stored_version() != replica.base:
            self._load(replica)

    def upgrade(self) -> None:
        """Commits, then makes the tables a view file of schema 4 (no counts, postings naming
        their entry, keys in a table of their own) and opens them again: the migrations to 5, 6
        and 7 run."""
        self.commit()
        for replica in self.replicas:
            replica.store.close()
        conn = self.database.dedicated()
        conn.execute("BEGIN")
        for statement in _BACK_TO_SCHEMA_4:
            conn.execute(ddl(conn, statement))
        conn.execute(
            f"UPDATE {SCHEMA_TABLE} SET version = 4 WHERE name = ?",
            (watchlists_module.VIEW_SCHEMA.name,),
        )
        conn.execute("COMMIT")
        conn.close()
        self.replicas = [_Replica(ViewStore(self.database)), _Replica(ViewStore(self.database))]
        self.current = 0
        self._load(self.replicas[0])

    def check(self, name: str) -> None:
        """The two indexes agree on ``name``'s candidates, on every name key's bucket and on
        every entry's facts."""
        _, storage, index = self._stored()
        declaration = seed_declaration()
        del declaration.parties[0].names[:]
        declaration.parties[0].names.add(full_name=name)
        del declaration.parties[0].identifiers[:]
        answers = [
            {
                key: (c.score, c.tier, [(r.kind, r.entry_field, r.similarity) for r in c.reasons])
                for key, c in each.find(declaration).items()
            }
            for each in (self.reference, index)
        ]
        assert answers[1] == answers[0], name
        assert storage.count() == self.memory.count()
        for index_key, bucket in list(self.memory._tables[NAMES].items()):
            full = list(bucket)
            kept = [key for key, _ in storage.bucket(NAMES, index_key)]
            assert storage.bucket_size(NAMES, index_key, -1) == len(full), index_key
            assert storage.bucket_size(NAMES, index_key, BLOCK_LIMIT) >= min(
                len(full), BLOCK_LIMIT + 1
            )
            assert kept == full[: len(kept)], index_key
            assert len(kept) >= min(len(full), BLOCK_LIMIT + 1), index_key
        for key in self.entries:
            assert storage.facts(key) == self.memory.facts(key), key

    def close(self) -> None:
        for replica in self.replicas:
            replica.store.end()
            replica.store.close()


@pytest.fixture
def small_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Limits small enough that ten entries cap, refill and uncap keys."""
    monkeypatch.setattr(screening, "BLOCK_LIMIT", BLOCK_LIMIT)
    monkeypatch.setattr(screening, "BLOCKED", BLOCKED)
    monkeypatch.setattr(watchlists_module, "BLOCK_LIMIT", BLOCK_LIMIT)
    monkeypatch.setattr(watchlists_module, "POSTINGS_KEPT", POSTINGS_KEPT)
    monkeypatch.setattr(watchlists_module, "CAPPING_FROM", CAPPING_FROM)
    monkeypatch.setattr(watchlists_module, "FACTS_CACHE", 3)


@pytest.fixture
def fresh_database() -> Iterator[Callable[[], Database]]:
    """A factory of empty view databases for each example: a new SQLite file, or the tables of
    one PostgreSQL database emptied (``CUSTOMS_TEST_STORE=postgresql``)."""
    with ExitStack() as stack:
        if TEST_STORE != "postgresql":
            where = Path(stack.enter_context(tempfile.TemporaryDirectory()))
            made = iter(range(1_000_000))

            def sqlite() -> Database:
                return Database("sqlite", path=where / f"view-{next(made)}.db")

            yield sqlite
            return
        url = stack.enter_context(postgres_database(postgres_server_url()))
        database = open_database(url, Path("unused"))
        stack.callback(database.close)
        ViewStore(database).close()  # the tables, once

        def postgresql() -> Database:
            conn = database.dedicated()
            conn.execute("BEGIN")
            for table in _VIEW_TABLES:
                conn.execute(f"DELETE FROM {table}")
            conn.execute("COMMIT")
            conn.close()
            return database

        yield postgresql


def _run(run: _Run, ops: list[tuple[object, ...]]) -> None:
    for op in ops:
        match op:
            case ("put", int(i), (tuple(words), bool(unique))):
                run.put(i, words, unique)
            case ("put_many", list(many), (tuple(words), bool(unique))):
                for i in many:
                    run.put(i, words, unique or i % 3 == 0)
            case ("fill", int(start), (tuple(words), bool(unique))):
                for i in range(start, ENTRIES):  # most entries share these words
                    run.put(i, words, unique or i % 2 == 0)
            case ("drop", int(i)):
                run.drop(i)
            case ("drop_many", list(many)):
                for i in many:
                    run.drop(i)
            case ("commit",):
                run.commit()
            case ("reopen",):
                run.reopen()
            case ("replica",):
                run.switch()
            case ("query_words", (tuple(words), bool(unique))):
                run.check(" ".join(words) + (" Company" if unique else ""))
            case ("query_entry", int(i)):
                entry = run.entries.get((common_pb2.JURISDICTION_HK, "w", f"e{i}"))
                run.check(entry.names[0].full_name if entry is not None else WORDS[i % 5])
            case _:  # pragma: no cover
                raise AssertionError(op)
    run.commit()
    run.reopen()
    run.check("Bench Front")


@settings(
    max_examples=40,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(ops=operations)
# A key capped, then its whole kept prefix revoked in one flush.
@example(ops=[("fill", 0, (BENCH_FRONT, True)), ("commit",), ("drop_many", [0, 1, 2, 3, 4, 5, 6])])
# The last kept entry of capped keys revoked (the next ones were never posted).
@example(
    ops=[
        ("fill", 0, (BENCH_FRONT, True)),
        ("commit",),
        ("drop", POSTINGS_KEPT - 1),
        ("query_words", (BENCH_FRONT, False)),
    ]
)
# Facts computed for a screen, then a new version of the entry: the new version's facts.
@example(
    ops=[
        ("fill", 0, (BENCH_FRONT, True)),
        ("query_entry", 2),  # the last entries' facts stay in the cache (3)
        ("put", ENTRIES - 1, (("Golden", "Dragon"), False)),
        ("query_words", (("Golden", "Dragon"), False)),
    ]
)
# An entry dropped (erased) whose facts were cached, then indexed again under other names.
@example(
    ops=[
        ("fill", 0, (BENCH_FRONT, True)),
        ("query_entry", 2),
        ("drop", ENTRIES - 1),
        ("put", ENTRIES - 1, (("Golden", "Dragon"), False)),
        ("query_words", (("Golden", "Dragon"), False)),
    ]
)
# New versions whose names no longer carry the capped keys, then carry them again.
@example(
    ops=[
        ("fill", 0, (BENCH_FRONT, True)),
        ("commit",),
        ("put_many", [0, 1, 9], (("Golden",), True)),
        ("query_words", (BENCH_FRONT, False)),
        ("put_many", [1, 0], (BENCH_FRONT, False)),
    ]
)
# Entries put and dropped within one flush, beside a capped key.
@example(
    ops=[
        ("fill", 0, (BENCH_FRONT, True)),
        ("drop_many", [9, 8]),
        ("fill", 7, (BENCH_FRONT, False)),
        ("drop_many", [8, 0]),
        ("query_words", (BENCH_FRONT, False)),
    ]
)
# Two replicas saving alternately: each reads the capped keys the other wrote.
@example(
    ops=[
        ("fill", 0, (BENCH_FRONT, True)),
        ("replica",),
        ("drop_many", [0, 1, 2]),
        ("replica",),
        ("query_words", (BENCH_FRONT, False)),
        ("drop", 3),
        ("replica",),
        ("fill", 0, (BENCH_FRONT, True)),
        ("replica",),
        ("query_entry", 4),
    ]
)
def test_the_stored_index_answers_as_the_memory_index(
    ops: list[tuple[object, ...]], small_limits: None, fresh_database: Callable[[], Database]
) -> None:
    """Any interleaving of puts, drops, flushes, commits, reopenings and replicas: the stored
    index agrees with the in-memory one at every query (``_Run.check``)."""
    run = _Run(fresh_database())
    try:
        _run(run, ops)
    finally:
        run.close()


@settings(
    max_examples=20,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(before=operations, after=operations)
def test_an_upgraded_view_file_answers_as_the_memory_index(
    before: list[tuple[object, ...]],
    after: list[tuple[object, ...]],
    small_limits: None,
    fresh_database: Callable[[], Database],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Operations on a view of schema 4 (no key capped, however many entries carry it), the
    upgrades to 5, 6 and 7 (rows copied into the entries' rows, nothing built again), then
    more operations: keys already past the cap are capped from then on."""
    monkeypatch.setattr(watchlists_module, "CAPPING_FROM", 10**9)
    run = _Run(fresh_database())
    try:
        _run(run, before)
        run.upgrade()
        monkeypatch.setattr(watchlists_module, "CAPPING_FROM", CAPPING_FROM)
        _run(run, after)
    finally:
        run.close()


# --- through the node's view: replicas, restarts, revocations and erasures --------------------


def _declaration(name: str) -> domain_pb2.Declaration:
    declaration = seed_declaration()
    del declaration.parties[0].names[:]
    declaration.parties[0].names.add(full_name=name)
    del declaration.parties[0].identifiers[:]
    return declaration


def _hits(response: partner_pb2.ScreenDeclarationResponse) -> list[tuple[object, ...]]:
    return [
        (h.entry_id, h.version, h.score, h.tier, [(r.kind, r.entry_field) for r in h.reasons])
        for h in response.hits
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_views_screen_as_the_memory_view_across_replicas_and_erasures(
    seed: int, world: World, tmp_path: Path, small_limits: None
) -> None:
    """Random batches of new entries, new versions under other names, revocations and
    erasures at the end of retention, told to one of two replicas sharing a PostgreSQL
    database (on SQLite: one view, closed and opened again between turns); every screen of
    either answers as one in-memory view told the same, in the same order."""
    config = load_config(world.write_config(Jurisdiction.CN, tmp_path / "cn"))
    signer = _load_signer(config)
    rng = random.Random(seed)
    memory = WatchlistView(b"screening-store-test-secret-0000")
    with ExitStack() as stack:
        if TEST_STORE == "postgresql":
            url = stack.enter_context(postgres_database(postgres_server_url()))
            database = open_database(url, Path("unused"))
            stack.callback(database.close)
            where: Path | Database = database
        else:
            where = tmp_path / "watchlist-view.db"
        views = [
            Watchlists(signer, lambda: NOW, where)
            for _ in range(2 if TEST_STORE == "postgresql" else 1)
        ]

        def close() -> None:
            for view in views:
                view.close()

        stack.callback(close)
        latest: dict[str, tuple[domain_pb2.WatchlistEntry, str]] = {}  # entry id: (entry, message)
        revoked: set[str] = set()
        for _ in range(40):
            turn = rng.randrange(len(views))
            if len(views) == 1 and rng.random() < 0.2:
                views[0].close()
                views[0] = Watchlists(signer, lambda: NOW, where)
            view = views[turn]
            action = rng.random()
            if action < 0.45:  # a batch of entries, new or new versions
                told = []
                for i in rng.sample(range(ENTRIES), rng.randint(1, ENTRIES)):
                    entry_id = f"e{i}"
                    if entry_id in revoked:
                        continue
                    old = latest.get(entry_id)
                    words = tuple(rng.sample(WORDS, rng.randint(1, 3)))
                    version = 1 if old is None else old[0].version + 1
                    entry = _entry(i, words, rng.random() < 0.5, version)
                    entry.watchlist = "w"
                    message_id = str(uuid.uuid4())
                    latest[entry_id] = (entry, message_id)
                    memory.apply(common_pb2.JURISDICTION_HK, entry, message_id, received_at=NOW)
                    told.append((Jurisdiction.HK, ENTRY_KIND, entry, message_id, NOW))
                view.apply_many(told)
            elif action < 0.6 and latest:  # a revocation
                entry_id = rng.choice(sorted(latest))
                revocation = seed_revocation(latest[entry_id][0].version)
                revocation.watchlist, revocation.entry_id = "w", entry_id
                message_id = str(uuid.uuid4())
                memory.apply(common_pb2.JURISDICTION_HK, revocation, message_id, received_at=NOW)
                view.apply(Jurisdiction.HK, REVOCATION_KIND, revocation, message_id, NOW)
                revoked.add(entry_id)
            elif action < 0.75 and latest:  # the end of retention of an entry's payload
                entry_id = rng.choice(sorted(latest))
                message_id = latest.pop(entry_id)[1]
                memory.erase(message_id)
                view.erased(ENTRY_KIND, message_id)
                revoked.discard(entry_id)
            else:  # screens: words most entries share, and one entry's name
                names_screened = [" ".join(rng.sample(WORDS, rng.randint(1, 3)))]
                if latest:
                    names_screened.append(latest[rng.choice(sorted(latest))][0].names[0].full_name)
                for name in names_screened:
                    declaration = _declaration(name)
                    expected = _hits(memory.screen(declaration, now=NOW))
                    request = partner_pb2.ScreenDeclarationRequest(declaration=declaration)
                    assert _hits(view.screen(request)) == expected, name
        for view in views:
            for name in ("Bench Front", "Golden Dragon Pearl"):
                declaration = _declaration(name)
                request = partner_pb2.ScreenDeclarationRequest(declaration=declaration)
                assert _hits(view.screen(request)) == _hits(memory.screen(declaration, now=NOW))
