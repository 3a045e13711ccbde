"""``audit report`` on three real nodes: an exchange, an erased payload, a peer down, and a
ledger copy with a message removed; the page (and its JSON) shows all of it, and headless
Chromium renders it.

The scenario runs once for the module: CN, HK and MO exchange notices; CN's notice to HK is
erased at the end of its retention (the exchanges' clock moved past it); MO is stopped and CN
sends it a notice that stays pending; the three ledgers are exported; a copy of HK's export
loses the ``received`` entry of CN's notice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from gateway.audit import ExportSource, write_export_records
from gateway.audit.report import build_report, render_html
from gateway.cli import main
from gateway.domain.fixtures import timestamp
from gateway.ledger import Event, decode_record
from gateway.pki import Jurisdiction, Role
from gateway.pki.bundle import TrustBundle
from tests.exchange.conftest import CN, HK, MO, Trio, data_dir, notice_request, write_trio_configs
from tests.support import ALL, World, export_ledger, wait_for


@dataclass(frozen=True)
class Scenario:
    """The exports of the three ledgers, the tampered copy, and what happened."""

    root: Path
    bundle: Path
    exports: dict[str, Path]
    tampered_hk: Path
    erased_id: str  # CN's notice to HK whose payload was erased
    pending_id: str  # CN's notice to MO, sent while MO was down
    removed_index: int  # HK's received entry of the erased notice, removed from the copy
    short_serial: str  # HK's signing certificate, expiring in three days


def _cosigned(trio: Trio, j: Jurisdiction, *witnesses: Jurisdiction) -> bool:
    """``j``'s latest checkpoint is cosigned by ``witnesses`` and covers its ledger, but for
    ``witnessed`` entries (a witness's record of cosigning asks for no checkpoint of its own)."""
    ledger = trio.nodes[j].ledger
    latest = ledger.latest_checkpoint()
    if latest is None or not all(f"— {w.trust_domain}/witness " in latest.note for w in witnesses):
        return False
    tail = ledger.leaves(latest.size, ledger.size())
    return all(decode_record(leaf).entry.event is Event.WITNESSED for _, leaf in tail)


@pytest.fixture(scope="module")
def scenario(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("report")
    trio = Trio(world, root, write_trio_configs(world, root))
    # HK signs with a certificate that lapses in three days: the report says so.
    expiring = world.issue(
        HK, Role.NODE, "gateway", signing=True, lifetime=dt.timedelta(days=3), tag="-report"
    )
    config = trio.configs[HK]
    text = config.read_text().replace(str(world.signing(HK).certificate), str(expiring.certificate))
    config.write_text(text.replace(str(world.signing(HK).key), str(expiring.key)))
    try:
        for j in ALL:
            trio.start(j)
        now = dt.datetime.now(dt.UTC)
        short = notice_request(CN, [HK], now)
        short.notice.retain_until.CopyFrom(timestamp(now + dt.timedelta(hours=1)))
        erased = trio.partner(CN).SubmitSeizureNotice(short, timeout=10)
        trio.partner(HK).SubmitSeizureNotice(notice_request(HK, [CN, MO], now), timeout=10)
        trio.partner(MO).SubmitSeizureNotice(notice_request(MO, [CN], now), timeout=10)
        wait_for(lambda: len(trio.entries(CN, Event.RECEIPT)) == 1, what="HK's receipt at CN")
        wait_for(lambda: len(trio.entries(HK, Event.RECEIPT)) == 2, what="two receipts at HK")
        wait_for(lambda: len(trio.entries(MO, Event.RECEIPT)) == 1, what="CN's receipt at MO")
        later = now + dt.timedelta(hours=2)  # the retention of the first notice is over
        for j in (CN, HK):
            exchange = trio.nodes[j].exchange
            clock = exchange._clock
            exchange._clock = lambda: later
            try:
                assert exchange.erase_expired() == 1
            finally:
                exchange._clock = clock
        for j in ALL:  # every ledger's last checkpoint cosigned by both others
            others = [w for w in ALL if w is not j]
            wait_for(lambda j=j, o=others: _cosigned(trio, j, *o), what=f"{j.value} cosigned")
        trio.stop(MO)  # the peer is down from here on: CN's next checkpoint misses MO
        pending = trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [MO]), timeout=10)
        wait_for(lambda: _cosigned(trio, CN, HK), what="CN's checkpoint cosigned by HK")
        trio.stop(CN)
        trio.stop(HK)
        exports = {}
        for j in ALL:
            exports[j.value] = root / f"{j.value.lower()}.export"
            export_ledger(data_dir(root, j), exports[j.value])
        tampered, removed = _without_received(exports["HK"], erased.message_id, root)
        serial = f"{expiring.issued.certificate.serial_number:x}"
        yield Scenario(
            root,
            world.bundle,
            exports,
            tampered,
            erased.message_id,
            pending.message_id,
            removed,
            serial,
        )
    finally:
        trio.close()


