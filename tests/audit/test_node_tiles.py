"""A node never serves a proof from a stored hash it has not checked: one corrupted subtree hash
in its ledger, and it does not start (so `audit fetch --since` cannot be shown a false fork)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.ledger import LedgerCorruptError
from gateway.pki import Jurisdiction
from gateway.server.config import load_config
from gateway.server.node import Node
from tests.audit.test_tamper import corrupt_inner_hash, write_hk_ledger
from tests.support import World

HK = Jurisdiction.HK


def test_a_node_with_a_bad_stored_hash_does_not_start(world: World, tmp_path: Path) -> None:
    data = tmp_path / "hk-data"
    data.mkdir(mode=0o700)
    db = write_hk_ledger(world, data / "ledger.db")
    corrupt_inner_hash(world, db)
    config = load_config(world.write_config(HK, data))
    with pytest.raises(LedgerCorruptError) as refused:
        Node(config)
    message = str(refused.value)
    assert message.startswith(
        "stored subtree hash at level 2, position 9 (tile 0/2, row 768) is not what the entries "
        "give: a bad stored hash (the entries still give the last signed checkpoint)"
    )
    assert "altered" not in message


def test_serve_refuses_a_bad_stored_hash_in_one_line(
    world: World, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "hk-data"
    data.mkdir(mode=0o700)
    corrupt_inner_hash(world, write_hk_ledger(world, data / "ledger.db"))
    for path in data.iterdir():  # as a node keeps them (ADR 0025): no line about tightening
        path.chmod(0o600)
    assert main(["serve", "--config", str(world.write_config(HK, data))]) == 2
    err = capsys.readouterr().err
    # JSON log lines may come first (start-up tightens the file's permissions and says so); the
    # operator's refusal is one plain line, the last
    plain = [line for line in err.splitlines() if not line.startswith("{")]
    assert len(plain) == 1
    assert err.endswith(plain[0] + "\n")
    err = plain[0]
    assert "stored subtree hash at level 2, position 9 (tile 0/2, row 768)" in err
    assert "a bad stored hash" in err
