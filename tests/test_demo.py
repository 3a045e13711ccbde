"""``make demo`` keeps working: the whole scenario runs and tells what it verified."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.cli import main

pytestmark = pytest.mark.slow


def test_demo_runs_the_seed_case_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--dir", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    for expected in (
        "HK node -> CN node health over mutual TLS: SERVING",
        "MO: failing (attempts",
        "HK: delivered (receipt signed by HK",
        "hit: HK entry",
        "MO got seizure notice",
        "MO got watchlist entry",
        "cosigned by hk.customs-exchange/witness and mo.customs-exchange/witness",
        "Nodes stopped with SIGTERM: CN exit 0, HK exit 0, MO exit 0",
        "ok: CN, HK, MO: 4 sent, 4 received with the same digest, 4 receipts (4 signed receipts "
        "verified)",
        "audit reconcile with HK's and MO's ledgers: exit 1",
    ):
        assert expected in out, expected
    assert out.count("envelopes verified; root") == 3
    # the rollback is named from each witness's evidence: the log, both checkpoints, the witness
    tamper = out[out.index("15. What if an operator") :]
    assert re.search(r"HK's copy with its [1-9]\d* cosignature lines stripped", tamper), tamper
    # the stripped copy is named by audit verify's witness policy
    assert "audit verify of that copy (witness policy: every other jurisdiction): exit 1" in tamper
    assert re.search(
        r"FAILED: checkpoint of size \d+ \(the latest\) is cosigned by no required witness; the "
        r"policy needs every one of CN, MO \(missing CN, MO\): the log's operator alone vouches",
        tamper,
    ), tamper
    for witness in ("HK", "MO"):
        assert re.search(
            r"MISMATCH \[rolled-back\]: CN's ledger was rolled back: it holds (\d+) entries; "
            r"its latest checkpoint is \(origin cn.customs-exchange/ledger, size \1, root "
            r"[0-9a-f]{64}\), "
            rf"but {witness} cosigned \(origin cn.customs-exchange/ledger, size \d+, root "
            rf"[0-9a-f]{{64}}\) \(evidence: {witness} entry \d+\)",
            tamper,
        ), tamper
