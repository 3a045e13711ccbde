"""The exchange's tables are versioned: an older store is upgraded in place at open; and a
read of what could never be stored answers without asking the store.

On SQLite, and on PostgreSQL too in the suite's second pass (``CUSTOMS_TEST_STORE=postgresql``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.exchange import _store as store
from gateway.store import (
    Connection,
    Schema,
    ensure_schema,
    integrity_errors,
    open_database,
    schema_version,
)
from tests.support import TEST_STORE, postgres_database, postgres_server_url


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[Connection]:
    """A connection to an empty store of this run's kind."""
    with contextlib.ExitStack() as stack:
        if TEST_STORE == "postgresql":
            db = open_database(
                stack.enter_context(postgres_database(postgres_server_url())), Path()
            )
        else:
            db = open_database(None, tmp_path / "ledger.db")
        stack.callback(db.close)
        conn = db.dedicated()
        stack.callback(conn.close)
        yield conn


def _at_version(conn: Connection, version: int) -> None:
    steps = {n: store.EXCHANGE_SCHEMA.steps[n] for n in range(1, version + 1)}
    conn.execute("BEGIN")
    ensure_schema(conn, Schema("exchange", steps))
    conn.execute("COMMIT")
    assert schema_version(conn, "exchange") == version


def _upgrade(conn: Connection) -> None:
    conn.execute("BEGIN")
    store.create_schema(conn)
    conn.execute("COMMIT")
    assert schema_version(conn, "exchange") == store.EXCHANGE_SCHEMA.version == 3


def _indexes(conn: Connection) -> set[str]:
    if conn.dialect == "sqlite":
        sql = "SELECT name FROM sqlite_master WHERE type = 'index'"
    else:
        sql = "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
    return {str(row[0]) for row in conn.execute(sql)}


def _message(conn: Connection, message_id: str, direction: str, origin: str, subject: str) -> None:
    conn.execute(
        "INSERT INTO exchange_messages (message_id, direction, origin, kind, subject, version, "
        "digest, ledger_index, created_ms) VALUES (?, ?, ?, 1, ?, 1, ?, 0, 0)",
        (message_id, direction, origin, subject, b"\x00" * 32),
    )


def _queued(conn: Connection, message_id: str, *recipients: str) -> None:
    for recipient in recipients:
        conn.execute(
            "INSERT INTO exchange_outbox (message_id, recipient, state) VALUES (?, ?, 1)",
            (message_id, recipient),
        )


def _version(conn: Connection, origin: str, subject: str) -> None:
    conn.execute(
        "INSERT INTO exchange_versions (origin, subject, version, final) VALUES (?, ?, 2, 0)",
        (origin, subject),
    )


def test_version_2_keeps_who_was_sent_each_subject_in_its_version_row(conn: Connection) -> None:
    """Version 3 fills each subject's recipients from the outbox rows of its messages (every
    version's: CN and MO, though the second version went to CN only), leaves a subject of
    another origin without any (even one whose message id is also one of this node's), and
    drops the messages' index by subject, which nothing reads any more (ADR 0085)."""
    _at_version(conn, 2)
    assert "exchange_messages_subject" in _indexes(conn)
    conn.execute("BEGIN")
    _message(conn, "m1", "out", "HK", "watchlist:a/1")
    _queued(conn, "m1", "CN", "MO")
    _message(conn, "m2", "out", "HK", "watchlist:a/1")
    _queued(conn, "m2", "CN")
    _version(conn, "HK", "watchlist:a/1")
    _message(conn, "m3", "out", "HK", "watchlist:a/2")
    _queued(conn, "m3", "MO")
    _version(conn, "HK", "watchlist:a/2")
    _message(conn, "m3", "in", "CN", "watchlist:b/1")  # a peer's message, the same id
    _version(conn, "CN", "watchlist:b/1")
    conn.execute("COMMIT")

    _upgrade(conn)

    assert "exchange_messages_subject" not in _indexes(conn)
    assert store.recipients_of(conn, "HK", "watchlist:a/1") == {"CN", "MO"}
    assert store.recipients_of(conn, "HK", "watchlist:a/2") == {"MO"}
    assert store.recipients_of(conn, "CN", "watchlist:b/1") == set()
    assert store.recipients_of(conn, "HK", "watchlist:never/sent") == set()
    assert store.last_version(conn, "HK", "watchlist:a/1") == (2, False)
    # a bulk call reads the same recipients with the versions, in one statement
    rows = store.last_versions(conn, "HK", ["watchlist:a/1", "watchlist:a/2", "watchlist:x/9"])
    assert rows == {
        "watchlist:a/1": store.StoredVersion(2, False, frozenset({"CN", "MO"})),
        "watchlist:a/2": store.StoredVersion(2, False, frozenset({"MO"})),
    }
    assert store.last_versions(conn, "CN", ["watchlist:b/1"])["watchlist:b/1"].recipients == set()


