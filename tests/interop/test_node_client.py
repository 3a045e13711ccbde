"""A partner system in Node.js (``tests/interop/client.js``: ``@grpc/grpc-js`` and
``@grpc/proto-loader`` over nothing but ``protos/``) against three real nodes over mutual TLS
with certificates from the project's own PKI: it submits, receives, acknowledges and decodes a
``google.rpc.BadRequest``, and every JSON example of ``docs/partners.md`` goes through it.

``make test`` installs the client's packages with ``npm ci``. Where Node.js or npm is missing
the test is skipped with one line, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import json_format

from gateway.ledger import Event
from gateway.pki import Jurisdiction, Role
from gateway.pki.bundle import TrustBundle
from tests.exchange.conftest import Trio, entry_request, write_trio_configs
from tests.interop.examples import ROOT, partner_examples
from tests.support import ALL, World, wait_for

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
CN, HK = Jurisdiction.CN, Jurisdiction.HK


@pytest.fixture(scope="module")
def node_js() -> str:
    """The ``node`` executable, with the client's packages installed."""
    node = shutil.which("node")
    missing = (
        "node not found" if node is None
        else "tests/interop/node_modules missing (make test runs npm ci)"
        if not (HERE / "node_modules" / "@grpc" / "grpc-js").is_dir()
        else ""
    )  # fmt: skip
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Node.js interop test cannot run under CI: {missing}")
        pytest.skip(f"Node.js interop test skipped: {missing} (install Node.js 20 and npm)")
    assert node is not None
    return node


@pytest.fixture
def trio(world: World, tmp_path: Path) -> Iterator[Trio]:
    """Three real nodes on loopback, peering with each other."""
    t = Trio(world, tmp_path, write_trio_configs(world, tmp_path))
    try:
        for j in ALL:
            t.start(j)
        yield t
    finally:
        t.close()


def _config(world: World, trio: Trio, tmp_path: Path, **extra: Any) -> Path:
    roots = tmp_path / "roots.pem"
    roots.write_bytes(TrustBundle.from_json(world.bundle.read_bytes()).pem())
    nodes = {
        j.value: {
            "address": trio.nodes[j].address,
            "serverName": trio.nodes[j].config.identity.dns_name,
            "certificate": str(world.cred(j, Role.PARTNER).certificate),
            "key": str(world.cred(j, Role.PARTNER).key),
        }
        for j in ALL
    }
    path = tmp_path / f"client-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps({"protos": str(ROOT / "protos"), "roots": str(roots),
                                "nodes": nodes, **extra}))  # fmt: skip
    return path


def _run(node_js: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node_js, str(HERE / "client.js"), *argv],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def _write(tmp_path: Path, name: str, request: dict[str, Any]) -> Path:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(request, ensure_ascii=False), encoding="utf-8")
    return path


def test_node_partner_submits_receives_acknowledges_and_decodes_bad_request(
    node_js: str, world: World, trio: Trio, tmp_path: Path
) -> None:
    examples = {e.name: e for e in partner_examples()}
    notice, invalid = examples["submit-notice"].request, examples["submit-invalid"].request
    config = _config(
        world, trio, tmp_path,
        origin="HK", recipient="CN",
        notice=str(_write(tmp_path, "notice", notice)),
        invalid=str(_write(tmp_path, "invalid", invalid)),
    )  # fmt: skip
    done = _run(node_js, "scenario", str(config))
    assert done.returncode == 0, done.stderr
    steps = {s["step"]: s for s in map(json.loads, done.stdout.splitlines())}
    message_id = notice["addressing"]["messageId"]

    assert steps["submitted"]["messageId"] == message_id
    assert steps["submitted"]["acceptedAt"].endswith("Z")
    assert steps["received"] == steps["received"] | {
        "node": "CN", "messageId": message_id, "origin": "JURISDICTION_HK",
        "kind": "MESSAGE_KIND_SEIZURE_NOTICE", "payload": "seizureNotice",
    }  # fmt: skip
    assert steps["acknowledged"]["duplicate"] is False
    assert steps["acknowledgedAll"] == {
        "step": "acknowledgedAll", "node": "CN", "acknowledged": 0, "duplicates": 1,
        "refused": [{"position": 1, "code": 5}],  # NOT_FOUND, the unknown id alone
    }  # fmt: skip
    fields = {v["field"] for v in steps["refused"]["fieldViolations"]}
    assert {"notice.container_numbers[0]", "notice.seized_at"} <= fields, fields
    assert steps["refused"]["code"] == "INVALID_ARGUMENT"
    assert steps["refused"]["statusCode"] == 3  # the same code, in the decoded google.rpc.Status

    # What the Node client did is in the ledgers: sent at HK, received and acknowledged at CN.
    acked = [
        r for r in trio.entries(CN, Event.ACKNOWLEDGED) if str(r.entry.message_id) == message_id
    ]
    assert len(acked) == 1
    assert int(steps["acknowledged"]["ledgerIndex"]) == acked[0].index


