"""The exchange's logic dispatches on kinds through the table and writes no SQL (ADR 0016).

Read from the source, so a new ``isinstance`` chain on message types or a raw query in a
concern module fails here rather than in review.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import gateway
from customs.gateway.v1 import domain_pb2, partner_pb2
from gateway.domain.kinds import KINDS

ROOT = Path(gateway.__file__).parent
# The modules of the exchange that hold its logic: no SQL in them, only named store functions.
CONCERNS = ("core", "submit", "receive", "inbound", "retention", "status", "_shared")
MESSAGE_TYPES = {row.payload.DESCRIPTOR.name for row in KINDS.values()} | {
    row.request.DESCRIPTOR.name for row in KINDS.values()
}
SQL = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE)\b.*\b(FROM|INTO|SET|WHERE)\b")


def _isinstance_names(tree: ast.AST) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "isinstance"
            and len(node.args) == 2
        ):
            for sub in ast.walk(node.args[1]):
                if isinstance(sub, ast.Attribute) and sub.attr in MESSAGE_TYPES:
                    found.append((node.lineno, sub.attr))
    return found


def test_the_message_types_scanned_for_are_the_four_kinds() -> None:
    assert "WatchlistEntry" in MESSAGE_TYPES
    assert partner_pb2.WithdrawSeizureNoticeRequest.DESCRIPTOR.name in MESSAGE_TYPES
    assert domain_pb2.SeizureWithdrawal.DESCRIPTOR.name in MESSAGE_TYPES
    assert len(MESSAGE_TYPES) == 8


def test_the_scan_finds_a_chain_when_there_is_one() -> None:
    chain = "if isinstance(p, domain_pb2.SeizureNotice):\n    pass\n"
    assert _isinstance_names(ast.parse(chain)) == [(1, "SeizureNotice")]
    assert SQL.search('"SELECT message_id FROM exchange_messages "')


@pytest.mark.parametrize(
    "path",
    sorted(p for p in ROOT.rglob("*.py") if "_pb2" not in p.name and p.name != "watchlist.py"),
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_no_module_dispatches_on_message_types_with_isinstance(path: Path) -> None:
    # domain/watchlist.py merges entries and revocations into one record: that is its subject,
    # not a dispatch on kinds, and it is the pure view's own business.
    assert _isinstance_names(ast.parse(path.read_text(encoding="utf-8"))) == []


@pytest.mark.parametrize("name", CONCERNS)
def test_no_concern_module_of_the_exchange_writes_sql(name: str) -> None:
    source = (ROOT / "exchange" / f"{name}.py").read_text(encoding="utf-8")
    assert ".execute(" not in source
    assert [line for line in source.splitlines() if SQL.search(line)] == []
