"""The merged view: each state seen by snapshot and delta, paging, tokens, idempotency."""

from __future__ import annotations

import datetime as dt

import pytest

from customs.gateway.v1 import common_pb2 as c
from customs.gateway.v1 import domain_pb2 as d
from customs.gateway.v1 import partner_pb2 as p
from gateway.domain import fixtures
from gateway.domain.validate import ValidationError
from gateway.domain.watchlist import WatchlistView

T0 = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
HK = c.JURISDICTION_HK
WL = fixtures.SEED_WATCHLIST
S = p.EntryState


def view() -> WatchlistView:
    return WatchlistView(b"node-secret-for-page-tokens-0001")


def entry_at(
    now: dt.datetime, version: int, *, starts_in: dt.timedelta | None = None
) -> d.WatchlistEntry:
    entry = fixtures.seed_watchlist_entry(now, version=version)
    if starts_in is not None:
        entry.validity.valid_from.CopyFrom(fixtures.timestamp(now + starts_in))
    return entry


def states(response: p.ListWatchlistResponse) -> list[tuple[str, int, int]]:
    return [(i.entry.entry_id[:8], i.entry.version, i.state) for i in response.items]


def test_entry_seen_in_every_state_by_snapshot_and_delta() -> None:
    v = view()
    # Published, not yet valid (starts in an hour).
    assert v.apply(HK, entry_at(T0, 1, starts_in=dt.timedelta(hours=1)), "m1", received_at=T0)
    snap = v.snapshot(WL, now=T0)
    assert states(snap) == [("3b0f6a52", 1, S.ENTRY_STATE_NOT_YET_VALID)]
    assert snap.view_version == 1
    # An hour later it enters into force: a change of its own (version 2), reported once.
    t1 = T0 + dt.timedelta(hours=1, seconds=1)
    delta = v.delta(WL, 1, now=t1)
    assert states(delta) == [("3b0f6a52", 1, S.ENTRY_STATE_ACTIVE)]
    assert delta.view_version == 2
    assert states(v.delta(WL, 2, now=t1)) == []
    # Amended: version 2 replaces version 1, seen by the delta since 2.
    assert v.apply(HK, entry_at(T0, 2), "m2", received_at=t1)
    delta = v.delta(WL, 2, now=t1)
    assert states(delta) == [("3b0f6a52", 2, S.ENTRY_STATE_ACTIVE)]
    assert delta.items[0].message_id == "m2"
    assert delta.view_version == 3
    # Expired after valid_until (180 days): a change (version 4), reported once.
    later = T0 + dt.timedelta(days=181)
    delta = v.delta(WL, 3, now=later)
    assert states(delta) == [("3b0f6a52", 2, S.ENTRY_STATE_EXPIRED)]
    assert delta.view_version == 4
    assert states(v.delta(WL, 4, now=later + dt.timedelta(days=1))) == []
    assert states(v.snapshot(WL, now=later)) == [("3b0f6a52", 2, S.ENTRY_STATE_EXPIRED)]
    # Revoked: final.
    assert v.apply(HK, fixtures.seed_revocation(3), "m3", received_at=later)
    assert states(v.delta(WL, 4, now=later)) == [("3b0f6a52", 2, S.ENTRY_STATE_REVOKED)]
    assert states(v.snapshot(WL, now=later)) == [("3b0f6a52", 2, S.ENTRY_STATE_REVOKED)]
    # Nothing changed after 5: the delta is empty.
    assert states(v.delta(WL, 5, now=later + dt.timedelta(minutes=1))) == []
    assert v.last_version(HK, WL, fixtures.SEED_ENTRY_ID) == 3


def test_stale_and_repeated_versions_change_nothing() -> None:
    v = view()
    assert v.apply(HK, entry_at(T0, 2), "m2", received_at=T0)
    assert not v.apply(HK, entry_at(T0, 2), "m2", received_at=T0)
    assert not v.apply(HK, entry_at(T0, 1), "m1", received_at=T0)
    assert v.version == 1
    item = v.get(HK, WL, fixtures.SEED_ENTRY_ID, now=T0)
    assert item is not None
    assert (item.entry.version, item.message_id) == (2, "m2")


@pytest.mark.parametrize(
    "order",
    [
        pytest.param(["e1", "e2", "r3"], id="in-order"),
        pytest.param(["r3", "e1", "e2"], id="revocation-first"),
        pytest.param(["e2", "r3", "e1"], id="amendment-first"),
    ],
)
def test_final_state_does_not_depend_on_arrival_order(order: list[str]) -> None:
    payloads = {
        "e1": entry_at(T0, 1),
        "e2": entry_at(T0, 2),
        "r3": fixtures.seed_revocation(3),
    }
    v = view()
    for name in order:
        v.apply(HK, payloads[name], name, received_at=T0)
    item = v.get(HK, WL, fixtures.SEED_ENTRY_ID, now=T0)
    assert item is not None
    assert (item.entry.version, item.state) == (2, S.ENTRY_STATE_REVOKED)


