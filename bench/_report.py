"""Result rows and the one table ``make bench`` prints."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Scale:
    """How big to run: ``quick`` for a smoke run, otherwise the sizes the targets name;
    ``long`` adds the rows that take minutes (the 1,000,000-entry memory row of group ``bulk``).
    """

    quick: bool = False
    long: bool = False


@dataclass(frozen=True)
class Result:
    """One measured number, optionally against a baseline and a target.

    ``target`` is read against ``ratio`` when a baseline is given (``value / baseline``), else
    against ``value``; ``higher_is_better`` says which way the target points.
    """

    group: str
    name: str
    value: float
    unit: str
    baseline_name: str = ""
    baseline_value: float | None = None
    target: float | None = None
    higher_is_better: bool = True

    @property
    def ratio(self) -> float | None:
        """``value / baseline_value`` when a baseline was measured."""
        if self.baseline_value is None or self.baseline_value == 0:
            return None
        return self.value / self.baseline_value

    @property
    def met(self) -> bool | None:
        """Whether the target is met, or None without a target."""
        if self.target is None:
            return None
        measured = self.ratio if self.baseline_value is not None else self.value
        if measured is None:
            return False
        return measured >= self.target if self.higher_is_better else measured <= self.target


def with_load_average(group: str, measure: Callable[[], list[Result]]) -> list[Result]:
    """``measure()``'s rows followed by the machine's 1-minute load average before and after
    it (every number of a shared machine is read beside its load)."""
    before = os.getloadavg()[0]
    results = measure()
    return [
        *results,
        Result(group, "machine load average (1 min) before", before, "runnable"),
        Result(group, "machine load average (1 min) after", os.getloadavg()[0], "runnable"),
    ]


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:,.3g}"


def render(results: list[Result]) -> str:
    """A plain-text table: value, baseline, ratio, target and verdict for every result."""
    header = (
        "group",
        "measure",
        "value",
        "unit",
        "baseline",
        "baseline value",
        "ratio",
        "target",
        "met",
    )
    rows = [header]
    for r in results:
        target = "-"
        if r.target is not None:
            sign = ">=" if r.higher_is_better else "<="
            target = f"{sign} {_num(r.target)}{'x' if r.baseline_value is not None else ''}"
        verdict = {None: "", True: "yes", False: "NO"}[r.met]
        ratio = "-" if r.ratio is None else f"{r.ratio:,.2f}x"
        rows.append(
            (
                r.group,
                r.name,
                _num(r.value),
                r.unit,
                r.baseline_name or "-",
                _num(r.baseline_value),
                ratio,
                target,
                verdict,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
