"""``audit report`` on ledgers written directly: hostile ledger text stays text, operator
mistakes are one line and exit 2, one ledger alone is reported without a reconciliation."""

from __future__ import annotations

import base64
import html
import json
import subprocess
import sys
import uuid
from html.parser import HTMLParser
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization

from gateway.audit import ExportSource, write_export, write_export_records
from gateway.cli import main
from gateway.pki import Jurisdiction
from tests.audit.nodes import NodeLedger, envelope
from tests.support import World

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO
A = uuid.UUID(int=0xA1)
HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&"
HOSTILE_NAME = "<img/src=x/onerror=alert(3)>"  # a signer name has no spaces


@pytest.fixture
def exports(world: World, tmp_path: Path) -> dict[str, Path]:
    """CN sent A to HK, HK received and receipted it; both checkpoints cosigned."""
    paths = {}
    a = envelope(world, CN, HK, A)
    with (
        NodeLedger(world, CN, tmp_path / "cn.db") as cn,
        NodeLedger(world, HK, tmp_path / "hk.db") as hk,
    ):
        cn.sent(a)
        hk.received(a, CN)
        cn.receipt(a, HK)
        cn.checkpoint(HK, MO)
        hk.checkpoint(CN, MO)
    certificates = [
        world.signing(j).issued.certificate.public_bytes(serialization.Encoding.DER)
        for j in (CN, HK, MO)
    ]  # what `audit export --cert` adds: the signers of the checkpoints and cosignatures
    for code in ("cn", "hk"):
        paths[code] = tmp_path / f"{code}.export"
        write_export(tmp_path / f"{code}.db", paths[code], certificates)
    return paths


def _run(*args: object) -> int:
    return main(["audit", "report", *map(str, args)])


