"""Issue 6 at a peer node: an entry published, amended, revoked and expired is seen in each state
by snapshot and delta queries at another node, and screening there follows it."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from customs.gateway.v1 import partner_pb2, partner_pb2_grpc
from gateway.domain.fixtures import seed_declaration, seed_revocation, timestamp
from gateway.ledger import Event
from gateway.pki import Role
from gateway.server import Node, load_config
from tests.exchange.conftest import CN, HK, MO, PROTO, Trio, entry_request
from tests.support import wait_for

LIST = "strategic-minerals"


def _items(trio: Trio, since: int = 0) -> tuple[dict[str, Any], int]:
    response = trio.partner(CN).ListWatchlist(
        partner_pb2.ListWatchlistRequest(watchlist=LIST, since_version=since), timeout=5
    )
    return {i.entry.entry_id: i for i in response.items}, response.view_version


def _state(item: Any) -> str:
    return partner_pb2.EntryState.Name(item.state)


def _screen(trio: Trio) -> list[str]:
    response = trio.partner(CN).ScreenDeclaration(
        partner_pb2.ScreenDeclarationRequest(declaration=seed_declaration()), timeout=5
    )
    return [hit.entry_id for hit in response.hits]


def _wait_item(trio: Trio, entry_id: str, version: int) -> Any:
    def seen() -> Any:
        item = _items(trio)[0].get(entry_id)
        return item if item is not None and item.entry.version == version else None

    return wait_for(seen, what=f"entry {entry_id} version {version} at CN")


def _revoke(entry: Any, message_id: str) -> partner_pb2.RevokeWatchlistEntryRequest:
    revocation = seed_revocation(version=3)
    revocation.entry_id = entry.entry_id
    addressing = partner_pb2.Addressing(message_id=message_id)
    addressing.recipients.append(PROTO[CN])
    addressing.handling.releasable_to.append(PROTO[CN])
    return partner_pb2.RevokeWatchlistEntryRequest(addressing=addressing, revocation=revocation)


def test_published_amended_revoked_seen_at_peer_by_snapshot_and_delta(trio: Trio) -> None:
    hk = trio.partner(HK)
    publish = entry_request([CN])
    entry_id = publish.entry.entry_id
    hk.PublishWatchlistEntry(publish, timeout=10)

    item = _wait_item(trio, entry_id, 1)
    assert _state(item) == "ENTRY_STATE_ACTIVE"
    assert item.origin == PROTO[HK]
    assert item.message_id == publish.addressing.message_id
    _, after_publish = _items(trio)
    assert entry_id in _screen(trio)

    amend = entry_request([CN])
    amend.entry.CopyFrom(publish.entry)
    amend.entry.version = 2
    amend.entry.reason = "Amended: also trades as Nam Wah Minerals."
    hk.PublishWatchlistEntry(amend, timeout=10)
    _wait_item(trio, entry_id, 2)
    delta, after_amend = _items(trio, since=after_publish)
    assert list(delta) == [entry_id]
    assert delta[entry_id].entry.version == 2
    assert _state(delta[entry_id]) == "ENTRY_STATE_ACTIVE"

    hk.RevokeWatchlistEntry(_revoke(publish.entry, str(uuid.uuid4())), timeout=10)
    wait_for(
        lambda: _state(_items(trio)[0][entry_id]) == "ENTRY_STATE_REVOKED", what="revocation at CN"
    )
    delta, _ = _items(trio, since=after_amend)
    assert _state(delta[entry_id]) == "ENTRY_STATE_REVOKED"
    assert entry_id not in _screen(trio)  # a revoked entry stops matching
    assert _items(trio, since=_items(trio)[1])[0] == {}  # nothing changed since the last version

    # MO was not a recipient: its view has nothing of this entry
    mo = trio.partner(MO).ListWatchlist(partner_pb2.ListWatchlistRequest(watchlist=LIST), timeout=5)
    assert entry_id not in {i.entry.entry_id for i in mo.items}


def test_entry_expires_and_stops_matching_at_peer(trio: Trio) -> None:
    now = dt.datetime.now(dt.UTC)
    publish = entry_request([CN], now)
    publish.entry.validity.valid_until.CopyFrom(timestamp(now + dt.timedelta(seconds=2)))
    publish.entry.retain_until.CopyFrom(timestamp(now + dt.timedelta(days=30)))
    trio.partner(HK).PublishWatchlistEntry(publish, timeout=10)
    entry_id = publish.entry.entry_id
    assert _state(_wait_item(trio, entry_id, 1)) == "ENTRY_STATE_ACTIVE"
    assert entry_id in _screen(trio)

    wait_for(
        lambda: _state(_items(trio)[0][entry_id]) == "ENTRY_STATE_EXPIRED",
        timeout=10,
        what="expiry at CN",
    )
    assert entry_id not in _screen(trio)
    delta, _ = _items(trio, since=0)
    assert _state(delta[entry_id]) == "ENTRY_STATE_EXPIRED"


def test_not_yet_valid_entry_is_reported_so(trio: Trio) -> None:
    now = dt.datetime.now(dt.UTC)
    publish = entry_request([CN], now)
    publish.entry.validity.valid_from.CopyFrom(timestamp(now + dt.timedelta(days=1)))
    trio.partner(HK).PublishWatchlistEntry(publish, timeout=10)
    item = _wait_item(trio, publish.entry.entry_id, 1)
    assert _state(item) == "ENTRY_STATE_NOT_YET_VALID"
    assert publish.entry.entry_id not in _screen(trio)


def test_page_token_bound_to_its_query(trio: Trio) -> None:
    for _ in range(3):
        trio.partner(HK).PublishWatchlistEntry(entry_request([CN]), timeout=10)
    wait_for(lambda: len(_items(trio)[0]) == 3, what="three entries at CN")
    page = trio.partner(CN).ListWatchlist(
        partner_pb2.ListWatchlistRequest(watchlist=LIST, page_size=2), timeout=5
    )
    assert len(page.items) == 2
    assert page.next_page_token
    rest = trio.partner(CN).ListWatchlist(
        partner_pb2.ListWatchlistRequest(
            watchlist=LIST, page_size=2, page_token=page.next_page_token
        ),
        timeout=5,
    )
    assert len(rest.items) == 1
    assert not rest.next_page_token
    with pytest.raises(grpc.RpcError) as info:
        trio.partner(CN).ListWatchlist(
            partner_pb2.ListWatchlistRequest(
                watchlist="other-list", page_size=2, page_token=page.next_page_token
            ),
            timeout=5,
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_view_survives_restart(trio: Trio) -> None:
    publish = entry_request([CN])
    trio.partner(HK).PublishWatchlistEntry(publish, timeout=10)
    _wait_item(trio, publish.entry.entry_id, 1)
    before, version = _items(trio)
    trio.stop(CN)
    trio.start(CN)
    after, version_after = _items(trio)
    assert set(after) == set(before)
    assert version_after == version


# --- issue 16: a view partners can sync from, through erasure and restarts -----------------------


class _Clock:
    """The wall clock moved by ``offset``: the node's exchange, retention and view all read it."""

    def __init__(self) -> None:
        self.offset = dt.timedelta(0)

    def __call__(self) -> dt.datetime:
        return dt.datetime.now(dt.UTC) + self.offset


