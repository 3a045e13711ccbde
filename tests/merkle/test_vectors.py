"""Every public RFC 6962 vector in tests/merkle/vectors/ passes or fails as it says.

The vectors are a copy kept in the repository (source and licence in their README), so a clean
clone runs them with nothing beside it.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from gateway.merkle import (
    ConsistencyProofError,
    InclusionProofError,
    MemoryTree,
    tree_root,
    verify_consistency,
    verify_inclusion,
)

VECTORS = Path(__file__).resolve().parent / "vectors"


def _files(kind: str) -> list[Path]:
    files = sorted((VECTORS / kind).rglob("*.json"))
    assert files, f"no {kind} vectors under {VECTORS}"
    return files


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _proof(data: dict[str, Any]) -> list[bytes]:
    return [_b64(h) for h in data["proof"] or []]


def _id(path: Path) -> str:
    return str(path.relative_to(VECTORS))


@pytest.mark.parametrize("path", _files("inclusion"), ids=_id)
def test_inclusion_vector(path: Path) -> None:
    data = json.loads(path.read_text())
    args = (
        _b64(data["leafHash"]),
        data["leafIdx"],
        data["treeSize"],
        _proof(data),
        _b64(data["root"]),
    )
    if data["wantErr"]:
        with pytest.raises(InclusionProofError, match=f"leaf {data['leafIdx']}"):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize("path", _files("consistency"), ids=_id)
def test_consistency_vector(path: Path) -> None:
    data = json.loads(path.read_text())
    args = (
        data["size1"],
        data["size2"],
        _b64(data["root1"]),
        _b64(data["root2"]),
        _proof(data),
    )
    if data["wantErr"]:
        with pytest.raises(ConsistencyProofError, match=f"from size {data['size1']} "):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_the_vector_set_is_complete() -> None:
    # The README promises 196 proof vectors; losing a folder must not pass silently.
    assert len(_files("inclusion")) + len(_files("consistency")) == 196


def test_rfc6962_reference_roots_of_every_prefix() -> None:
    data = json.loads((VECTORS / "rfc6962-roots.json").read_text())
    leaves = [bytes.fromhex(x) for x in data["leaves_hex"]]
    for size_text, root_hex in data["roots_hex"].items():
        size = int(size_text)
        tree = MemoryTree(leaves[:size])
        assert tree.root().hex() == root_hex, size
        assert tree_root(size, MemoryTree(leaves)).hex() == root_hex, size