def test_two_honest_ledgers_give_exit_0_and_a_matching_matrix(
    world: World, exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.json"
    assert (
        _run(exports["cn"], exports["hk"], "--trust-bundle", world.bundle, "--out", out, "--json")
        == 0
    )
    assert "ok: 2 ledgers, 0 failures" in capsys.readouterr().out
    report = json.loads(out.read_text())
    (cn_hk, hk_cn) = report["reconciliation"]["matrix"]
    assert (cn_hk["sender"], cn_hk["sent"], cn_hk["received"], cn_hk["receipts"]) == (
        "CN",
        1,
        1,
        1,
    )
    assert (hk_cn["sent"], hk_cn["ok"]) == (0, True)
    cn = report["ledgers"][0]
    assert cn["checkpoints"][0]["cosigners"] == [
        "hk.customs-exchange/witness",
        "mo.customs-exchange/witness",
    ]
    assert [s["status"] for s in cn["steps"]].count("failed") == 0


def test_one_ledger_is_reported_without_reconciliation(
    world: World, exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "r.html"
    assert _run(exports["hk"], "--trust-bundle", world.bundle, "--out", out) == 0
    page = out.read_text()
    assert "One ledger only: nothing to reconcile it with." in page
    assert "Every ledger verified" in page


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attributes: set[str] = set()
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attributes.update(name for name, _ in attrs)

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_hostile_text_from_a_ledger_is_shown_as_text_never_as_markup(
    world: World, exports: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A copy of HK's export whose origin line and an extra checkpoint note carry markup: the
    # origin is attacker-chosen, the note's signer name and text come from the file.
    source = ExportSource(exports["hk"])
    hostile = tmp_path / "hostile.export"
    signature = base64.b64encode(b"\x01\x02\x03\x04" + bytes(64)).decode()
    note = f"{HOSTILE}\n7\n{base64.b64encode(bytes(32)).decode()}\n\n— {HOSTILE_NAME} {signature}\n"
    write_export_records(
        hostile,
        HOSTILE,
        (leaf for _, leaf in source.entries()),
        [*source.checkpoints(), note],
        source.certificates(),
        (source.envelopes() or {}).values(),
    )
    out = tmp_path / "r.html"
    code = _run(exports["cn"], hostile, "--trust-bundle", world.bundle, "--out", out)
    assert code == 1
    page = out.read_text()
    parsed = _Tags()
    parsed.feed(page)
    assert parsed.tags <= {
        "html",
        "head",
        "meta",
        "title",
        "style",
        "body",
        "main",
        "h1",
        "h2",
        "h3",
        "div",
        "p",
        "section",
        "table",
        "thead",
        "tbody",
        "tr",
        "th",
        "td",
        "span",
        "strong",
        "a",
        "ul",
        "li",
        "svg",
        "line",
        "text",
        "path",
        "circle",
    }, parsed.tags
    assert not any(a.startswith("on") for a in parsed.attributes)
    for text in (HOSTILE, HOSTILE_NAME):
        assert text not in page
        assert html.escape(text, quote=True) in page
        assert any(text in shown for shown in parsed.text)  # shown to the auditor, as text
    data = tmp_path / "r.json"
    assert (
        _run(exports["cn"], hostile, "--trust-bundle", world.bundle, "--out", data, "--json") == 1
    )
    report = json.loads(data.read_text())
    assert report["ledgers"][1]["origin"] == HOSTILE
    assert any("<script>alert(1)</script>" in f["message"] for f in report["failures"])
    (checkpoint,) = [c for c in report["ledgers"][1]["checkpoints"] if c["size"] == 7]
    assert checkpoint["signatures"][0]["name"] == HOSTILE_NAME
    assert checkpoint["status"] == "failed"


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing-ledger", "no such file: "),
        ("not-a-ledger", "is neither a ledger database nor a ledger export"),
        ("same-origin-twice", "two ledgers of the same origin among"),
        ("bad-bundle", "trust bundle is not JSON"),
        ("no-out-directory", "no such directory for --out: "),
        ("impossible-quorum", "witness quorum 3 is more than the 2 witnesses named"),
        ("opt-out-and-quorum", "--no-witnesses cannot be combined with --witnesses or --quorum"),
        ("own-witness-only", "the witness policy names no witness, so it would pass on nothing"),
    ],
)
def test_operator_mistakes_are_one_line_and_exit_2(
    world: World,
    exports: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    case: str,
    expected: str,
) -> None:
    ledgers: list[Path] = [exports["cn"], exports["hk"]]
    bundle, out = world.bundle, tmp_path / "r.html"
    policy: list[str] = []
    if case == "impossible-quorum":
        policy = ["--quorum", "3"]
    elif case == "opt-out-and-quorum":
        policy = ["--no-witnesses", "--quorum", "1"]
    elif case == "own-witness-only":
        ledgers = [exports["cn"]]
        policy = ["--witnesses", "CN"]
    if case == "missing-ledger":
        ledgers.append(tmp_path / "mo.export")
    elif case == "not-a-ledger":
        ledgers.append(tmp_path / "notes.txt")
        ledgers[-1].write_text("hello\n")
    elif case == "same-origin-twice":
        ledgers.append(exports["cn"])
    elif case == "bad-bundle":
        bundle = tmp_path / "bundle.json"
        bundle.write_text("{")
    elif case == "no-out-directory":
        out = tmp_path / "nowhere" / "r.html"
    assert _run(*ledgers, "--trust-bundle", bundle, "--out", out, *policy) == 2
    err = capsys.readouterr().err
    assert expected in err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not out.exists()


def test_the_report_loads_nothing_of_the_node() -> None:
    """Like the verifier it runs: no writer, exchange, server, transport or gRPC."""
    script = (
        "import json, sys\n"
        "from gateway.audit.report import build_report, render_html\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    loaded = json.loads(out)
    assert "gateway.audit._report_html" in loaded
    forbidden = (
        "gateway.ledger",
        "gateway.exchange",
        "gateway.server",
        "gateway.store",
        "gateway.transport",
        "grpc",
    )
    assert [m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden)] == []