def _start_with_clock(trio: Trio, clock: _Clock) -> None:
    if CN in trio.nodes:
        trio.stop(CN)
    node = Node(load_config(trio.configs[CN]), clock=clock)
    node.start()
    trio.nodes[CN] = node


def _delta(trio: Trio, since: int) -> tuple[list[tuple[str, str]], int]:
    response = trio.partner(CN).ListWatchlist(
        partner_pb2.ListWatchlistRequest(watchlist=LIST, since_version=since), timeout=5
    )
    items = [(i.entry.entry_id, _state(i)) for i in response.items]
    return items, response.view_version


def test_erase_then_restart_then_delta(trio: Trio) -> None:
    clock = _Clock()
    _start_with_clock(trio, clock)
    now = clock()
    short = entry_request([HK], now)  # kept no longer than it is valid
    short.entry.retain_until.CopyFrom(short.entry.validity.valid_until)
    long = entry_request([HK], now)
    for request in (short, long):
        trio.partner(CN).PublishWatchlistEntry(request, timeout=10)
    a, b = short.entry.entry_id, long.entry.entry_id
    items, published = _delta(trio, 0)
    assert sorted(items) == sorted([(a, "ENTRY_STATE_ACTIVE"), (b, "ENTRY_STATE_ACTIVE")])

    # 181 days on: both expired, and the short one's retention is over.
    clock.offset = dt.timedelta(days=181)
    trio.nodes[CN].exchange.erase_expired()
    wait_for(lambda: trio.entries(CN, Event.ERASED), what="the erasure at CN")
    snapshot, _ = _delta(trio, 0)
    assert snapshot == [(b, "ENTRY_STATE_EXPIRED")]  # the erased entry is gone at once
    changes, after = _delta(trio, published)
    assert sorted(changes) == sorted([(a, "ENTRY_STATE_ERASED"), (b, "ENTRY_STATE_EXPIRED")])
    assert after == published + 2  # one erasure, one expiry: each a version
    assert _delta(trio, after) == ([], after)  # asked again: nothing new

    _start_with_clock(trio, clock)  # restart
    assert _delta(trio, after) == ([], after)  # the version did not go backwards
    assert sorted(_delta(trio, published)[0]) == sorted(changes)
    newer = entry_request([HK], clock())
    trio.partner(CN).PublishWatchlistEntry(newer, timeout=10)
    assert _delta(trio, after) == ([(newer.entry.entry_id, "ENTRY_STATE_ACTIVE")], after + 1)


