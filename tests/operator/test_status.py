"""``customs-gateway status`` on real nodes: all well, a peer down, an expiring certificate,
JSON, a monitor certificate, and the refusals an operator may run into."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from gateway.cli import main
from gateway.errors import PermissionDeniedError
from gateway.pki import Jurisdiction, Role
from gateway.pki.expiry import certificate_serial
from gateway.pki.pem import write_public_file
from gateway.pki.revocation import build_crl
from gateway.server import Node
from gateway.status import (
    ProblemKind,
    assess,
    fetch_status,
    status_with_certificate,
    status_with_config,
)
from gateway.transport import ClientIdentity
from tests.exchange.conftest import Trio, notice_request
from tests.support import World, running_node, wait_for

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO


def _delivered_and_cosigned(trio: Trio) -> bool:
    status = status_with_config(trio.configs[CN])
    peers_done = all(p.backlog == 0 and p.last_success is not None for p in status.peers)
    checkpoint = status.checkpoint
    return (
        peers_done
        and checkpoint is not None
        and checkpoint.size >= 3  # sent + two receipts (witnessed entries may follow)
        and set(checkpoint.cosigners) == {"HK", "MO"}
    )


def test_all_well_exit_0_with_everything_on_one_screen(
    trio: Trio, capsys: pytest.CaptureFixture[str]
) -> None:
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK, MO]), timeout=10)
    wait_for(lambda: _delivered_and_cosigned(trio), what="delivery and cosignatures")
    capsys.readouterr()

    assert main(["status", "--config", str(trio.configs[CN])]) == 0

    out = capsys.readouterr().out
    node = trio.nodes[CN]
    assert f"node     spiffe://cn.customs-exchange/node/gateway at 127.0.0.1:{node.port}" in out
    assert "cosigned by HK, MO" in out
    for j in (HK, MO):
        assert f"  {j.value}    127.0.0.1:{trio.ports[j]}  yes" in out
    assert certificate_serial(node.signer.certificate) in out
    assert "CN root" in out
    assert "HK root" in out
    assert out.rstrip().endswith("all well")


def test_peer_down_exit_1_names_the_peer(trio: Trio, capsys: pytest.CaptureFixture[str]) -> None:
    trio.stop(MO)
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK, MO]), timeout=10)
    # the deliverer to MO has failed at least once: its error is in the status
    wait_for(lambda: trio.nodes[CN].deliverers[MO].failures > 0, what="a failed delivery to MO")
    capsys.readouterr()

    assert main(["status", "--config", str(trio.configs[CN])]) == 1

    out = capsys.readouterr().out
    problems = [line for line in out.splitlines() if line.startswith("PROBLEM ")]
    assert len(problems) == 1, out
    assert problems[0].startswith(f"PROBLEM peer MO (127.0.0.1:{trio.ports[MO]}) unreachable: ")
    assert "UNAVAILABLE" in problems[0]
    assert "1 message(s) waiting" in problems[0]
    assert f"  MO    127.0.0.1:{trio.ports[MO]}  NO" in out


def test_json_is_parseable_and_carries_the_problems(
    trio: Trio, capsys: pytest.CaptureFixture[str]
) -> None:
    trio.stop(HK)
    capsys.readouterr()

    assert main(["status", "--config", str(trio.configs[CN]), "--json"]) == 1

    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False
    assert doc["identity"] == "spiffe://cn.customs-exchange/node/gateway"
    assert [(p["jurisdiction"], p["reachable"]) for p in doc["peers"]] == [
        ("HK", False),
        ("MO", True),
    ]
    assert [p["kind"] for p in doc["problems"]] == ["peer-unreachable"]
    assert {c["name"] for c in doc["certificates"]} >= {"tls", "signing", "CN root"}
    dt.datetime.fromisoformat(doc["now"])


def test_expiring_signing_certificate_exit_1(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = world.issue(
        HK, Role.NODE, "gateway", signing=True, lifetime=dt.timedelta(days=3), tag="-short"
    )
    config = world.write_config(HK, tmp_path / "hk-data")
    text = config.read_text().replace(str(world.signing(HK).certificate), str(short.certificate))
    config.write_text(text.replace(str(world.signing(HK).key), str(short.key)))
    serial = certificate_serial(short.issued.certificate)
    with running_node(config) as node:
        capsys.readouterr()
        # the config says port 0: the address the node got is given beside it
        assert main(["status", "--config", str(config), node.address]) == 1
        out = capsys.readouterr().out
        problems = [line for line in out.splitlines() if line.startswith("PROBLEM ")]
        assert len(problems) == 1, out
        assert problems[0].startswith(
            f"PROBLEM signing certificate {serial} (spiffe://hk.customs-exchange/node/gateway) "
            "expires in 3.0 days"
        )
        assert "warning under 14 days" in problems[0]
        # a narrower window of the operator's own makes it no problem
        assert main(["status", "--config", str(config), node.address, "--warn-days", "2"]) == 0


def test_monitor_certificate_of_the_same_jurisdiction(
    world: World, hk_node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    monitor = world.issue(HK, Role.MONITOR, "prometheus")
    args = [
        "status",
        hk_node.address,
        "--cert",
        str(monitor.certificate),
        "--key",
        str(monitor.key),
        "--trust-bundle",
        str(world.bundle),
    ]
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "spiffe://hk.customs-exchange/node/gateway" in out
    assert "storage" not in out  # one process on SQLite: no replicas, no leases to show
    status = status_with_certificate(
        hk_node.address, monitor.certificate, monitor.key, world.bundle
    )
    assert (status.storage, status.replica, status.leases) == ("sqlite", "", ())


@pytest.mark.parametrize(
    ("who", "role"),
    [
        pytest.param(CN, Role.MONITOR, id="other-jurisdiction-monitor"),
        pytest.param(CN, Role.NODE, id="other-jurisdiction-node"),
        pytest.param(HK, Role.PARTNER, id="partner"),
        pytest.param(HK, Role.AUDITOR, id="auditor"),
    ],
)
def test_only_own_monitors_and_nodes_may_ask(
    world: World, hk_node: Node, who: Jurisdiction, role: Role
) -> None:
    cred = world.issue(who, role, "ops-probe")
    identity = ClientIdentity.from_files(cred.certificate, cred.key, world.bundle)
    with pytest.raises(PermissionDeniedError, match=r"rule status-own-operators: .* is a "):
        fetch_status(hk_node.address, identity, hk_node.config.identity, timeout=5)


def test_refusal_through_the_cli_is_one_line_exit_2(
    world: World, hk_node: Node, capsys: pytest.CaptureFixture[str]
) -> None:
    cred = world.issue(HK, Role.PARTNER, "ops-probe")
    args = ["status", hk_node.address, "--cert", str(cred.certificate), "--key", str(cred.key)]
    capsys.readouterr()
    assert main([*args, "--trust-bundle", str(world.bundle)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("customs-gateway: error: node spiffe://hk.customs-exchange/node/")
    assert "refused the status request: rule status-own-operators" in err[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param([], "give --config NODE.toml, or ADDRESS", id="nothing"),
        pytest.param(["127.0.0.1:1"], "ADDRESS needs --cert, --key, --trust-bundle", id="no-cert"),
        pytest.param(["--config", "/nonexistent.toml"], "file does not exist", id="no-config"),
    ],
)
def test_operator_mistakes_are_one_line_exit_2(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert message in err[0]


def test_node_down_is_exit_1(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = world.write_config(HK, tmp_path / "hk-data")
    with running_node(config) as node:
        address = node.address
    assert main(["status", "--config", str(config), address]) == 1
    out = capsys.readouterr().out
    assert out.startswith("PROBLEM node spiffe://hk.customs-exchange/node/gateway at ")
    assert "unreachable" in out


def test_assess_names_stuck_backlog_stale_crl_and_missing_cosigner(trio: Trio) -> None:
    """The judgement alone, on a real status moved forward in time (no sleeping)."""
    trio.stop(MO)
    trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK, MO]), timeout=10)
    size = trio.nodes[CN].ledger.size()
    wait_for(
        lambda: (trio.nodes[CN].ledger.checkpoint_size() or 0) >= size,
        what="a checkpoint of the notice",
    )
    status = status_with_config(trio.configs[CN])
    import dataclasses

    later = dataclasses.replace(status, now=status.now + dt.timedelta(minutes=10))
    kinds = {(p.kind, p.subject) for p in assess(later).problems}
    assert (ProblemKind.PEER_UNREACHABLE, "MO") in kinds
    assert (ProblemKind.BACKLOG_STUCK, "MO") in kinds
    assert (ProblemKind.COSIGNATURE_MISSING, "MO") in kinds
    assert (ProblemKind.BACKLOG_STUCK, "HK") not in kinds


def test_crls_in_force_are_listed_and_a_stale_one_is_a_problem(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fresh, stale = tmp_path / "hk.crl", tmp_path / "cn.crl"
    write_public_file(fresh, build_crl(world.cas[HK], [], number=7).public_bytes(Encoding.PEM))
    long_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    old = build_crl(world.cas[CN], [], number=3, now=long_ago, lifetime=dt.timedelta(days=1))
    write_public_file(stale, old.public_bytes(Encoding.PEM))
    config = world.write_config(HK, tmp_path / "hk-data", crls=[fresh, stale])
    with running_node(config) as node:
        capsys.readouterr()
        assert main(["status", "--config", str(config), node.address, "--json"]) == 1
        doc = json.loads(capsys.readouterr().out)
    by_issuer = {c["issuer"]: c for c in doc["crls"]}
    assert (by_issuer["HK"]["number"], by_issuer["CN"]["number"]) == (7, 3)
    assert by_issuer["CN"]["next_update"].startswith(
        (long_ago + dt.timedelta(days=1)).date().isoformat()
    )
    assert [p["message"] for p in doc["problems"]] == [
        f"CN CRL number 3 is past its next update {by_issuer['CN']['next_update']}: "
        "publish a new one"
    ]
