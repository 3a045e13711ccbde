"""A verifier written from docs/ledger-format.md and the C2SP specs alone.

The verifier below (everything above the fixtures) uses the Python standard library and
``cryptography``, nothing from ``gateway`` or ``customs``: the tests run this very file as a
script in a subprocess and check that no such module was loaded. Even the export's magic and
record types are read from the document, so the document is shown to be enough. It checks:

- the export framing (docs/ledger-format.md "Export file");
- signing certificates against the trust bundle ("Signing certificates and the trust bundle");
- the RFC 9162 root of the entries at each checkpoint size ("Merkle tree");
- each checkpoint's log signature and each cosignature, byte for byte ("Checkpoints and
  cosignatures", C2SP signed-note and tlog-cosignature/v1);
- the witness policy: the latest checkpoint cosigned by every other jurisdiction of the bundle.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

if TYPE_CHECKING:  # never at run time: the verifier must not load gateway
    from tests.support import World

DOC = Path(__file__).resolve().parents[2] / "docs" / "ledger-format.md"
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")


class Rejected(Exception):
    """The export does not verify."""


# -- the export format, read from the document ----------------------------------------------


def export_format(doc: str) -> tuple[set[bytes], dict[str, int]]:
    """(the magics, record type numbers by name) from the "Export file" section.

    Every version the section documents with its full magic is accepted; a record's name is
    the first word of its description (``type 3  one signed checkpoint note`` is
    ``checkpoint``).
    """
    section = doc.split("## Export file", 1)[1].split("\n## ", 1)[0]
    magics = {
        m.encode() + b"\n" for m in re.findall(r"(customs-gateway ledger export \d+)\\n", section)
    }
    assert magics, "the document names no magic"
    types: dict[str, int] = {}
    for block in section.split("```")[1::2]:
        for number, description in re.findall(r"^\s+type (\d+)\s+(.*)$", block, re.M):
            words = description.replace(":", " ").split()
            if words[0] == "one":
                words = words[1:]
            if words[0] in ("signed", "signing"):
                words = words[1:]
            types.setdefault(words[0].strip(","), int(number))
    return magics, types


def read_export(data: bytes, doc: str) -> dict[str, list[bytes]]:
    """Records by kind: origin, entry, checkpoint, certificate (others are kept by number)."""
    magics, types = export_format(doc)
    names = {number: name for name, number in types.items()}
    magic = next((m for m in magics if data.startswith(m)), None)
    if magic is None:
        raise Rejected("not an export of a documented version")
    at = len(magic)
    records: dict[str, list[bytes]] = {}
    while True:
        if at + 5 > len(data):
            raise Rejected("no end record")
        kind, length = data[at], int.from_bytes(data[at + 1 : at + 5], "big")
        body = data[at + 5 : at + 5 + length]
        at += 5 + length
        name = names.get(kind, str(kind))
        if name == "end":
            counts = [int.from_bytes(body[i : i + 8], "big") for i in range(0, len(body), 8)]
            if counts[:2] != [len(records.get("entry", [])), len(records.get("checkpoint", []))]:
                raise Rejected(f"end record counts {counts}")
            if at != len(data):
                raise Rejected("bytes after the end record")
            return records
        records.setdefault(name, []).append(body)


# -- RFC 9162 -------------------------------------------------------------------------------


def mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 section 2.1.1."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + mth(leaves[:k]) + mth(leaves[k:])).digest()


# -- keys from certificates -----------------------------------------------------------------


def key_id(name: str, sig_type: int, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()[:4]


def certified_keys(
    certificates: list[bytes], bundle: dict[str, list[x509.Certificate]]
) -> dict[tuple[str, bytes], tuple[str, int, bytes, x509.Certificate]]:
    """(key name, key ID) -> (jurisdiction, signature type, public key, certificate)."""
    keys = {}
    for der in certificates:
        cert = x509.load_der_x509_certificate(der)
        uris = cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.UniformResourceIdentifier)
        if len(uris) != 1:
            continue
        match = re.fullmatch(r"spiffe://([a-z]{2})\.customs-exchange/node/[^/]+", uris[0])
        if match is None:
            continue
        cc = match.group(1)
        issued = False
        for root in bundle.get(cc.upper(), []):
            try:
                cert.verify_directly_issued_by(root)
                issued = True
            except (ValueError, TypeError, InvalidSignature):
                continue
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        public_key = cert.public_key()
        if not issued or DOCUMENT_SIGNING not in eku:
            continue
        if not isinstance(public_key, Ed25519PublicKey):
            continue
        public = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        for role, sig_type in (("ledger", 0x01), ("witness", 0x04)):
            name = f"{cc}.customs-exchange/{role}"
            keys[(name, key_id(name, sig_type, public))] = (cc.upper(), sig_type, public, cert)
    return keys


# -- checkpoints ----------------------------------------------------------------------------


def verify_export(data: bytes, bundle_json: str, doc: str) -> dict[str, object]:
    """Verify an export; return what was verified, or raise :class:`Rejected`."""
    bundle: dict[str, list[x509.Certificate]] = {}
    parsed = json.loads(bundle_json)
    assert parsed["format"] == "customs-gateway/trust-bundle/v1"
    for root in parsed["roots"]:
        cert = x509.load_pem_x509_certificate(root["certificate"].encode())
        bundle.setdefault(root["jurisdiction"], []).append(cert)
    records = read_export(data, doc)
    (origin_bytes,) = records["origin"]
    origin = origin_bytes.decode()
    own = origin.split(".", 1)[0].upper()
    keys = certified_keys(records.get("certificate", []), bundle)
    leaves = records.get("entry", [])
    for position, leaf in enumerate(leaves):
        if leaf[0] != 1 or int.from_bytes(leaf[1:9], "big") != position:
            raise Rejected(f"entry {position} is not version 1 at its own index")
    checkpoints: dict[int, set[str]] = {}
    for raw in records.get("checkpoint", []):
        note = raw.decode()
        text, _, signatures = note.partition("\n\n")
        text += "\n"
        lines = text.split("\n")
        if lines[0] != origin:
            raise Rejected(f"checkpoint of another origin {lines[0]!r}")
        size, root = int(lines[1]), base64.b64decode(lines[2])
        if size > len(leaves) or mth(leaves[:size]) != root:
            raise Rejected(f"checkpoint of size {size}: root does not match the entries")
        signed_by_log, cosigners = False, set()
        for line in signatures.splitlines():
            assert line.startswith("\u2014 ")
            name, blob = line[2:].split(" ")
            raw_sig = base64.b64decode(blob)
            key = keys.get((name, raw_sig[:4]))
            if key is None:
                raise Rejected(f"checkpoint of size {size}: signature by unknown key {name}")
            cc, sig_type, public, cert = key
            verifier = Ed25519PublicKey.from_public_bytes(public)
            try:
                if sig_type == 0x01:
                    verifier.verify(raw_sig[4:], text.encode())
                    signed_by_log = signed_by_log or cc == own
                    continue
                stamp = int.from_bytes(raw_sig[4:12], "big")
                message = f"cosignature/v1\ntime {stamp}\n".encode() + text.encode()
                verifier.verify(raw_sig[12:], message)
            except InvalidSignature as e:
                raise Rejected(f"checkpoint of size {size}: bad signature by {name}") from e
            at = dt.datetime.fromtimestamp(stamp, dt.UTC)
            if cc != own and cert.not_valid_before_utc <= at <= cert.not_valid_after_utc:
                cosigners.add(cc)
        if not signed_by_log:
            raise Rejected(f"checkpoint of size {size} is not signed by {own}'s log key")
        checkpoints[size] = cosigners
    if not checkpoints:
        raise Rejected("no checkpoint")
    latest = max(checkpoints)
    required = set(bundle) - {own}
    if not required or not required <= checkpoints[latest]:
        missing = ", ".join(sorted(required - checkpoints[latest]))
        raise Rejected(
            f"checkpoint of size {latest} lacks the cosignatures of {missing}: the log's "
            "operator alone vouches for this history"
        )
    return {
        "origin": origin,
        "entries": len(leaves),
        "checkpoints": sorted(checkpoints),
        "cosigners": sorted(checkpoints[latest]),
    }


if __name__ == "__main__":  # run by the tests below, to show what is (not) imported
    try:
        outcome: dict[str, object] = verify_export(
            Path(sys.argv[1]).read_bytes(), Path(sys.argv[2]).read_text(), DOC.read_text()
        )
    except Rejected as exc:
        outcome = {"rejected": str(exc)}
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("gateway", "customs"))
    print(json.dumps({**outcome, "loaded": loaded}))
    sys.exit(0)


# -- the tests ------------------------------------------------------------------------------


def _run(export: Path, bundle: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, str(export), str(bundle)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    result: dict[str, object] = json.loads(out)
    assert result.pop("loaded") == []
    return result


def test_the_document_gives_the_export_format() -> None:
    magics, types = export_format(DOC.read_text())
    assert b"customs-gateway ledger export 2\n" in magics
    assert {"origin": 1, "entry": 2, "checkpoint": 3, "certificate": 4, "end": 255}.items() <= (
        types.items()
    )


def test_a_real_export_verifies_from_the_document_alone(world: World, tmp_path: Path) -> None:
    from gateway.audit import write_export
    from tests.audit.test_tamper import write_hk_ledger

    db = write_hk_ledger(world, tmp_path / "hk.db")
    export = tmp_path / "hk.export"
    write_export(db, export)
    assert _run(export, world.bundle) == {
        "origin": "hk.customs-exchange/ledger",
        "entries": 50,
        "checkpoints": [10, 20, 35, 50],
        "cosigners": ["CN", "MO"],
    }


def test_the_stripped_cosignature_export_is_rejected(world: World, tmp_path: Path) -> None:
    import sqlite3

    from gateway.audit import write_export
    from tests.audit.test_tamper import write_hk_ledger

    db = write_hk_ledger(world, tmp_path / "hk.db")
    conn = sqlite3.connect(db)
    conn.execute("DROP TRIGGER ledger_cosignatures_no_delete")
    conn.execute("DELETE FROM ledger_cosignatures")
    conn.commit()
    conn.close()
    export = tmp_path / "hk.export"
    write_export(db, export)
    assert _run(export, world.bundle) == {
        "rejected": "checkpoint of size 50 lacks the cosignatures of CN, MO: the log's operator "
        "alone vouches for this history"
    }
