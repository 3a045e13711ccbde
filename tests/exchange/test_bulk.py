"""Issue 15 with three real nodes: bulk publish and revoke (ADR 0053, 0054).

A bulk publish with some invalid entries answers per entry, in order; the valid entries reach
both peers' partner streams exactly once; a retried batch creates nothing twice; the ledgers
verify and reconcile. A bulk revoke removes the entries from the merged views at all three
nodes. Calls beyond the limits are RESOURCE_EXHAUSTED, callers without the right
PERMISSION_DENIED.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from customs.gateway.v1 import partner_pb2, partner_pb2_grpc
from gateway.cli import main
from gateway.domain.fixtures import seed_revocation
from gateway.exchange.submit import PUBLISH
from gateway.ledger import Event
from gateway.pki import Jurisdiction, Role
from tests.exchange.conftest import CN, HK, MO, PROTO, Trio, entry_request, read_stream
from tests.interop.examples import code_example
from tests.support import wait_for

LIST = "strategic-minerals"
OUTCOME = partner_pb2.BulkOutcome


def bulk_entries(count: int, recipients: list[Jurisdiction]) -> list[Any]:
    """``count`` valid publish requests (each its own entry id and message id)."""
    return [entry_request(recipients) for _ in range(count)]


def _revocations(entries: list[Any], recipients: list[Jurisdiction]) -> list[Any]:
    revocations = []
    for entry in entries:
        revocation = seed_revocation(version=2)
        revocation.entry_id = entry.entry.entry_id
        addressing = partner_pb2.Addressing(message_id=str(uuid.uuid4()))
        addressing.recipients.extend(PROTO[r] for r in recipients)
        addressing.handling.releasable_to.extend(PROTO[r] for r in recipients)
        revocations.append(
            partner_pb2.RevokeWatchlistEntryRequest(addressing=addressing, revocation=revocation)
        )
    return revocations


def _bad_request(status: Any) -> list[str]:
    fields = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields


def _fetch(trio: Trio, j: Jurisdiction, out: Path) -> int:
    auditor = trio.world.cred(j, Role.AUDITOR)
    return main(
        [
            "audit", "fetch", "--node", trio.nodes[j].address, "--jurisdiction", j.value,
            "--cert", str(auditor.certificate), "--key", str(auditor.key),
            "--trust-bundle", str(trio.world.bundle), "--out", str(out),
        ]
    )  # fmt: skip


def _witnessed_by_both(trio: Trio, j: Jurisdiction) -> bool:
    latest = trio.nodes[j].ledger.latest_checkpoint()
    others = [o for o in (CN, HK, MO) if o is not j]
    return (
        latest is not None
        and not trio.nodes[j].checkpointer.due()
        and all(f"— {o.trust_domain}/witness " in latest.note for o in others)
    )


def test_bulk_publish_answers_per_entry_delivers_once_and_the_ledgers_reconcile(
    trio: Trio, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    requests = bulk_entries(40, [CN, MO])
    requests[3].entry.identifiers[0].value = "7123456"  # an HK BR number has 8 digits
    requests[17].entry.hs_codes[:] = ["81"]  # HS codes have 4 to 10 digits
    requests[29].addressing.message_id = requests[28].addressing.message_id  # reused id
    requests[35].entry.version = 2  # amends an entry never published
    invalid = {3, 17, 29, 35}
    hk = trio.partner(HK)
    response = hk.PublishWatchlistEntries(
        partner_pb2.PublishWatchlistEntriesRequest(entries=requests), timeout=30
    )

    assert [r.position for r in response.results] == list(range(40))
    assert [r.message_id for r in response.results] == [r.addressing.message_id for r in requests]
    assert (response.accepted, response.duplicates, response.refused) == (36, 0, 4)
    outcomes = {i: r.outcome for i, r in enumerate(response.results)}
    assert {i for i, o in outcomes.items() if o == OUTCOME.BULK_OUTCOME_REFUSED} == invalid
    refused = {i: response.results[i].refused for i in invalid}
    assert refused[3].code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert _bad_request(refused[3]) == ["entries[3].entry.identifiers[0].value"]
    assert _bad_request(refused[17]) == ["entries[17].entry.hs_codes[0]"]
    assert refused[29].code == grpc.StatusCode.ALREADY_EXISTS.value[0]
    assert "entries[28]" in refused[29].message
    assert _bad_request(refused[35]) == ["entries[35].entry.version"]  # new ids start at 1
    valid = [i for i in range(40) if i not in invalid]
    indexes = [response.results[i].accepted.ledger_index for i in valid]
    # two "sent" entries (CN, MO) per message, consecutive, in request order, one commit
    assert indexes == list(range(indexes[0], indexes[0] + 2 * len(valid), 2))
    sent = [r for r in trio.entries(HK, Event.SENT) if r.index in set(indexes)]
    assert len(sent) == len(valid)

    # A retry of the whole batch creates nothing: the first answers again, as duplicates.
    # (Counted as sent entries: the deliveries' receipts may be recorded meanwhile.)
    sent_before = len(trio.entries(HK, Event.SENT))
    again = hk.PublishWatchlistEntries(
        partner_pb2.PublishWatchlistEntriesRequest(entries=requests), timeout=30
    )
    assert (again.accepted, again.duplicates, again.refused) == (0, 36, 4)
    for i in valid:
        first, second = response.results[i].accepted, again.results[i].accepted
        assert second.duplicate
        assert not first.duplicate
        assert (second.ledger_index, second.digest, second.accepted_at) == (
            first.ledger_index,
            first.digest,
            first.accepted_at,
        )
    assert len(trio.entries(HK, Event.SENT)) == sent_before

    # Both peers' partners read each valid entry exactly once.
    wanted = {requests[i].addressing.message_id for i in valid}
    for peer in (CN, MO):
        got = [m.message_id for m in read_stream(trio.partner(peer), expect=len(valid))]
        assert sorted(got) == sorted(wanted)
        received = [str(r.entry.message_id) for r in trio.entries(peer, Event.RECEIVED)]
        assert sorted(m for m in received if m in wanted) == sorted(wanted)
    wait_for(lambda: len(trio.entries(HK, Event.RECEIPT)) == 2 * len(valid), what="receipts")

    # The ledgers verify and reconcile (the audit CLI, over what each node serves).
    for j in (CN, HK, MO):
        wait_for(lambda j=j: _witnessed_by_both(trio, j), what=f"{j.value} cosigned")
    exports = {j: tmp_path / f"{j.value.lower()}.export" for j in (CN, HK, MO)}
    for j, path in exports.items():
        assert _fetch(trio, j, path) == 0
    bundle = str(trio.world.bundle)
    for path in exports.values():
        assert main(["audit", "verify", str(path), "--trust-bundle", bundle, "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["audit", "reconcile", *map(str, exports.values())]) == 0
    assert "0 mismatches" in capsys.readouterr().out


def test_an_amendment_in_a_later_call_must_keep_the_stored_recipients(trio: Trio) -> None:
    """The recipients of earlier versions come from the store (read with the versions, in one
    statement per call): an amendment that drops one is refused, one that keeps all is not."""
    first = entry_request([CN, MO])
    response = trio.partner(HK).PublishWatchlistEntries(
        partner_pb2.PublishWatchlistEntriesRequest(entries=[first]), timeout=10
    )
    assert [r.outcome for r in response.results] == [OUTCOME.BULK_OUTCOME_ACCEPTED]
    dropped = partner_pb2.PublishWatchlistEntryRequest()
    dropped.CopyFrom(first)
    dropped.addressing.message_id = str(uuid.uuid4())
    dropped.entry.version = 2
    dropped.addressing.recipients[:] = [PROTO[MO]]  # drops CN, which had version 1
    dropped.addressing.handling.releasable_to[:] = [PROTO[MO]]
    kept = partner_pb2.PublishWatchlistEntryRequest()
    kept.CopyFrom(first)
    kept.addressing.message_id = str(uuid.uuid4())
    kept.entry.version = 2
    response = trio.partner(HK).PublishWatchlistEntries(
        partner_pb2.PublishWatchlistEntriesRequest(entries=[dropped, kept]), timeout=10
    )
    assert [r.outcome for r in response.results] == [
        OUTCOME.BULK_OUTCOME_REFUSED,
        OUTCOME.BULK_OUTCOME_ACCEPTED,
    ]
    assert _bad_request(response.results[0].refused) == ["entries[0].addressing.recipients"]


def test_an_entry_amended_within_one_call_is_two_messages_in_order(trio: Trio) -> None:
    first = entry_request([CN])
    amended = partner_pb2.PublishWatchlistEntryRequest()
    amended.CopyFrom(first)
    amended.addressing.message_id = str(uuid.uuid4())
    amended.entry.version = 2
    dropped = partner_pb2.PublishWatchlistEntryRequest()
    dropped.CopyFrom(amended)
    dropped.addressing.message_id = str(uuid.uuid4())
    dropped.entry.version = 3
    dropped.addressing.recipients[:] = [PROTO[MO]]  # drops CN, which had versions 1 and 2
    dropped.addressing.handling.releasable_to[:] = [PROTO[MO]]
    repeat = partner_pb2.PublishWatchlistEntryRequest()
    repeat.CopyFrom(first)  # the same message again in the same call
    response = trio.partner(HK).PublishWatchlistEntries(
        partner_pb2.PublishWatchlistEntriesRequest(entries=[first, amended, dropped, repeat]),
        timeout=10,
    )
    outcomes = [r.outcome for r in response.results]
    assert outcomes == [
        OUTCOME.BULK_OUTCOME_ACCEPTED,
        OUTCOME.BULK_OUTCOME_ACCEPTED,
        OUTCOME.BULK_OUTCOME_REFUSED,
        OUTCOME.BULK_OUTCOME_DUPLICATE,
    ]
    assert _bad_request(response.results[2].refused) == ["entries[2].addressing.recipients"]
    assert response.results[3].accepted.ledger_index == response.results[0].accepted.ledger_index
    item = wait_for(
        lambda: next(
            (
                i
                for i in trio.partner(CN)
                .ListWatchlist(partner_pb2.ListWatchlistRequest(watchlist=LIST), timeout=5)
                .items
                if i.entry.entry_id == first.entry.entry_id and i.entry.version == 2
            ),
            None,
        ),
        what="version 2 at CN",
    )
    assert item.message_id == amended.addressing.message_id


def _view(trio: Trio, j: Jurisdiction) -> dict[str, Any]:
    items: dict[str, Any] = {}
    token = ""
    while True:
        page = trio.partner(j).ListWatchlist(
            partner_pb2.ListWatchlistRequest(watchlist=LIST, page_size=1000, page_token=token),
            timeout=5,
        )
        items.update({i.entry.entry_id: i for i in page.items})
        token = page.next_page_token
        if not token:
            return items


def test_bulk_revoke_removes_the_entries_from_the_views_at_all_three_nodes(trio: Trio) -> None:
    published = bulk_entries(30, [CN, MO])
    hk = trio.partner(HK)
    response = hk.PublishWatchlistEntries(
        partner_pb2.PublishWatchlistEntriesRequest(entries=published), timeout=30
    )
    assert response.accepted == 30
    ids = {r.entry.entry_id for r in published}
    for j in (HK, CN, MO):
        wait_for(
            lambda j=j: (
                {e for e, i in _view(trio, j).items() if i.state == partner_pb2.ENTRY_STATE_ACTIVE}
                >= ids
            ),
            what=f"30 entries active at {j.value}",
        )

    revoked, kept = published[:20], published[20:]
    revocations = _revocations(revoked, [CN, MO])
    again = _revocations(revoked[:1], [CN, MO])[0]
    again.revocation.version = 3
    revocations.append(again)  # revoked earlier in this call
    response = hk.RevokeWatchlistEntries(
        partner_pb2.RevokeWatchlistEntriesRequest(revocations=revocations), timeout=30
    )
    assert (response.accepted, response.refused) == (20, 1)
    assert response.results[20].refused.code == grpc.StatusCode.FAILED_PRECONDITION.value[0]

    gone = {r.entry.entry_id for r in revoked}
    for j in (HK, CN, MO):

        def revoked_there(j: Jurisdiction = j) -> bool:
            view = _view(trio, j)
            return all(view[e].state == partner_pb2.ENTRY_STATE_REVOKED for e in gone)

        wait_for(revoked_there, what=f"20 entries revoked at {j.value}")
        view = _view(trio, j)
        assert {e for e in ids if view[e].state == partner_pb2.ENTRY_STATE_ACTIVE} == {
            r.entry.entry_id for r in kept
        }


def _status(exc: grpc.RpcError) -> tuple[grpc.StatusCode, Any]:
    return exc.code(), rpc_status.from_call(exc)  # type: ignore[arg-type]


def test_bulk_calls_beyond_the_limits_are_resource_exhausted(trio: Trio) -> None:
    hk = trio.partner(HK)
    size = trio.nodes[HK].ledger.size()
    limits = trio.nodes[HK].limits
    too_many = [entry_request([CN]) for _ in range(limits.bulk_entries + 1)]
    with pytest.raises(grpc.RpcError) as caught:
        hk.PublishWatchlistEntries(
            partner_pb2.PublishWatchlistEntriesRequest(entries=too_many), timeout=30
        )
    code, status = _status(caught.value)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"more than the node's limit (bulk_entries {limits.bulk_entries})" in status.message
    quota = error_details_pb2.QuotaFailure()
    assert any(d.Unpack(quota) for d in status.details)
    assert quota.violations[0].subject == "bulk_entries"

    large = [entry_request([CN]) for _ in range(3)]
    for request in large:  # 3 x 800 kB: above bulk_bytes, below max_request_bytes
        request.entry.reason = "x" * 800_000
    with pytest.raises(grpc.RpcError) as caught:
        hk.PublishWatchlistEntries(
            partner_pb2.PublishWatchlistEntriesRequest(entries=large), timeout=30
        )
    code, status = _status(caught.value)
    assert code is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"(bulk_bytes {limits.bulk_bytes})" in status.message
    assert any(d.Unpack(quota) for d in status.details)
    assert quota.violations[0].subject == "bulk_bytes"

    with pytest.raises(grpc.RpcError) as caught:
        hk.PublishWatchlistEntries(partner_pb2.PublishWatchlistEntriesRequest(), timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert trio.nodes[HK].ledger.size() - size <= 1  # nothing recorded (a checkpoint's witness)
    assert not trio.entries(HK, Event.SENT)


@pytest.mark.parametrize(
    ("who", "role"),
    [
        pytest.param(CN, Role.PARTNER, id="another-jurisdictions-partner"),
        pytest.param(HK, Role.AUDITOR, id="own-auditor"),
        pytest.param(CN, Role.NODE, id="peer-node"),
    ],
)
def test_a_caller_without_the_right_is_permission_denied(
    trio: Trio, who: Jurisdiction, role: Role
) -> None:
    stub = partner_pb2_grpc.PartnerGatewayStub(trio.channel(HK, who, role))
    for call, request in (
        (
            stub.PublishWatchlistEntries,
            partner_pb2.PublishWatchlistEntriesRequest(entries=[entry_request([CN])]),
        ),
        (
            stub.RevokeWatchlistEntries,
            partner_pb2.RevokeWatchlistEntriesRequest(
                revocations=_revocations([entry_request([CN])], [CN])
            ),
        ),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call(request, timeout=5)
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "rule partner-own-jurisdiction" in caught.value.details()
    assert not trio.entries(HK, Event.SENT)


def test_the_documented_python_bulk_loader_runs_against_a_real_node(trio: Trio) -> None:
    """docs/partners.md's Python bulk loader, as written, in batches (of 50 here) and again."""
    namespace: dict[str, Any] = {}
    exec(compile(code_example("python", "bulk-load"), "partners.md", "exec"), namespace)
    namespace["BATCH"] = 50
    requests = bulk_entries(120, [CN])
    requests[60].entry.identifiers[0].value = "7123456"
    answers, refused = namespace["bulk_load"](trio.partner(HK), requests)
    assert len(answers) == 119
    assert not any(a.duplicate for a in answers.values())
    assert [(r.position, _bad_request(r.refused)) for r in refused] == [
        (10, ["entries[10].entry.identifiers[0].value"])  # the 11th of the second batch
    ]
    again, refused_again = namespace["bulk_load"](trio.partner(HK), requests)
    assert all(a.duplicate for a in again.values())
    assert {m: (a.ledger_index, a.digest) for m, a in again.items()} == {
        m: (a.ledger_index, a.digest) for m, a in answers.items()
    }
    assert len(refused_again) == 1