@pytest.mark.sqlite_files  # on PostgreSQL the view lives in CN's database, not a file
def test_a_lost_view_file_never_reuses_a_version(trio: Trio) -> None:
    publish = entry_request([CN])
    trio.partner(HK).PublishWatchlistEntry(publish, timeout=10)
    _wait_item(trio, publish.entry.entry_id, 1)
    _, seen = _items(trio)
    trio.stop(CN)
    for suffix in ("", "-wal", "-shm"):
        (trio.root / "cn-data" / f"watchlist-view.db{suffix}").unlink(missing_ok=True)
    trio.start(CN)
    changes, version = _items(trio, since=seen)
    assert version > seen  # not back to 1: a partner at `seen` is not refused nor misled
    assert list(changes) == [publish.entry.entry_id]  # the rebuilt entry comes again


def test_versions_monotonic_across_restarts(trio: Trio) -> None:
    seen = [_items(trio)[1]]
    for _ in range(3):
        trio.partner(HK).PublishWatchlistEntry(entry_request([CN]), timeout=10)
        wait_for(lambda: _items(trio)[1] > seen[-1], what="a new view version at CN")
        seen.append(_items(trio)[1])
        trio.stop(CN)
        trio.start(CN)
        assert _items(trio)[1] == seen[-1]
    assert seen == sorted(set(seen))


# --- issue 16: hits an officer can act on, one entry fetched -------------------------------------


def _violations(error: grpc.RpcError) -> set[str]:
    bad = error_details_pb2.BadRequest()
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    assert status is not None
    assert status.details[0].Unpack(bad)
    return {v.field for v in bad.field_violations}


