"""Our own notes, checkpoints and cosignatures: byte layout, round trips and a tamper table."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.notes import (
    COSIGNATURE_V1,
    BadSignatureError,
    Checkpoint,
    CheckpointFormatError,
    KeyFormatError,
    NoteFormatError,
    NoteSigner,
    UnverifiedNoteError,
    Verifier,
    cosign,
    open_note,
    parse_checkpoint,
    parse_note,
    sign_note,
    verify_cosignature,
)

ORIGIN = "hk.customs-exchange/ledger"
SEED = bytes(range(32))
KEY = Ed25519PrivateKey.from_private_bytes(SEED)
ROOT = hashlib.sha256(b"root").digest()


def test_key_id_and_signature_line_are_laid_out_byte_by_byte() -> None:
    signer = NoteSigner(ORIGIN, KEY)
    pub = KEY.public_key().public_bytes_raw()
    assert signer.key_id == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + pub).digest()[:4]
    body = Checkpoint(ORIGIN, 7, ROOT).body()
    assert body == f"{ORIGIN}\n7\n{base64.b64encode(ROOT).decode()}\n"
    line = signer.signature_line(body)
    assert line.startswith(f"\u2014 {ORIGIN} ")
    assert line.endswith("\n")
    raw = base64.b64decode(line.split(" ")[2])
    assert raw[:4] == signer.key_id
    assert len(raw) == 68
    KEY.public_key().verify(raw[4:], body.encode())
    material = base64.b64encode(b"\x01" + pub).decode()
    assert signer.verifier.vkey == f"{ORIGIN}+{signer.key_id.hex()}+{material}"


def test_cosignature_signs_header_time_and_whole_body() -> None:
    cosigner = NoteSigner("mo.customs-exchange/witness", KEY, COSIGNATURE_V1)
    pub = KEY.public_key().public_bytes_raw()
    assert (
        cosigner.key_id == hashlib.sha256(b"mo.customs-exchange/witness\n\x04" + pub).digest()[:4]
    )
    body = Checkpoint(ORIGIN, 7, ROOT, ("ext line",)).body()
    line = cosign(body, cosigner, 1_700_000_123)
    raw = base64.b64decode(line.split(" ")[2])
    assert raw[:4] == cosigner.key_id
    assert raw[4:12] == (1_700_000_123).to_bytes(8, "big")
    KEY.public_key().verify(raw[12:], b"cosignature/v1\ntime 1700000123\n" + body.encode())
    assert verify_cosignature(body, line, cosigner.verifier) == 1_700_000_123


def test_checkpoint_round_trips_through_a_signed_note() -> None:
    signer = NoteSigner(ORIGIN, KEY)
    witness = NoteSigner("mo.customs-exchange/witness", Ed25519PrivateKey.generate(), 0x04)
    cp = Checkpoint(ORIGIN, 12345, ROOT)
    note = sign_note(cp.body(), [signer]) + cosign(cp.body(), witness, 1_700_000_000)
    parsed, verified = open_note(note, [Verifier.from_vkey(signer.verifier.vkey), witness.verifier])
    assert parse_checkpoint(parsed.text) == cp
    assert [v.timestamp for v in verified] == [None, 1_700_000_000]


def _tamper(case: str) -> tuple[str, list[Verifier], type[Exception], str]:
    signer = NoteSigner(ORIGIN, KEY)
    other = NoteSigner(ORIGIN, Ed25519PrivateKey.generate())
    cp = Checkpoint(ORIGIN, 10, ROOT)
    note = sign_note(cp.body(), [signer])
    trusted = [signer.verifier]
    if case == "size-changed":
        return note.replace("\n10\n", "\n11\n"), trusted, BadSignatureError, "does not verify"
    if case == "root-changed":
        bad = base64.b64encode(hashlib.sha256(b"x").digest()).decode()
        return (
            note.replace(base64.b64encode(ROOT).decode(), bad),
            trusted,
            BadSignatureError,
            "does not verify",
        )
    if case == "resigned-by-other-key":
        return sign_note(cp.body(), [other]), trusted, UnverifiedNoteError, "no signature"
    if case == "same-name-and-id-other-key":
        forged = other.signature_line(cp.body())
        raw = base64.b64decode(forged.split(" ")[2])
        line = f"— {ORIGIN} {base64.b64encode(signer.key_id + raw[4:]).decode()}\n"
        return cp.body() + "\n" + line, trusted, BadSignatureError, "does not verify"
    if case == "no-blank-line":
        return note.replace("\n\n", "\n"), trusted, NoteFormatError, "blank line"
    if case == "control-character":
        return note.replace(ORIGIN, ORIGIN + "\t", 1), trusted, NoteFormatError, "control"
    if case == "no-signatures":
        return cp.body() + "\n", trusted, NoteFormatError, "no signature lines"
    if case == "hyphen-not-em-dash":
        return note.replace("—", "-"), trusted, NoteFormatError, "em dash"
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    [
        "size-changed",
        "root-changed",
        "resigned-by-other-key",
        "same-name-and-id-other-key",
        "no-blank-line",
        "control-character",
        "no-signatures",
        "hyphen-not-em-dash",
    ],
)
def test_tampered_notes_are_refused(case: str) -> None:
    note, verifiers, error, match = _tamper(case)
    with pytest.raises(error, match=match):
        open_note(note, verifiers)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("origin\n10\n", "needs at least 3"),
        ("origin\n010\nAAAA\n", "not a plain decimal"),
        ("origin\n-1\nAAAA\n", "not a plain decimal"),
        ("origin\n10\n!!!!\n", "not base64"),
        (f"origin\n10\n{base64.b64encode(b'short').decode()}\n", "not 32"),
        (f"origin\n10\n{base64.b64encode(ROOT).decode()}\n\n", "extension line"),
        (f"origin\n10\n{base64.b64encode(ROOT).decode()}", "newline"),
    ],
    ids=["two-lines", "leading-zero", "negative", "bad-base64", "short-root", "empty-ext", "no-nl"],
)
def test_malformed_checkpoints_are_refused(text: str, match: str) -> None:
    with pytest.raises(CheckpointFormatError, match=match):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    ("vkey", "match"),
    [
        ("name+00000000+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f", "!= computed"),
        ("name+0000+AU0v", "8-digit key ID"),
        ("name", "not <name>"),
        ("na me+00000000+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f", "without spaces"),
        ("name+zzzzzzzz+AU0v", "bad hex"),
    ],
    ids=["wrong-id", "short-id", "no-plus", "space-in-name", "bad-hex"],
)
def test_malformed_vkeys_are_refused(vkey: str, match: str) -> None:
    with pytest.raises(KeyFormatError, match=match):
        Verifier.from_vkey(vkey)


def test_unknown_signatures_are_ignored_but_one_trusted_is_needed() -> None:
    a = NoteSigner("a.example", KEY)
    b = NoteSigner("b.example", Ed25519PrivateKey.generate())
    note = sign_note("hello\n", [b, a])
    _, verified = open_note(note, [a.verifier])
    assert [v.verifier.name for v in verified] == ["a.example"]
    assert len(parse_note(note).signatures) == 2