def _without_received(export: Path, message_id: str, root: Path) -> tuple[Path, int]:
    """A copy of ``export`` without the received entry of ``message_id``."""
    source = ExportSource(export)
    leaves = [leaf for _, leaf in source.entries()]
    (removed,) = (
        i
        for i, leaf in enumerate(leaves)
        if leaf[17] == Event.RECEIVED and str(decode_record(leaf).entry.message_id) == message_id
    )
    out = root / "hk-tampered.export"
    write_export_records(
        out,
        source.origin,
        leaves[:removed] + leaves[removed + 1 :],
        source.checkpoints(),
        source.certificates(),
        (source.envelopes() or {}).values(),
    )
    return out, removed


def _report(
    scenario: Scenario, hk: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, str]:
    args = [str(scenario.exports["CN"]), str(hk), str(scenario.exports["MO"])]
    bundle = scenario.bundle
    code = main(
        ["audit", "report", *args, "--trust-bundle", str(bundle), "--out", str(out), *extra]
    )
    return code, capsys.readouterr().out


def test_honest_ledgers_report_ok_with_the_erasure_and_the_pending_message(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    # MO is known to be down: the auditor states a policy of one witness of the two.
    code, stdout = _report(scenario, scenario.exports["HK"], out, capsys, "--json", "--quorum", "1")
    assert code == 0, stdout
    assert stdout.startswith("ok: 3 ledgers, 0 failures; report written to ")
    report = json.loads(out.read_text())
    assert report["failures"] == []
    assert report["ok"] is True
    by = {led["jurisdiction"]: led for led in report["ledgers"]}
    for j in ("CN", "HK"):
        (erasure,) = by[j]["erasures"]
        assert erasure["message_id"] == scenario.erased_id
        assert erasure["origin"] == "CN"
    assert by["MO"]["erasures"] == []
    for j, led in by.items():
        assert led["ok"], led["failures"]
        assert led["sha256"] == hashlib.sha256(scenario.exports[j].read_bytes()).hexdigest()
        statuses = {s["name"]: s["status"] for s in led["steps"]}
        one = len(led["checkpoints"]) == 1  # no consistency proof between two checkpoints
        assert statuses.pop("consistency") == ("nothing checked" if one else "passed")
        assert statuses.pop("stored hashes") == "not applicable"  # exports have none
        assert set(statuses.values()) == {"passed"}
        assert led["policy"] == "1 of " + ", ".join(c for c in ("CN", "HK", "MO") if c != j)
        assert led["checkpoints"], "a ledger without checkpoints in the report"
        assert all(cp["time_ms"] for cp in led["checkpoints"])
    # MO's last checkpoint was cosigned by both before it went down; CN's last one, made
    # while MO was down, by HK only.
    assert sorted(by["MO"]["checkpoints"][-1]["cosigners"]) == [
        "cn.customs-exchange/witness",
        "hk.customs-exchange/witness",
    ]
    assert by["CN"]["checkpoints"][-1]["cosigners"] == ["hk.customs-exchange/witness"]
    matrix = {(c["sender"], c["recipient"]): c for c in report["reconciliation"]["matrix"]}
    assert len(matrix) == 6
    cn_mo = matrix[("CN", "MO")]
    assert (cn_mo["sent"], cn_mo["received"], cn_mo["pending"], cn_mo["ok"]) == (1, 0, 1, True)
    assert any(scenario.pending_id in p for p in report["reconciliation"]["pending"])
    hk_cn = matrix[("HK", "CN")]
    assert (hk_cn["sent"], hk_cn["received"], hk_cn["receipts"]) == (1, 1, 1)


def test_the_peer_down_leaves_a_checkpoint_without_its_cosignature_under_the_default_policy(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    code, stdout = _report(scenario, scenario.exports["HK"], out, capsys, "--json")
    assert code == 1, stdout
    report = json.loads(out.read_text())
    (failure,) = report["failures"]
    cn = report["ledgers"][0]
    assert (failure["ledger"], failure["step"], failure["category"]) == (
        "cn.customs-exchange/ledger",
        "witness policy",
        "witness-policy",
    )
    assert failure["checkpoint_size"] == cn["checkpoints"][-1]["size"]
    assert "(missing MO)" in failure["message"]
    assert "the log's operator alone vouches for this history" in failure["message"]
    assert cn["policy"] == "every one of HK, MO"
    (step,) = [s for s in cn["steps"] if s["name"] == "witness policy"]
    assert (step["status"], step["failures"]) == ("failed", [failure["number"]])
    assert cn["checkpoints"][-1]["cosigners"] == ["hk.customs-exchange/witness"]
    assert all(led["ok"] for led in report["ledgers"][1:])


def test_a_removed_message_is_a_numbered_failure_in_its_ledger_and_the_matrix(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.json"
    code, stdout = _report(scenario, scenario.tampered_hk, out, capsys, "--json", "--quorum", "1")
    assert code == 1, stdout
    report = json.loads(out.read_text())
    assert report["ok"] is False
    failures = report["failures"]
    assert [f["number"] for f in failures] == list(range(1, len(failures) + 1))
    hk = [f for f in failures if f["ledger"] == "hk.customs-exchange/ledger"]
    assert hk, failures
    assert hk[0]["index"] == scenario.removed_index  # the first bad entry is the removed one
    assert f"entry {scenario.removed_index}" in hk[0]["message"]
    (missing,) = [f for f in failures if f["problem"] == "missing-received"]
    assert missing["message_id"] == scenario.erased_id
    assert missing["ledger"] == "cn.customs-exchange/ledger"
    assert "HK's ledger has no received entry for it from CN" in missing["message"]
    matrix = {(c["sender"], c["recipient"]): c for c in report["reconciliation"]["matrix"]}
    assert matrix[("CN", "HK")]["failures"] == [missing["number"]]
    assert matrix[("CN", "HK")]["received"] == 0
    assert all(c["ok"] for k, c in matrix.items() if k != ("CN", "HK"))
    # What CN and MO witnessed of HK's log no longer matches the copy: named against HK.
    witnessed = [f for f in failures if f["step"] == "reconciliation" and f is not missing]
    assert witnessed, failures
    for f in witnessed:
        assert f["problem"] in ("forked", "rolled-back"), f
        assert f["ledger"] == "hk.customs-exchange/ledger"
        assert f["message"].startswith("HK's log ")
    assert f"#{missing['number']} cn.customs-exchange/ledger reconciliation" in stdout


def test_the_html_page_shows_every_failure_highlighted_and_loads_nothing(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report.html"
    code, _ = _report(scenario, scenario.tampered_hk, out, capsys)  # the default policy
    assert code == 1
    page = out.read_text()
    data = tmp_path / "report.json"
    _report(scenario, scenario.tampered_hk, data, capsys, "--json")  # the default policy
    failures = json.loads(data.read_text())["failures"]
    for f in failures:
        row = re.search(rf'<tr class="fail" id="failure-{f["number"]}">(.*?)</tr>', page, re.S)
        assert row is not None, f
        if f["index"] is not None:
            assert f'<td class="num">{f["index"]}</td>' in row.group(1)
    assert page.count('<svg xmlns="http://www.w3.org/2000/svg"') == 3
    assert "checkpoint-point" in page
    assert scenario.erased_id in page
    assert 'class="cell fail"' in page
    assert not re.search(r"<script|<link|@import|url\(|https?://(?!www\.w3\.org/2000/svg)", page)
    assert "content=\"default-src 'none'; style-src 'unsafe-inline'" in html.unescape(page)


# --- the browser test -------------------------------------------------------------------------


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed: .ci/run installs Debian's chromium package")
        pytest.skip("headless Chromium not installed (apt-get install chromium); CI runs it")
    return found


def _headless(chromium: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp_path / "chromium-profile"
    return subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",  # CI runs as root
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_headless_chromium_renders_the_failures_and_the_charts(
    scenario: Scenario, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chromium = _chromium()
    out = tmp_path / "report.html"
    assert _report(scenario, scenario.tampered_hk, out, capsys)[0] == 1
    url = out.resolve().as_uri()
    dom = _headless(chromium, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    assert "Ledger audit report" in rendered
    assert re.search(r'<tr class="fail" id="failure-1">', rendered)
    assert "missing-received" in rendered or "has no received entry" in rendered
    assert rendered.count("<svg") >= 3
    assert "checkpoint-point" in rendered
    shot = tmp_path / "report.png"
    result = _headless(
        chromium,
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        "--hide-scrollbars",
        url,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    colours = _png_colours(shot.read_bytes())
    assert len(colours) > 50, "the screenshot is (nearly) blank"
    # The failure highlight (#ffebe9) and the verdict's red text are on the page as drawn.
    assert (0xFF, 0xEB, 0xE9) in colours
    keep = os.environ.get("REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def _png_colours(data: bytes) -> set[tuple[int, int, int]]:
    """The distinct RGB colours of an 8-bit RGB or RGBA PNG (standard library only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height = int.from_bytes(header[:4], "big"), int.from_bytes(header[4:8], "big")
    depth, colour_type = header[8], header[9]
    assert (depth, colour_type) in ((8, 2), (8, 6)), f"PNG of depth {depth}, type {colour_type}"
    bpp = 3 if colour_type == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    previous = bytearray(stride)
    colours: set[tuple[int, int, int]] = set()
    for y in range(height):
        start = y * (stride + 1)
        kind, row = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                row[i] = (row[i] + row[i - bpp]) & 0xFF
        elif kind == 2:
            row = bytearray((a + b) & 0xFF for a, b in zip(row, previous, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = row[i - bpp] if i >= bpp else 0
                row[i] = (row[i] + ((left + previous[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = row[i - bpp] if i >= bpp else 0
                b, c = previous[i], previous[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                row[i] = (row[i] + pred) & 0xFF
        if y % 4 == 0:  # every fourth row is enough to see what is drawn
            colours.update((row[i], row[i + 1], row[i + 2]) for i in range(0, stride, bpp * 2))
        previous = row
    return colours


def test_a_certificate_about_to_expire_is_flagged_without_failing_the_audit(
    scenario: Scenario, world: World
) -> None:
    """HK signs with a certificate that lapses in three days: the report flags it wherever it
    is carried; what it signed while valid still verifies, after it expired too."""
    bundle = TrustBundle.from_json(scenario.bundle.read_bytes())
    paths = [scenario.exports[j] for j in ("CN", "HK", "MO")]
    report = build_report(paths, bundle, quorum=1)
    assert report.ok, report.failures
    for led in report.ledgers:
        (short,) = [c for c in led.certificates if c.serial == scenario.short_serial]
        assert short.status == "expiring-soon"
        assert short.role == ("log" if led.jurisdiction == "HK" else "witness")
        others = {c.status for c in led.certificates if c.serial != scenario.short_serial}
        assert others == {"valid"}
    page = render_html(report)
    assert page.count('<span class="badge warn">expiring-soon</span>') == 3
    later = build_report(
        paths, bundle, now=dt.datetime.now(dt.UTC) + dt.timedelta(days=4), quorum=1
    )
    assert later.ok
    (hk,) = [led for led in later.ledgers if led.jurisdiction == "HK"]
    (short,) = [c for c in hk.certificates if c.serial == scenario.short_serial]
    assert short.status == "expired"
