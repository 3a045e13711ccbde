"""The partner examples of ``docs/partners.md``: each JSON block after an
``<!-- example: NAME METHOD EXPECTED -->`` marker, with the RPC it is for and the status code it
must get from a real node."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PARTNERS_DOC = ROOT / "docs" / "partners.md"

_EXAMPLE = re.compile(
    r"<!-- example: (?P<name>[\w-]+) (?P<method>\w+) (?P<expected>[A-Z_]+) -->\n"
    r".*?```json\n(?P<body>.*?)```",
    re.DOTALL,
)


@dataclass(frozen=True)
class Example:
    """One documented request."""

    name: str
    method: str
    expected: str  # "OK" or a gRPC status code name
    request: dict[str, Any]


_CODE = re.compile(
    r"<!-- example-(?P<language>python|js): (?P<name>[\w-]+) -->\n"
    r"```(?:python|js)\n(?P<body>.*?)```",
    re.DOTALL,
)


def code_example(language: str, name: str, doc: Path = PARTNERS_DOC) -> str:
    """The code block after ``<!-- example-<language>: <name> -->`` in ``doc``."""
    for match in _CODE.finditer(doc.read_text(encoding="utf-8")):
        if (match["language"], match["name"]) == (language, name):
            return match["body"]
    raise LookupError(f"{doc.name} has no {language} example {name!r}")


def partner_examples(doc: Path = PARTNERS_DOC) -> list[Example]:
    """Every marked example of ``doc``, in document order."""
    return [
        Example(m["name"], m["method"], m["expected"], json.loads(m["body"]))
        for m in _EXAMPLE.finditer(doc.read_text(encoding="utf-8"))
    ]