@pytest.mark.parametrize("origin", [HK, CN], ids=["hk", "cn"])
def test_a_subject_moved_by_another_call_meanwhile_is_judged_again(
    trio: Trio, monkeypatch: pytest.MonkeyPatch, origin: Jurisdiction
) -> None:
    """Entries are sealed before the commit; a single submit that publishes one of the call's
    entries in between makes the commit refuse the call whole (its version write finds another
    state than the call read, ADR 0085), and it is prepared again: the other entry is recorded
    once, the moved one refused against what is now stored. CN's node is on PostgreSQL in the
    suite's second pass."""
    exchange = trio.nodes[origin].exchange
    ledger = exchange.ledger
    to = MO if origin is CN else CN
    mine, theirs = entry_request([to]), entry_request([to])
    other = partner_pb2.PublishWatchlistEntryRequest()
    other.CopyFrom(theirs)
    other.addressing.message_id = str(uuid.uuid4())  # the same entry, another message
    original = ledger.append_many
    calls: list[int] = []

    me = threading.get_ident()

    def append_many(entries: Any, within: Any = None) -> Any:
        if threading.get_ident() != me:  # the node's own threads (witness, checkpoints)
            return original(entries, within)
        calls.append(len(entries))
        if len(calls) == 1:
            exchange.submit(other, PUBLISH)  # another partner's call wins the race
        return original(entries, within)

    monkeypatch.setattr(ledger, "append_many", append_many)
    response = exchange.submit_many([mine, theirs], PUBLISH, "entries")
    assert calls == [2, 1, 1]  # ours (refused in the commit), theirs, ours again
    assert response.results[0].outcome == OUTCOME.BULK_OUTCOME_ACCEPTED
    assert response.results[1].outcome == OUTCOME.BULK_OUTCOME_REFUSED
    assert _bad_request(response.results[1].refused) == ["entries[1].entry.version"]
    sent = [str(r.entry.message_id) for r in trio.entries(origin, Event.SENT)]
    assert sorted(sent) == sorted([mine.addressing.message_id, other.addressing.message_id])