def test_a_new_store_is_made_at_the_latest_version(conn: Connection) -> None:
    _upgrade(conn)
    assert "exchange_messages_subject" not in _indexes(conn)
    conn.execute("BEGIN")
    store.advance_version(conn, "HK", "watchlist:a/1", None, 1, False, ["MO", "CN"])
    conn.execute("COMMIT")
    assert store.recipients_of(conn, "HK", "watchlist:a/1") == {"CN", "MO"}
    conn.execute("BEGIN")
    store.advance_versions(
        conn,
        store.advance_rows(
            "HK",
            [
                ("watchlist:a/1", (1, False), 2, False, ["CN", "MO", "HK"]),
                ("watchlist:a/1", (2, False), 3, True, ["CN", "MO", "HK"]),  # as the first left it
                ("watchlist:a/2", None, 1, False, ["CN"]),
            ],
        ),
    )
    conn.execute("COMMIT")
    assert store.recipients_of(conn, "HK", "watchlist:a/1") == {"CN", "HK", "MO"}
    assert store.last_version(conn, "HK", "watchlist:a/1") == (3, True)
    assert store.last_version(conn, "HK", "watchlist:a/2") == (1, False)


@pytest.mark.parametrize(
    "known",
    [None, (1, False), (2, True), (3, False)],
    ids=["absent", "older", "final", "newer"],
)
def test_a_version_written_against_another_state_than_stored_is_refused(
    conn: Connection, known: tuple[int, bool] | None
) -> None:
    """The bulk commit's check by write (ADR 0085): a row whose known state is not the stored
    one, (2, False) here, fails the whole statement and nothing of it is written."""
    _upgrade(conn)
    conn.execute("BEGIN")
    store.advance_version(conn, "HK", "watchlist:a/1", None, 2, False, ["CN"])
    conn.execute("COMMIT")
    conn.execute("BEGIN")
    with pytest.raises(integrity_errors()):
        store.advance_versions(
            conn,
            store.advance_rows(
                "HK",
                [
                    ("watchlist:a/2", None, 1, False, ["CN"]),
                    ("watchlist:a/1", known, 4, False, ["CN"]),
                ],
            ),
        )
    conn.execute("ROLLBACK")
    assert store.last_version(conn, "HK", "watchlist:a/1") == (2, False)
    assert store.last_version(conn, "HK", "watchlist:a/2") is None


@pytest.mark.parametrize("message_id", ["\x00", "a\x00b", "not-a-uuid", ""])
def test_a_message_id_that_cannot_be_stored_is_absent(conn: Connection, message_id: str) -> None:
    """A partner's GetDeliveryStatus of an id with a NUL byte was INTERNAL on PostgreSQL (the
    fail-closed fuzz test found it): such an id is answered as absent, as on SQLite."""
    _upgrade(conn)
    assert store.MessageRow.get(conn, "HK", message_id) is None


def test_reads_of_values_that_cannot_be_stored_answer_absent(conn: Connection) -> None:
    """The fuzz test's other finds on PostgreSQL (an amendment whose message id or notice id
    holds a NUL byte was INTERNAL): every read a submit makes before validating answers such a
    value as absent, next to the stored ones it is asked with."""
    _upgrade(conn)
    good = "00000000-0000-4000-8000-000000000001"
    conn.execute("BEGIN")
    _message(conn, good, "out", "HK", "notice:n")
    store.advance_version(conn, "HK", "notice:n", None, 1, False, ["CN"])
    conn.execute("COMMIT")
    assert store.message_and_version(conn, "HK", "\x00", "notice:n") == (None, None)
    row, version = store.message_and_version(conn, "HK", good, "notice:\x00")
    assert (row is not None and row.message_id, version) == (good, None)
    assert store.message_and_version(conn, "HK", good, "notice:n")[1] == (1, False)
    assert list(store.MessageRow.get_many(conn, "HK", ["\x00", good])) == [good]
    assert store.MessageRow.get_many(conn, "HK", ["a\x00"]) == {}
    found = store.last_versions(conn, "HK", ["notice:\x00", "notice:n"])
    assert list(found) == ["notice:n"]
    assert found["notice:n"].known == (1, False)