def test_get_watchlist_entry_and_hits_carry_the_entry(trio: Trio) -> None:
    publish = entry_request([CN])
    publish.entry.handling_instructions = "Hold for examination; call the HK duty officer."
    trio.partner(HK).PublishWatchlistEntry(publish, timeout=10)
    entry_id = publish.entry.entry_id
    _wait_item(trio, entry_id, 1)

    item = trio.partner(CN).GetWatchlistEntry(
        partner_pb2.GetWatchlistEntryRequest(origin=PROTO[HK], watchlist=LIST, entry_id=entry_id),
        timeout=5,
    )
    assert item.entry == publish.entry
    assert _state(item) == "ENTRY_STATE_ACTIVE"
    assert item.message_id == publish.addressing.message_id
    assert item.handling == publish.addressing.handling

    screened = trio.partner(CN).ScreenDeclaration(
        partner_pb2.ScreenDeclarationRequest(declaration=seed_declaration()), timeout=5
    )
    (hit,) = [h for h in screened.hits if h.entry_id == entry_id]
    assert hit.tier == partner_pb2.MATCH_TIER_MATCH
    assert hit.origin == PROTO[HK]
    assert hit.entry.names == publish.entry.names
    assert hit.entry.reason == publish.entry.reason
    assert hit.entry.handling_instructions == "Hold for examination; call the HK duty officer."
    assert hit.message_id == publish.addressing.message_id
    assert list(hit.handling.releasable_to) == [PROTO[CN]]  # may the officer pass it on?

    with pytest.raises(grpc.RpcError) as info:
        trio.partner(CN).GetWatchlistEntry(
            partner_pb2.GetWatchlistEntryRequest(
                origin=PROTO[MO], watchlist=LIST, entry_id=entry_id
            ),
            timeout=5,
        )
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert "of JURISDICTION_MO in watchlist 'strategic-minerals'" in (info.value.details() or "")

    with pytest.raises(grpc.RpcError) as info:
        trio.partner(CN).GetWatchlistEntry(partner_pb2.GetWatchlistEntryRequest(), timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(info.value) == {"origin", "watchlist", "entry_id"}

    # As ListWatchlist: partners of the node's own jurisdiction only.
    stub = partner_pb2_grpc.PartnerGatewayStub(trio.channel(CN, HK, Role.PARTNER))
    with pytest.raises(grpc.RpcError) as info:
        stub.GetWatchlistEntry(
            partner_pb2.GetWatchlistEntryRequest(
                origin=PROTO[HK], watchlist=LIST, entry_id=entry_id
            ),
            timeout=5,
        )
    assert info.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert "partner-own-jurisdiction" in (info.value.details() or "")


def test_screening_normalises_what_it_can_and_refuses_only_the_unusable(trio: Trio) -> None:
    publish = entry_request([CN])
    trio.partner(HK).PublishWatchlistEntry(publish, timeout=10)
    _wait_item(trio, publish.entry.entry_id, 1)
    declaration = seed_declaration()
    del declaration.container_numbers[:]
    declaration.container_numbers.append("csqu 305438 3")
    response = trio.partner(CN).ScreenDeclaration(
        partner_pb2.ScreenDeclarationRequest(declaration=declaration), timeout=5
    )
    assert publish.entry.entry_id in [h.entry_id for h in response.hits]
    assert [(n.field, n.given, n.used) for n in response.normalised] == [
        ("declaration.container_numbers[0]", "csqu 305438 3", "CSQU3054383")
    ]
    declaration.container_numbers[0] = "csqu 305438 4"  # wrong check digit: unusable
    with pytest.raises(grpc.RpcError) as info:
        trio.partner(CN).ScreenDeclaration(
            partner_pb2.ScreenDeclarationRequest(declaration=declaration), timeout=5
        )
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert _violations(info.value) == {"declaration.container_numbers[0]"}


def test_get_watchlist_entry_of_an_unknown_origin_is_not_found(trio: Trio) -> None:
    with pytest.raises(grpc.RpcError) as info:
        trio.partner(CN).GetWatchlistEntry(
            partner_pb2.GetWatchlistEntryRequest(origin=999, watchlist=LIST, entry_id="x" * 5000),  # type: ignore[arg-type]
            timeout=5,
        )
    assert info.value.code() is grpc.StatusCode.NOT_FOUND
    assert "of 999 in watchlist" in (info.value.details() or "")
