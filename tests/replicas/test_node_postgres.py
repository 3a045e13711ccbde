"""A real node on PostgreSQL exchanging with SQLite peers: CN keeps its tables in a database of
its own (``[storage] url``), HK and MO keep their files. Messages reach partner streams, the
checkpoints are witnessed, and the three ledgers export (CN's with ``audit export --url``),
verify, fetch live and reconcile as when all three were on SQLite (ADR 0070)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.ledger import Event
from gateway.pki import Jurisdiction, Role
from tests.exchange.conftest import (
    Trio,
    address_file,
    data_dir,
    entry_request,
    notice_request,
    read_stream,
    write_trio_configs,
)
from tests.support import ALL, World, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO


def _witnessed_by_both(trio: Trio, j: Jurisdiction) -> bool:
    latest = trio.nodes[j].ledger.latest_checkpoint()
    others = [o for o in ALL if o is not j]
    return (
        latest is not None
        and not trio.nodes[j].checkpointer.due()
        and all(f"— {o.trust_domain}/witness " in latest.note for o in others)
    )


def test_node_on_postgres_exchanges_with_sqlite_peers(
    world: World, tmp_path: Path, postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = write_trio_configs(world, tmp_path)
    configs[CN] = world.write_config(
        CN,
        data_dir(tmp_path, CN),
        peers={p: address_file(tmp_path, p) for p in (HK, MO)},
        server="checkpoint_interval_seconds = 0.3",
        storage=postgres_url,
    )
    trio = Trio(world, tmp_path, configs)
    exports = {j: tmp_path / f"{j.value.lower()}.export" for j in ALL}
    try:
        for j in ALL:
            trio.start(j)
        assert not (data_dir(tmp_path, CN) / "ledger.db").exists()
        trio.partner(CN).SubmitSeizureNotice(notice_request(CN, [HK, MO]), timeout=10)
        trio.partner(HK).PublishWatchlistEntry(entry_request([CN, MO]), timeout=10)
        trio.partner(MO).SubmitSeizureNotice(notice_request(MO, [CN]), timeout=10)
        assert len(read_stream(trio.partner(CN), expect=2)) == 2
        assert len(read_stream(trio.partner(HK), expect=1)) == 1
        assert len(read_stream(trio.partner(MO), expect=2)) == 2
        wait_for(lambda: len(trio.entries(CN, Event.RECEIPT)) == 2, what="CN's receipts")
        wait_for(lambda: len(trio.entries(HK, Event.RECEIPT)) == 2, what="HK's receipts")
        wait_for(lambda: len(trio.entries(MO, Event.RECEIPT)) == 1, what="MO's receipt")
        for j in ALL:
            wait_for(lambda j=j: _witnessed_by_both(trio, j), what=f"{j.value} cosigned")
        # The live fetch goes over gRPC, whatever the store behind it.
        auditor = world.cred(MO, Role.AUDITOR)
        fetched = tmp_path / "cn-live.export"
        argv = ["audit", "fetch", "--node", trio.nodes[CN].address, "--jurisdiction", "CN"]
        argv += ["--cert", str(auditor.certificate), "--key", str(auditor.key)]
        argv += ["--trust-bundle", str(world.bundle), "--out", str(fetched)]
        assert main(argv) == 0
    finally:
        trio.close()
    assert main(["audit", "export", "--url", postgres_url, "--out", str(exports[CN])]) == 0
    for j in (HK, MO):
        db = data_dir(tmp_path, j) / "ledger.db"
        assert main(["audit", "export", "--db", str(db), "--out", str(exports[j])]) == 0
    bundle = str(world.bundle)
    for path in (*exports.values(), fetched):
        assert main(["audit", "verify", str(path), "--trust-bundle", bundle, "--no-progress"]) == 0
    assert main(["audit", "reconcile", *map(str, exports.values()), "--trust-bundle", bundle]) == 0
    assert "0 mismatches" in capsys.readouterr().out
