"""Verification with the trust bundle: keys from certificates, envelopes behind every entry.

HK's ledger records two messages it sent to CN, one it received from MO, a receipt, and a
checkpoint cosigned by CN and MO; each attack below is caught, named, and counted in its category.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.audit import AuditError, check_ledger, verify_ledger, write_export
from gateway.ledger import Event
from gateway.notes import COSIGNATURE_V1, NoteSigner
from gateway.pki import Jurisdiction
from gateway.pki.bundle import TrustBundle
from tests.audit.nodes import NodeLedger, envelope
from tests.support import World

CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO
SENT = uuid.UUID(int=0x5E1)
OTHER = uuid.UUID(int=0x5E2)
INBOUND = uuid.UUID(int=0x1B)


@pytest.fixture
def hk_db(world: World, tmp_path: Path) -> Path:
    path = tmp_path / "hk.db"
    with NodeLedger(world, HK, path) as hk:
        first = envelope(world, HK, CN, SENT)
        hk.sent(first)
        hk.sent(envelope(world, HK, CN, OTHER))
        hk.received(envelope(world, MO, HK, INBOUND), MO)
        hk.receipt(first, CN)
        hk.checkpoint(CN, MO)
    return path


def _bundle(world: World) -> TrustBundle:
    return TrustBundle.from_json(world.bundle.read_bytes())


def _sql(path: Path, statement: str, *args: object) -> None:
    conn = sqlite3.connect(path)
    conn.execute(statement, args)
    conn.commit()
    conn.close()


def _envelope_of(path: Path, mid: uuid.UUID) -> bytes:
    conn = sqlite3.connect(path)
    (data,) = conn.execute(
        "SELECT envelope FROM exchange_messages WHERE message_id = ?", (str(mid),)
    ).fetchone()
    conn.close()
    return bytes(data)


def test_an_untampered_ledger_verifies_from_certificates_alone(world: World, hk_db: Path) -> None:
    export = hk_db.with_suffix(".export")
    entries, checkpoints, certificates, envelopes = write_export(hk_db, export)
    assert (entries, checkpoints, certificates, envelopes) == (4, 1, 3, 3)
    for path in (hk_db, export):
        result = check_ledger(path, bundle=_bundle(world))
        assert (result.certificates, result.cosignatures, result.envelopes) == (3, 2, 3)
        assert result.counts()["envelopes"] == (3, 0)


def swap_envelope(world: World, path: Path) -> Path:
    other = envelope(world, HK, CN, SENT, payload=b"\x0a\x03abc")  # validly signed, other bytes
    _sql(
        path,
        "UPDATE exchange_messages SET envelope = ? WHERE message_id = ?",
        other.SerializeToString(),
        str(SENT),
    )
    return path


def forge_signature(world: World, path: Path) -> Path:
    from customs.gateway.v1 import envelope_pb2

    env = envelope_pb2.Envelope.FromString(_envelope_of(path, OTHER))
    env.signature = bytes([env.signature[0] ^ 1]) + env.signature[1:]
    _sql(
        path,
        "UPDATE exchange_messages SET envelope = ? WHERE message_id = ?",
        env.SerializeToString(),
        str(OTHER),
    )
    return path


def unknown_cosigner(world: World, path: Path) -> Path:
    rogue = NoteSigner("cn.customs-exchange/witness", Ed25519PrivateKey.generate(), COSIGNATURE_V1)
    with NodeLedger(world, HK, path) as hk:
        hk.checkpoint(CN, MO, keys={"rogue": rogue})
    return path


def missing_envelope(world: World, path: Path) -> Path:
    _sql(path, "DELETE FROM exchange_messages WHERE message_id = ?", str(OTHER))
    return path


def erased_without_entry(world: World, path: Path) -> Path:
    _sql(path, "UPDATE exchange_messages SET envelope = NULL WHERE message_id = ?", str(OTHER))
    return path


CASES: list[tuple[str, Callable[[World, Path], Path], str, int | None, str]] = [
    (
        "envelope-digest-mismatch",
        swap_envelope,
        r"entry 0 \(sent .*\): envelope digest [0-9a-f]{64} != entry digest [0-9a-f]{64}",
        0,
        "envelopes",
    ),
    (
        "forged-envelope-signature",
        forge_signature,
        r"entry 1 \(sent .*\): envelope does not verify: .*signature does not verify",
        1,
        "envelopes",
    ),
    (
        "cosignature-by-unknown-key",
        unknown_cosigner,
        r"checkpoint of size 4: signature by cn.customs-exchange/witness \(key id [0-9a-f]{8}\) "
        r"is by no certificate",
        None,
        "cosignatures",
    ),
    (
        "missing-envelope-for-sent",
        missing_envelope,
        r"entry 1 \(sent .*\): no envelope and no erased entry",
        1,
        "envelopes",
    ),
    (
        "erased-without-erased-entry",
        erased_without_entry,
        r"entry 1 \(sent .*\): its envelope was erased and no erased entry",
        1,
        "envelopes",
    ),
]


@pytest.mark.parametrize(
    ("attack", "match", "index", "category"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("form", ["database", "export"])
def test_each_attack_is_caught_named_and_counted(
    world: World,
    hk_db: Path,
    attack: Callable[[World, Path], Path],
    match: str,
    index: int | None,
    category: str,
    form: str,
) -> None:
    path = attack(world, hk_db)
    if form == "export":
        write_export(path, path.with_suffix(".export"))
        path = path.with_suffix(".export")
    result = verify_ledger(path, bundle=_bundle(world))
    assert not result.ok
    assert [f.category for f in result.failures] == [category]
    assert result.failures[0].index == index
    assert result.first_bad_index() == index
    assert result.counts()[category][1] == 1
    with pytest.raises(AuditError, match=match):
        check_ledger(path, bundle=_bundle(world))


def test_an_erased_envelope_with_its_erased_entry_verifies(world: World, hk_db: Path) -> None:
    digest = bytes(32)  # the digest of the erased payload; not checked against anything
    _sql(hk_db, "UPDATE exchange_messages SET envelope = NULL WHERE message_id = ?", str(OTHER))
    with NodeLedger(world, HK, hk_db) as hk:
        hk.entry(Event.ERASED, OTHER, "HK", digest)  # counterpart: the message's origin
        hk.checkpoint(CN, MO)
    result = check_ledger(hk_db, bundle=_bundle(world))
    assert (result.envelopes, result.erased) == (2, 1)


def test_without_the_log_certificate_nothing_vouches_for_the_checkpoints(
    world: World, tmp_path: Path
) -> None:
    path = tmp_path / "hk.db"
    with NodeLedger(world, HK, path) as hk:
        hk.entry(
            Event.ACKNOWLEDGED,
            uuid.UUID(int=7),
            "spiffe://hk.customs-exchange/partner/p",
            bytes(32),
        )
        hk.checkpoint()
    result = verify_ledger(path, bundle=_bundle(world))
    messages = [(f.category, f.message) for f in result.failures]
    assert messages[0] == (
        "certificates",
        "no signing certificate of HK chained to the trust bundle is in the source: nothing "
        "can vouch for hk.customs-exchange/ledger's checkpoints",
    )
    assert messages[1][0] == "checkpoints"
    assert messages[1][1].startswith(
        "checkpoint of size 1: signature by hk.customs-exchange/ledger (key id "
    )
    assert messages[1][1].endswith("is by no certificate chained to the trust bundle")
    assert len(messages) == 2