def test_a_failing_node_client_fails_the_test(node_js: str, tmp_path: Path) -> None:
    """The client's exit status carries failures: a node that is not there is exit 1."""
    config = tmp_path / "client.json"
    config.write_text(json.dumps({"protos": str(ROOT / "protos"), "roots": "/nonexistent"}))
    done = _run(node_js, "scenario", str(config))
    assert done.returncode == 1
    assert "interop client failed" in done.stderr


@pytest.mark.parametrize("example", partner_examples(), ids=lambda e: e.name)
def test_partner_doc_example_runs_against_a_real_node(
    node_js: str, world: World, trio: Trio, tmp_path: Path, example: Any
) -> None:
    config = _config(world, trio, tmp_path)
    if example.name == "delivery-status":  # about the documented notice: submit it first
        first = partner_examples()[0]
        _run(
            node_js,
            "call",
            str(config),
            "HK",
            first.method,
            str(_write(tmp_path, "n", first.request)),
        )
    done = _run(node_js, "call", str(config), "HK", example.method,
                str(_write(tmp_path, example.name, example.request)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (answer,) = map(json.loads, done.stdout.splitlines())
    if example.expected == "OK":
        assert answer["ok"], answer
    else:
        assert answer["code"] == example.expected, answer
        (bad,) = [d for d in answer["status"]["details"] if d["@type"] == "google.rpc.BadRequest"]
        assert bad["fieldViolations"], answer


def test_node_partner_bulk_loads_a_list_and_a_rerun_creates_nothing(
    node_js: str, world: World, trio: Trio, tmp_path: Path
) -> None:
    """``client.js bulk``: the documented loader (docs/partners.md) sends a JSON-lines list in
    PublishWatchlistEntries calls; refused entries come back with their field paths; a rerun
    of the same file answers every recorded entry as a duplicate; CN receives each once."""
    requests = [entry_request([CN]) for _ in range(120)]
    requests[75].entry.identifiers[0].value = "7123456"  # an HK BR number has 8 digits
    entries = tmp_path / "entries.jsonl"
    entries.write_text(
        "".join(json.dumps(json_format.MessageToDict(r)) + "\n" for r in requests),
        encoding="utf-8",
    )
    config = _config(world, trio, tmp_path)
    done = _run(node_js, "bulk", str(config), "HK", str(entries), "50")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["start"] for line in lines if line["step"] == "batch"] == [0, 50, 100]
    loaded = lines[-1]
    assert (loaded["step"], loaded["accepted"], loaded["duplicates"]) == ("loaded", 119, 0)
    (refused,) = loaded["refused"]
    assert (refused["position"], refused["code"]) == (25, 3)  # the 26th of the second call
    assert [v["field"] for v in refused["fieldViolations"]] == [
        "entries[25].entry.identifiers[0].value"
    ]

    again = _run(node_js, "bulk", str(config), "HK", str(entries), "50")
    assert again.returncode == 0, again.stderr
    loaded = json.loads(again.stdout.splitlines()[-1])
    assert (loaded["accepted"], loaded["duplicates"], len(loaded["refused"])) == (0, 119, 1)

    wanted = {r.addressing.message_id for i, r in enumerate(requests) if i != 75}

    def received() -> set[str]:
        ledger = trio.nodes[CN].ledger
        return {
            str(r.entry.message_id)
            for start in range(0, ledger.size(), 1000)
            for r in ledger.entries(start, ledger.size())
            if r.entry.event is Event.RECEIVED
        }

    wait_for(lambda: received() >= wanted, what="CN received the list")
    assert received() == wanted


def test_the_documented_bulk_publish_answers_per_entry(
    node_js: str, world: World, trio: Trio, tmp_path: Path
) -> None:
    (example,) = [e for e in partner_examples() if e.name == "bulk-publish"]
    config = _config(world, trio, tmp_path)
    done = _run(node_js, "call", str(config), "HK", example.method,
                str(_write(tmp_path, example.name, example.request)))  # fmt: skip
    assert done.returncode == 0, done.stderr
    (answer,) = map(json.loads, done.stdout.splitlines())
    results = answer["response"]["results"]
    assert [r["outcome"] for r in results] == ["BULK_OUTCOME_ACCEPTED", "BULK_OUTCOME_REFUSED"], (
        results
    )
    assert results[0]["accepted"]["messageId"] == results[0]["messageId"]
    assert results[1]["refused"]["code"] == 3