def test_a_bulk_call_reaches_a_peer_in_few_large_deliveries(trio: Trio) -> None:
    deliverer = trio.nodes[HK].deliverers[CN]
    before = deliverer.batches
    requests = bulk_entries(1000, [CN])
    response = trio.partner(HK).PublishWatchlistEntries(
        partner_pb2.PublishWatchlistEntriesRequest(entries=requests), timeout=60
    )
    assert response.accepted == 1000
    wait_for(lambda: deliverer.delivered >= 1000, timeout=60, what="1000 delivered to CN")
    assert deliverer.batches - before <= 2  # not one call per 200 (or per message)
    got = read_stream(trio.partner(CN), expect=1000, timeout=60)
    assert len({m.message_id for m in got}) == 1000


def test_receipts_are_signed_outside_the_ledger_writer(
    trio: Trio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The recipient signs each receipt after the batch's commit, on the delivery's own thread:
    the single ledger writer never waits for Ed25519 (ADR 0054)."""
    import gateway.exchange.receive as receive

    threads: list[str] = []
    sign = receive.sign_receipt

    def recording(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return sign(*args, **kwargs)

    monkeypatch.setattr(receive, "sign_receipt", recording)
    response = trio.partner(HK).PublishWatchlistEntries(
        partner_pb2.PublishWatchlistEntriesRequest(entries=bulk_entries(50, [CN])), timeout=30
    )
    assert response.accepted == 50
    wait_for(lambda: len(trio.entries(HK, Event.RECEIPT)) == 50, what="50 receipts at HK")
    assert len(threads) >= 50
    assert not [t for t in threads if t.startswith("ledger-writer")]
