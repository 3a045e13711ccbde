"""``customs-gateway audit`` in-process: exit codes, messages, help with examples."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.ledger import Ledger
from tests.audit.test_tamper import SIGNER, WITNESS
from tests.ledger.conftest import ORIGIN, make_entry

VERIFY = ["audit", "verify", "{db}", "--vkey", SIGNER.verifier.vkey]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    with Ledger.open(path, origin=ORIGIN, signer=SIGNER) as ledger:
        ledger.append_many([make_entry(i) for i in range(12)])
        ledger.checkpoint()
        ledger.append_many([make_entry(i) for i in range(12, 30)])
        ledger.checkpoint()
    return path


def test_verify_export_and_verify_again(
    db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vkey = tmp_path / "hk.vkey"
    vkey.write_text(SIGNER.verifier.vkey + "\n")
    assert main(["audit", "verify", str(db), "--vkey", str(vkey), "--no-witnesses"]) == 0
    out = capsys.readouterr()
    assert "witness policy: none (opted out: the log's operator alone vouches" in out.out
    assert f"ok: {ORIGIN}: 30 entries, 2 checkpoints, 1 consistency proof," in out.out
    assert "30/30 entries (100%)" in out.err
    export = tmp_path / "hk.export"
    assert main(["audit", "export", "--db", str(db), "--out", str(export)]) == 0
    assert (
        "exported 30 entries, 2 checkpoints, 0 signing certificates and 0 envelopes"
        in capsys.readouterr().out
    )
    argv = ["audit", "verify", str(export), "--vkey", SIGNER.verifier.vkey, "--json"]
    assert main([*argv, "--no-witnesses"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["ok"], result["entries"], result["checkpoints"]) == (True, 30, 2)


def test_a_bad_ledger_exits_1_naming_the_entry(
    db: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER ledger_entries_no_delete")
    conn.execute("DELETE FROM ledger_entries WHERE idx = 7")
    conn.commit()
    conn.close()
    argv = ["audit", "verify", str(db), "--vkey", SIGNER.verifier.vkey, "--no-witnesses"]
    assert main(argv) == 1
    assert "FAILED: entry 7 is missing (the next stored entry is 8)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["audit", "verify", "/nonexistent.db", "--vkey", "x"], "no such file"),
        (["audit", "verify", "{db}", "--vkey", "not-a-key"], "not <name>\\+<key id>"),
        (["audit", "export", "--db", "/nonexistent.db", "--out", "x"], "no such file"),
        (
            ["audit", "verify", "{db}", "--vkey", SIGNER.verifier.vkey],
            "the witness policy names no witness, so it would pass on nothing",
        ),
        (
            ["audit", "verify", "{db}", "--vkey", SIGNER.verifier.vkey, "--witnesses", ","],
            "the witness policy names no witness",
        ),
        (
            [*VERIFY, "--witnesses", "MO", "--quorum", "0"],
            "witness quorum 0 is below 1: it would pass on nothing",
        ),
        (
            [*VERIFY, "--witnesses", "MO", "--quorum", "2"],
            "witness quorum 2 is more than the 1 witnesses named",
        ),
        (
            ["audit", "verify", "{db}", "--vkey", SIGNER.verifier.vkey, "--witnesses", "HK,MO"],
            "HK cannot witness its own ledger",
        ),
        (
            ["audit", "verify", "{db}", "--vkey", SIGNER.verifier.vkey, "--witnesses", "XX"],
            "unknown jurisdiction 'XX'",
        ),
        (
            [*VERIFY, "--no-witnesses", "--quorum", "1"],
            "--no-witnesses cannot be combined",
        ),
    ],
    ids=[
        "missing-ledger",
        "bad-vkey",
        "missing-db",
        "no-witness-to-require",
        "empty-witness-list",
        "quorum-zero",
        "quorum-above-set",
        "own-jurisdiction-as-witness",
        "unknown-witness",
        "opt-out-and-policy",
    ],
)
def test_operator_mistakes_exit_2_with_one_line(
    db: Path, argv: list[str], match: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [a.replace("{db}", str(db)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    import re

    assert re.search(match, err), err


@pytest.mark.parametrize("command", ["verify", "export"])
def test_every_audit_command_has_help_with_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"customs-gateway audit {command} " in out.split("example")[1]


def test_witness_cosignatures_are_counted(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.notes import cosign

    with Ledger.open(db, origin=ORIGIN, signer=SIGNER) as ledger:
        cp = ledger.latest_checkpoint()
        assert cp is not None
        ledger.add_cosignature(cp.size, cosign(cp.checkpoint.body(), WITNESS, 1_700_000_001))
    argv = ["audit", "verify", str(db), "--vkey", SIGNER.verifier.vkey, "--json"]
    assert main([*argv, "--witness-vkey", WITNESS.verifier.vkey]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["cosignatures"], result["witness_policy"]) == (1, "every one of MO")
    assert result["cosigners"] == {"12": [], "30": ["MO"]}