def test_same_entry_id_from_another_origin_is_another_entry() -> None:
    v = view()
    v.apply(HK, entry_at(T0, 1), "hk", received_at=T0)
    v.apply(c.JURISDICTION_MO, entry_at(T0, 1), "mo", received_at=T0)
    assert [i.origin for i in v.snapshot(WL, now=T0).items] == [HK, c.JURISDICTION_MO]


def _many(v: WatchlistView, n: int) -> None:
    base = fixtures.seed_watchlist_entry(T0)
    for i in range(n):
        entry = d.WatchlistEntry()
        entry.CopyFrom(base)
        entry.entry_id = f"00000000-0000-4000-8000-{i:012d}"
        v.apply(HK, entry, f"m{i}", received_at=T0)


def test_snapshot_pages_cover_everything_once() -> None:
    v = view()
    _many(v, 25)
    seen: list[str] = []
    token = ""
    pages = 0
    while True:
        page = v.snapshot(WL, now=T0, page_size=10, page_token=token)
        seen += [i.entry.entry_id for i in page.items]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 25


def test_change_while_paging_is_left_to_the_next_delta() -> None:
    v = view()
    _many(v, 4)
    first = v.snapshot(WL, now=T0, page_size=2)
    changed = fixtures.seed_watchlist_entry(T0, version=2)
    changed.entry_id = "00000000-0000-4000-8000-000000000003"
    v.apply(HK, changed, "m-changed", received_at=T0)
    second = v.snapshot(WL, now=T0, page_size=2, page_token=first.next_page_token)
    assert [i.entry.entry_id[-1] for i in [*first.items, *second.items]] == ["0", "1", "2"]
    assert second.view_version == first.view_version == 4
    delta = v.delta(WL, 4, now=T0)
    assert [(i.entry.entry_id[-1], i.entry.version) for i in delta.items] == [("3", 2)]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        pytest.param({"watchlist": "other-list"}, "issued for another query", id="other-watchlist"),
        pytest.param({"since_version": 1}, "issued for another query", id="other-since-version"),
        pytest.param({"tamper": True}, "not issued by this node, or altered", id="altered"),
        pytest.param({"other_node": True}, "not issued by this node", id="other-node"),
        pytest.param({"garbage": True}, "malformed", id="malformed"),
    ],
)
def test_page_token_misuse_is_refused(query: dict[str, object], message: str) -> None:
    v = view()
    _many(v, 5)
    token = v.snapshot(WL, now=T0, page_size=2).next_page_token
    assert token
    request = p.ListWatchlistRequest(watchlist=WL, page_size=2, page_token=token)
    if "watchlist" in query:
        request.watchlist = str(query["watchlist"])
    if "since_version" in query:
        request.since_version = int(str(query["since_version"]))
    if query.get("tamper"):
        body, mac = token.split(".")
        request.page_token = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1] + "." + mac
    if query.get("garbage"):
        request.page_token = "not-a-token"
    target = WatchlistView(b"another-node-secret-000000000000") if query.get("other_node") else v
    if query.get("other_node"):
        _many(target, 5)
    with pytest.raises(ValidationError, match=message) as caught:
        target.list_watchlist(request, now=T0)
    assert caught.value.status == "INVALID_ARGUMENT"
    assert [x.field for x in caught.value.violations] == ["page_token"]


@pytest.mark.parametrize(
    ("request_", "fields"),
    [
        pytest.param(p.ListWatchlistRequest(), ["watchlist"], id="no-watchlist"),
        pytest.param(
            p.ListWatchlistRequest(watchlist=WL, page_size=1001), ["page_size"], id="page-too-big"
        ),
        pytest.param(
            p.ListWatchlistRequest(watchlist=WL, since_version=9),
            ["since_version"],
            id="since-ahead",
        ),
    ],
)
def test_bad_list_requests(request_: p.ListWatchlistRequest, fields: list[str]) -> None:
    v = view()
    _many(v, 1)
    with pytest.raises(ValidationError, match="invalid field") as caught:
        v.list_watchlist(request_, now=T0)
    assert [x.field for x in caught.value.violations] == fields


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes, got 3"):
        WatchlistView(b"abc")


# --- issue 16: the view partners sync from ------------------------------------------------------


def _restored(v: WatchlistView) -> WatchlistView:
    """What a restart gives: a new view loaded from what the old one reported as changed."""
    stored = {(r.origin, r.watchlist, r.entry_id): r for r in v.take_changes()}
    again = view()
    again.restore(list(stored.values()), version=v.version, advanced_to=v.advanced_to)
    return again


