"""The audit report as one self-contained HTML page: no script, no network, inline SVG.

Everything that comes from a ledger (origin lines, signer names, message ids, failure
messages that quote them) is attacker-influenced: every text and attribute value goes through
:func:`_esc` by construction (:func:`_el` escapes whatever is not already :class:`_Markup`),
and the page's Content-Security-Policy forbids scripts and any fetch, so even a missed escape
could neither run nor call home.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Iterable
from typing import Any

from gateway.audit._report import (
    STEPS,
    AuditReport,
    CheckpointRow,
    FailureRow,
    LedgerReport,
    MatrixCell,
)

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'"
_CSS = """
:root { color-scheme: light; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1b1f24;
  margin: 0; background: #f5f6f8; }
main { max-width: 1100px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 24px; margin: 0 0 4px; } h2 { font-size: 19px; margin: 32px 0 10px; }
h3 { font-size: 15px; margin: 20px 0 8px; }
.meta { color: #57606a; margin-bottom: 16px; }
.verdict { padding: 14px 18px; border-radius: 8px; font-size: 17px; font-weight: 600; }
.verdict.ok { background: #dafbe1; color: #116329; border: 1px solid #4ac26b; }
.verdict.failed { background: #ffebe9; color: #a40e26; border: 1px solid #ff8182; }
section.card { background: #fff; border: 1px solid #d0d7de; border-radius: 8px;
  padding: 4px 18px 16px; margin-top: 18px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid #e5e8eb;
  vertical-align: top; }
th { background: #f6f8fa; font-weight: 600; font-size: 13px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
code, .mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  font-size: 12.5px; overflow-wrap: anywhere; }
tr.fail td { background: #ffebe9; }
tr.fail td:first-child { border-left: 4px solid #cf222e; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; white-space: nowrap; }
.badge.passed, .badge.ok { background: #dafbe1; color: #116329; }
.badge.failed { background: #cf222e; color: #fff; }
.badge.skipped { background: #eaeef2; color: #57606a; }
.badge.warn { background: #fff8c5; color: #7d4e00; }
a.fref { color: #a40e26; font-weight: 600; margin-right: 4px; }
.matrix td, .matrix th { text-align: center; }
.matrix td.cell { min-width: 150px; }
.matrix td.cell.fail { background: #ffebe9; border: 2px solid #cf222e; }
.matrix td.cell.good { background: #f0fff4; }
.matrix td.self { background: #eaeef2; color: #8c959f; }
.small { font-size: 12px; color: #57606a; }
table.failures td:nth-child(2) { white-space: nowrap; }
svg.chart { background: #fff; border: 1px solid #e5e8eb; border-radius: 6px; }
ul.plain { margin: 4px 0; padding-left: 20px; }
@media print {
  body { background: #fff; font-size: 11px; }
  main { max-width: none; padding: 0; }
  * { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
  section.card { break-inside: auto; border: none; padding: 0; }
  tr, svg.chart { break-inside: avoid; }
  a { color: inherit; text-decoration: none; }
}
"""


class _Markup(str):
    """Text already safe to place in HTML (built by _el from escaped parts)."""


def _esc(value: object) -> _Markup:
    if isinstance(value, _Markup):
        return value
    return _Markup(html.escape(str(value), quote=True))


def _el(tag: str, *children: Any, **attrs: object) -> _Markup:
    """An element: attribute values and text children escaped, _Markup children kept."""
    parts = [f"<{tag}"]
    for name, value in attrs.items():
        if value is None or value is False:
            continue
        parts.append(f' {name.rstrip("_").replace("_", "-")}="{_esc(value)}"')
    parts.append(">")
    parts.extend(_esc(c) for c in _flatten(children))
    parts.append(f"</{tag}>")
    return _Markup("".join(parts))


def _flatten(children: Iterable[Any]) -> Iterable[Any]:
    for child in children:
        if child is None:
            continue
        if isinstance(child, list | tuple):
            yield from _flatten(child)
        else:
            yield child


def _time(ms: int | None) -> str:
    if ms is None:
        return "—"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _badge(status: str) -> _Markup:
    kind = {
        "passed": "passed",
        "failed": "failed",
        "not verified": "skipped",
        "not applicable": "skipped",
        "nothing checked": "skipped",
    }.get(status, "warn")
    return _el("span", status, class_=f"badge {kind}")


def _frefs(numbers: Iterable[int]) -> list[_Markup]:
    return [_el("a", f"#{n}", href=f"#failure-{n}", class_="fref") for n in numbers]


def _failures_table(failures: list[FailureRow]) -> _Markup:
    rows = [
        _el(
            "tr",
            _el("td", _el("a", f"#{f.number}", href=f"#{f.anchor}"), class_="num"),
            _el("td", _el("span", f.ledger or "—", class_="mono")),
            _el("td", f.step),
            _el("td", "—" if f.index is None else f.index, class_="num"),
            _el("td", "—" if f.checkpoint_size is None else f.checkpoint_size, class_="num"),
            _el("td", _el("span", f.message, class_="mono")),
            class_="fail",
            id=f.anchor,
        )
        for f in failures
    ]
    head = _el(
        "tr",
        _el("th", "#", class_="num"),
        _el("th", "ledger"),
        _el("th", "step"),
        _el("th", "entry index", class_="num"),
        _el("th", "checkpoint size", class_="num"),
        _el("th", "what failed"),
    )
    return _el("table", _el("thead", head), _el("tbody", rows), class_="failures")


def _summary(report: AuditReport) -> _Markup:
    head = _el(
        "tr",
        *[
            _el("th", h, class_="num" if h in {"entries", "checkpoints", "erasures"} else None)
            for h in (
                "ledger",
                "file",
                "entries",
                "checkpoints",
                "latest checkpoint",
                "erasures",
                "result",
            )
        ],
    )
    rows = []
    for led in report.ledgers:
        latest = led.checkpoints[-1] if led.checkpoints else None
        latest_text: Any = "none"
        if latest is not None:
            latest_text = [
                f"size {latest.size}, cosigned by ",
                ", ".join(latest.cosigners) or "nobody",
            ]
        rows.append(
            _el(
                "tr",
                _el("td", _el("a", led.origin, href=f"#ledger-{led.jurisdiction or 'x'}")),
                _el("td", _el("span", led.path, class_="mono")),
                _el("td", led.entries, class_="num"),
                _el("td", len(led.checkpoints), class_="num"),
                _el("td", latest_text),
                _el("td", len(led.erasures), class_="num"),
                _el(
                    "td",
                    _badge("passed" if led.ok else "failed"),
                    " ",
                    _frefs(f.number for f in led.failures),
                ),
                class_=None if led.ok else "fail",
            )
        )
    return _el("table", _el("thead", head), _el("tbody", rows), class_="summary")


def _matrix(report: AuditReport) -> _Markup:
    codes = [led.jurisdiction for led in report.ledgers if led.jurisdiction]
    cells = {(c.sender, c.recipient): c for c in report.matrix}
    head = _el("tr", _el("th", "sender ↓ / recipient →"), [_el("th", c) for c in codes])
    rows = []
    for sender in codes:
        tds = [_el("th", sender)]
        for recipient in codes:
            cell = cells.get((sender, recipient))
            if cell is None:
                tds.append(_el("td", "—", class_="self"))
            else:
                tds.append(_matrix_cell(cell))
        rows.append(_el("tr", tds))
    return _el("table", _el("thead", head), _el("tbody", rows), class_="matrix")


def _matrix_cell(cell: MatrixCell) -> _Markup:
    lines = [
        _el("div", f"{cell.sent} sent · {cell.received} received"),
        _el("div", f"{cell.receipts} receipts", class_="small"),
    ]
    if cell.pending:
        lines.append(_el("div", f"{cell.pending} pending", class_="small"))
    if cell.refused:
        lines.append(_el("div", f"{cell.refused} refused", class_="small"))
    verdict = (
        _el("span", "nothing exchanged", class_="small")
        if cell.ok and not (cell.sent or cell.received or cell.receipts)
        else _el("span", "matches", class_="badge ok")
        if cell.ok
        else [
            _el("span", f"{len(cell.failures)} mismatch", class_="badge failed"),
            " ",
            _frefs(cell.failures),
        ]
    )
    lines.append(_el("div", verdict))
    return _el(
        "td",
        lines,
        class_="cell " + ("good" if cell.ok else "fail"),
        title=f"{cell.sender} to {cell.recipient}",
    )


def _chart(led: LedgerReport) -> _Markup:
    """Size over time: the signed checkpoints (red when a failure names them) and the entries
    not yet under a checkpoint (dashed)."""
    width, height, left, right, top, bottom = 760, 240, 62, 18, 30, 42
    points = sorted(
        ((cp.time_ms, cp.size, cp) for cp in led.checkpoints if cp.time_ms is not None),
        key=lambda p: (p[0], p[1]),
    )
    times = [p[0] for p in points]
    if led.last_time_ms is not None:
        times.append(led.last_time_ms)
    if led.first_time_ms is not None:
        times.append(led.first_time_ms)
    label = f"size of {led.origin} over time"
    if not times:
        return _el("p", "No entries and no checkpoints: nothing to chart.", class_="small")
    t0, t1 = min(times), max(times)
    top_size = max([led.entries, *(p[1] for p in points), 1])
    span = max(t1 - t0, 1)

    def x(t: int) -> float:
        return round(left + (t - t0) / span * (width - left - right), 1)

    def y(size: int) -> float:
        return round(height - bottom - size / top_size * (height - top - bottom), 1)

    parts: list[_Markup] = [_el("title", label)]
    for frac in (0, 0.5, 1):
        value = round(top_size * frac)
        parts.append(
            _el("line", x1=left, x2=width - right, y1=y(value), y2=y(value), stroke="#e5e8eb")
        )
        parts.append(
            _el(
                "text",
                value,
                x=left - 6,
                y=y(value) + 4,
                text_anchor="end",
                font_size=11,
                fill="#57606a",
            )
        )
    axis_y = height - bottom
    parts.append(_el("line", x1=left, x2=width - right, y1=axis_y, y2=axis_y, stroke="#8c959f"))
    parts.append(_el("line", x1=left, x2=left, y1=top, y2=axis_y, stroke="#8c959f"))
    parts.append(_el("text", _time(t0), x=left, y=axis_y + 16, font_size=11, fill="#57606a"))
    parts.append(
        _el(
            "text",
            _time(t1),
            x=width - right,
            y=axis_y + 16,
            font_size=11,
            fill="#57606a",
            text_anchor="end",
        )
    )
    parts.append(_el("text", "entries (signed size)", x=left, y=14, font_size=11, fill="#57606a"))
    if points:
        path = [f"M {x(points[0][0])} {y(0)}"]
        for t, size, _ in points:
            path.append(f"H {x(t)} V {y(size)}")
        parts.append(
            _el(
                "path",
                d=" ".join(path),
                fill="none",
                stroke="#0969da",
                stroke_width=2,
                class_="size-line",
            )
        )
        last_t, last_size = points[-1][0], points[-1][1]
    else:
        last_t, last_size = t0, 0
    if led.last_time_ms is not None and led.entries > last_size:
        parts.append(
            _el(
                "path",
                d=f"M {x(last_t)} {y(last_size)} L {x(led.last_time_ms)} {y(led.entries)}",
                fill="none",
                stroke="#8c959f",
                stroke_width=2,
                stroke_dasharray="5 4",
                class_="unsigned-tail",
            )
        )
    for t, size, cp in points:
        parts.append(
            _el(
                "circle",
                _el(
                    "title",
                    f"checkpoint of size {size} at {_time(t)}: {cp.status}",
                ),
                cx=x(t),
                cy=y(size),
                r=5 if cp.ok else 7,
                fill=_POINT[cp.status],
                stroke="#fff",
                stroke_width=1.5,
                class_=f"checkpoint-point {cp.status.replace(' ', '-')}",
            )
        )
    return _el(
        "svg",
        parts,
        xmlns="http://www.w3.org/2000/svg",
        width=width,
        height=height,
        viewBox=f"0 0 {width} {height}",
        role="img",
        aria_label=label,
        class_="chart",
    )


_POINT = {"passed": "#1a7f37", "failed": "#cf222e", "not verified": "#8c959f"}


def _steps(led: LedgerReport) -> _Markup:
    rows = [
        _el(
            "tr",
            _el("td", "—" if s.number == 0 else s.number, class_="num"),
            _el("td", _el("strong", s.name), _el("div", s.description, class_="small")),
            _el("td", _badge(s.status)),
            _el("td", s.checked),
            _el("td", _frefs(s.failures)),
            class_="fail" if s.status == "failed" else None,
        )
        for s in led.steps
    ]
    head = _el(
        "tr",
        _el("th", "step", class_="num"),
        _el("th", "check"),
        _el("th", "result"),
        _el("th", "what was checked"),
        _el("th", "failures"),
    )
    return _el("table", _el("thead", head), _el("tbody", rows), class_="steps")


def _checkpoints(led: LedgerReport) -> _Markup:
    def signers(cp: CheckpointRow) -> list[_Markup]:
        out = []
        for s in cp.signatures:
            mark = "✓" if s.verified else "✗"
            when = f" at {_time(s.timestamp * 1000)}" if s.timestamp is not None else ""
            why = f" ({s.problem})" if s.problem else ""
            out.append(
                _el(
                    "div",
                    f"{mark} {s.role}: ",
                    _el("span", s.name, class_="mono"),
                    when,
                    why,
                    class_=None if s.verified else "small",
                )
            )
        return out

    failures_by_size: dict[int, list[int]] = {}
    for f in led.failures:
        if f.checkpoint_size is not None:
            failures_by_size.setdefault(f.checkpoint_size, []).append(f.number)
    rows = [
        _el(
            "tr",
            _el("td", cp.size, class_="num"),
            _el(
                "td",
                _time(cp.time_ms),
                _el("div", _TIME_SOURCE.get(cp.time_source, ""), class_="small"),
            ),
            _el("td", _el("span", cp.root[:16] + "…", class_="mono", title=cp.root)),
            _el("td", signers(cp)),
            _el(
                "td",
                _badge(cp.status),
                " ",
                _frefs(failures_by_size.get(cp.size, ())),
            ),
            class_="fail" if cp.status == "failed" else None,
        )
        for cp in led.checkpoints
    ]
    head = _el(
        "tr",
        _el("th", "size", class_="num"),
        _el("th", "size reached"),
        _el("th", "root"),
        _el("th", "signed and cosigned by"),
        _el("th", "result"),
    )
    return _el("table", _el("thead", head), _el("tbody", rows), class_="checkpoints")


_TIME_SOURCE = {
    "last entry": "when its last entry was written",
    "cosignature": "its earliest cosignature (its entries are missing)",
}


def _erasures(led: LedgerReport) -> _Markup:
    if not led.erasures:
        return _el("p", "No payload was erased.", class_="small")
    rows = [
        _el(
            "tr",
            _el("td", e.index, class_="num"),
            _el("td", _time(e.time_ms)),
            _el("td", _el("span", e.message_id, class_="mono")),
            _el("td", e.origin),
            _el("td", e.kind),
            _el("td", _el("span", e.digest[:16] + "…", class_="mono", title=e.digest)),
        )
        for e in led.erasures
    ]
    head = _el(
        "tr",
        _el("th", "entry index", class_="num"),
        _el("th", "erased at"),
        _el("th", "message id"),
        _el("th", "origin"),
        _el("th", "kind"),
        _el("th", "digest"),
    )
    return _el("table", _el("thead", head), _el("tbody", rows), class_="erasures")


def _certificates(led: LedgerReport) -> _Markup:
    if not led.certificates:
        return _el("p", "The ledger carries no signing certificate.", class_="small")
    rows = [
        _el(
            "tr",
            _el("td", c.role),
            _el(
                "td",
                _el("span", c.subject, class_="mono"),
                _el("div", "serial ", _el("span", c.serial, class_="mono"), class_="small"),
            ),
            _el(
                "td",
                c.not_before[:19].replace("T", " "),
                " – ",
                c.not_after[:19].replace("T", " "),
            ),
            _el("td", _el("span", c.status, class_=f"badge {_CERT_STATUS.get(c.status, 'warn')}")),
            _el(
                "td",
                _el("span", c.fingerprint, class_="mono"),
                _el("div", c.problem, class_="small") if c.problem else None,
            ),
            class_="fail" if c.role == "rejected" else None,
        )
        for c in led.certificates
    ]
    head = _el(
        "tr",
        _el("th", "role"),
        _el("th", "subject and serial"),
        _el("th", "valid (UTC)"),
        _el("th", "at report time"),
        _el("th", "SHA-256 fingerprint"),
    )
    note = _el(
        "div",
        "A certificate that has expired since does not undo what it signed while valid (each "
        "cosignature's time is checked against its certificate's validity, step 2); "
        "expiring-soon: within 14 days of the report.",
        class_="small",
    )
    return _Markup(
        _el("table", _el("thead", head), _el("tbody", rows), class_="certificates") + note
    )


_CERT_STATUS = {"valid": "ok", "expiring-soon": "warn", "expired": "skipped"}


def _ledger(led: LedgerReport) -> _Markup:
    events = ", ".join(f"{n} {name}" for name, n in led.events.items()) or "none"
    return _el(
        "section",
        _el("h2", f"Ledger {led.origin} ", _badge("passed" if led.ok else "failed")),
        _el(
            "p",
            f"File {led.path} (SHA-256 ",
            _el("span", led.sha256, class_="mono"),
            f"): {led.entries} entries ({events}), from {_time(led.first_time_ms)} "
            f"to {_time(led.last_time_ms)}. Recomputed root ",
            _el("span", led.root, class_="mono"),
            ".",
            class_="small",
        ),
        _el("h3", "Size over time"),
        _chart(led),
        _el(
            "div",
            "Green dots: signed checkpoints that verified; red: checkpoints a failure "
            "names; grey: checkpoints above a broken part of the tree (not verified); dashed: "
            "entries not yet under a checkpoint.",
            class_="small",
        ),
        _el("h3", "Verification, step by step"),
        _el("p", "Witness policy: ", _el("strong", led.policy or "—"), class_="small"),
        _steps(led),
        _el("ul", [_el("li", n) for n in led.notices], class_="plain small")
        if led.notices
        else None,
        _el("h3", "Checkpoints and who cosigned them"),
        _checkpoints(led),
        _el("h3", "Erasures"),
        _erasures(led),
        _el("h3", "Signing certificates"),
        _certificates(led),
        class_="card ledger",
        id=f"ledger-{led.jurisdiction or 'x'}",
    )


def render_html(report: AuditReport) -> str:
    """The report as one HTML page that loads nothing: inline CSS, inline SVG, no script."""
    count = len(report.failures)
    verdict = (
        _el("div", "Every ledger verified and the ledgers reconciled.", class_="verdict ok")
        if report.ok
        else _el(
            "div",
            f"{count} failure{'s' if count != 1 else ''}: the audit does not pass.",
            class_="verdict failed",
        )
    )
    steps_legend = _el(
        "ul",
        [
            _el("li", _el("strong", f"{'' if n == 0 else f'{n} '}{name}"), f": {d}")
            for n, name, d in STEPS
        ],
        class_="plain small",
    )
    failures = (
        _el(
            "section",
            _el("h2", f"Failures ({count})"),
            _el(
                "p",
                "Every failure, numbered; each is linked from where it shows below.",
                class_="small",
            ),
            _failures_table(report.failures),
            class_="card",
            id="failures",
        )
        if report.failures
        else None
    )
    if report.reconciled:
        r = report.reconciliation
        recon_text = (
            f"{r.get('sent', 0)} sent, {r.get('matched', 0)} received with the same digest, "
            f"{r.get('receipts', 0)} receipts, {r.get('pending', 0)} pending, "
            f"{r.get('refused', 0)} refused, {r.get('errors', 0)} mismatches, "
            f"{r.get('unchecked', 0)} to or from ledgers not audited here; "
            f"{r.get('receipts_verified', 0)} signed receipts checked from their bytes, "
            f"{r.get('cosigned_checked', 0)} checkpoints a witness cosigned checked against "
            f"the log, {r.get('evidence', 0)} inconsistent checkpoints refused live."
        )
        reconciliation = _el(
            "section",
            _el("h2", "Reconciliation between the ledgers"),
            _el("p", recon_text, class_="small"),
            _matrix(report),
            _el("h3", f"Pending ({len(report.pending)})"),
            _el(
                "ul",
                [_el("li", _el("span", p, class_="mono")) for p in report.pending],
                class_="plain",
            )
            if report.pending
            else _el("p", "None.", class_="small"),
            _el("h3", f"Not checked ({len(report.notes)})"),
            _el("ul", [_el("li", n) for n in report.notes], class_="plain small")
            if report.notes
            else _el(
                "p", "Nothing: every receipt and cosigned checkpoint was checked.", class_="small"
            ),
            _el("h3", f"Refused for good ({len(report.refused)})"),
            _el(
                "ul",
                [_el("li", _el("span", p, class_="mono")) for p in report.refused],
                class_="plain",
            )
            if report.refused
            else _el("p", "None.", class_="small"),
            class_="card",
            id="reconciliation",
        )
    else:
        reconciliation = _el(
            "section",
            _el("h2", "Reconciliation between the ledgers"),
            _el("p", "One ledger only: nothing to reconcile it with."),
            class_="card",
            id="reconciliation",
        )
    body = _el(
        "main",
        _el("h1", "Ledger audit report"),
        _el(
            "div",
            f"Generated {report.generated_at} by customs-gateway {report.version} audit report, "
            "offline, with "
            f"the trust bundle {report.trust_bundle or '(given)'}; "
            f"{len(report.ledgers)} ledger{'s' if len(report.ledgers) != 1 else ''}.",
            class_="meta",
        ),
        verdict,
        _el("section", _el("h2", "Ledgers"), _summary(report), class_="card", id="summary"),
        failures,
        reconciliation,
        [_ledger(led) for led in report.ledgers],
        _el(
            "section",
            _el("h2", "The auditor's steps"),
            steps_legend,
            _el(
                "p",
                "As in docs/audit.md, section 2: every failure is reported, each under the step "
                "that found it.",
                class_="small",
            ),
            class_="card",
        ),
    )
    head = _el(
        "head",
        _Markup('<meta charset="utf-8">'),
        _Markup(f'<meta http-equiv="Content-Security-Policy" content="{_esc(_CSP)}">'),
        _Markup('<meta name="viewport" content="width=device-width, initial-scale=1">'),
        _el("title", "Ledger audit report — " + ("passed" if report.ok else "FAILED")),
        _el("style", _Markup(_CSS)),
    )
    return "<!DOCTYPE html>\n" + _el("html", head, _el("body", body), lang="en") + "\n"