def test_erasure_removes_the_entry_at_once_and_is_a_delta_item() -> None:
    v = view()
    v.apply(HK, entry_at(T0, 1), "m1", received_at=T0)
    assert v.version == 1
    assert v.screen(fixtures.seed_declaration(), now=T0).hits  # it matched before
    assert v.erase("m1")
    assert v.version == 2
    assert states(v.snapshot(WL, now=T0)) == []  # gone from the view at once
    assert v.get(HK, WL, fixtures.SEED_ENTRY_ID, now=T0) is None
    (item,) = v.delta(WL, 1, now=T0).items
    assert item.state == S.ENTRY_STATE_ERASED
    assert item.entry.version == 1
    assert not item.entry.names  # nothing of the payload is left
    assert not item.entry.reason
    assert v.screen(fixtures.seed_declaration(), now=T0).hits == []
    assert not v.erase("m1")  # once


def test_erasure_of_an_older_version_or_a_revocation_changes_nothing_shown() -> None:
    v = view()
    v.apply(HK, entry_at(T0, 1), "m1", received_at=T0)
    v.apply(HK, entry_at(T0, 2), "m2", received_at=T0)
    assert not v.erase("m1")
    v.apply(HK, fixtures.seed_revocation(3), "m3", received_at=T0)
    assert not v.erase("m3")  # stays revoked: the revocation must not be undone by erasure
    (item,) = v.snapshot(WL, now=T0).items
    assert (item.entry.version, item.state) == (2, S.ENTRY_STATE_REVOKED)


def test_erased_entry_does_not_come_back_from_an_older_version() -> None:
    v = view()
    v.apply(HK, entry_at(T0, 2), "m2", received_at=T0)
    v.erase("m2")
    assert not v.apply(HK, entry_at(T0, 1), "m1", received_at=T0)  # replayed, stale
    assert v.apply(HK, entry_at(T0, 3), "m3", received_at=T0)  # re-published by the origin
    assert [i.entry.version for i in v.snapshot(WL, now=T0).items] == [3]


def test_delta_asked_twice_returns_nothing_the_second_time() -> None:
    v = view()
    v.apply(HK, entry_at(T0, 1, starts_in=dt.timedelta(hours=1)), "m1", received_at=T0)
    later = T0 + dt.timedelta(days=200)  # entered into force, then expired
    first = v.delta(WL, 1, now=later)
    assert states(first) == [("3b0f6a52", 1, S.ENTRY_STATE_EXPIRED)]
    assert first.view_version == 3  # into force (2), expiry (3)
    assert v.delta(WL, first.view_version, now=later).items == []
    assert v.delta(WL, first.view_version, now=later + dt.timedelta(days=1)).items == []


def test_every_change_after_v_exactly_once_including_time() -> None:
    v = view()
    v.apply(HK, entry_at(T0, 1, starts_in=dt.timedelta(hours=1)), "m1", received_at=T0)
    seen: list[tuple[int, int]] = []
    since = 0
    for hours in (0, 2, 24 * 200, 24 * 201):
        delta = v.delta(WL, since, now=T0 + dt.timedelta(hours=hours))
        seen += [(i.view_version, i.state) for i in delta.items]
        since = delta.view_version
    assert seen == [
        (1, S.ENTRY_STATE_NOT_YET_VALID),
        (2, S.ENTRY_STATE_ACTIVE),
        (3, S.ENTRY_STATE_EXPIRED),
    ]


def test_a_clock_going_back_changes_nothing() -> None:
    v = view()
    v.apply(HK, entry_at(T0, 1), "m1", received_at=T0)
    later = T0 + dt.timedelta(days=200)
    assert v.delta(WL, 1, now=later).view_version == 2
    back = v.snapshot(WL, now=T0)
    assert (back.view_version, back.items[0].state) == (2, S.ENTRY_STATE_EXPIRED)


def test_versions_monotonic_across_restore_with_erasure() -> None:
    v = view()
    v.apply(HK, entry_at(T0, 1), "m1", received_at=T0)
    other = entry_at(T0, 1)
    other.entry_id = "00000000-0000-4000-8000-000000000009"
    v.apply(HK, other, "m-other", received_at=T0)
    v.erase("m1")
    assert v.version == 3
    again = _restored(v)
    assert again.version == 3  # not 2: the erasure counted, and it is remembered
    # Replaying what the store still holds (the other entry) changes nothing.
    assert not again.apply(HK, other, "m-other", received_at=T0)
    (item,) = again.delta(WL, 2, now=T0).items
    assert item.state == S.ENTRY_STATE_ERASED
    third = entry_at(T0, 1)
    third.entry_id = "00000000-0000-4000-8000-000000000010"
    assert again.apply(HK, third, "m-third", received_at=T0)
    assert [i.view_version for i in again.delta(WL, 3, now=T0).items] == [4]


def test_restore_refuses_a_record_above_the_stored_version() -> None:
    v = view()
    v.apply(HK, entry_at(T0, 1), "m1", received_at=T0)
    (record,) = v.take_changes()
    with pytest.raises(ValueError, match="above the stored view version 0"):
        view().restore([record], version=0, advanced_to=T0)
