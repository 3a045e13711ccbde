"""Independent known-good examples: bytes made by other implementations, checked to the byte.

- The signed note of golang.org/x/mod/sumdb/note (its package doc and note_test.go), whose
  signer key is published: Ed25519 is deterministic, so we must reproduce it exactly.
- A real checkpoint of the arche2025h1 staging CT log with a tlog-cosignature/v1 by the public
  witness remora.n621.de (as quoted in the tests of an independent Python implementation).
"""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.notes import (
    BadSignatureError,
    NoteSigner,
    Verifier,
    open_note,
    parse_checkpoint,
    parse_note,
    sign_note,
    verify_cosignature,
)

GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FF"
    "YC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

ARCHE_VKEY = (
    "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
)
REMORA_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
ARCHE_CHECKPOINT = """arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=
— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==
— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==
— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==
"""  # noqa: E501


def _go_signer() -> NoteSigner:
    *_, name, _hash, material = GO_SKEY.split("+", 4)
    raw = base64.b64decode(material)
    assert raw[0] == 0x01
    return NoteSigner(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))


def test_go_sumdb_note_is_reproduced_byte_for_byte() -> None:
    signer = _go_signer()
    assert signer.verifier.vkey == GO_VKEY
    assert sign_note(GO_TEXT, [signer]) == GO_NOTE


def test_go_sumdb_note_verifies_and_a_changed_text_does_not() -> None:
    verifier = Verifier.from_vkey(GO_VKEY)
    note, verified = open_note(GO_NOTE, [verifier])
    assert note.text == GO_TEXT
    assert [v.verifier for v in verified] == [verifier]
    with pytest.raises(BadSignatureError, match="PeterNeumann\\+c74f20a3 does not verify"):
        open_note(GO_NOTE.replace("cryptography", "cryptographY"), [verifier])


def test_real_checkpoint_log_signature_and_witness_cosignature_verify() -> None:
    note = parse_note(ARCHE_CHECKPOINT)
    checkpoint = parse_checkpoint(note.text)
    assert (checkpoint.origin, checkpoint.size) == (
        "arche2025h1.staging.ct.transparency.dev",
        1432088532,
    )
    log, witness = Verifier.from_vkey(ARCHE_VKEY), Verifier.from_vkey(REMORA_VKEY)
    _, verified = open_note(ARCHE_CHECKPOINT, [log, witness])
    assert {v.verifier.name for v in verified} == {log.name, witness.name}
    remora_line = next(s.line for s in note.signatures if s.name == "remora.n621.de")
    timestamp = verify_cosignature(note.text, remora_line, witness)
    assert timestamp == int.from_bytes(base64.b64decode(remora_line.split()[-1])[4:12], "big")
    assert 1_700_000_000 < timestamp < 2_000_000_000
    with pytest.raises(BadSignatureError, match=r"cosignature/v1 signature by remora\.n621\.de"):
        verify_cosignature(note.text.replace("1432088532", "1432088533"), remora_line, witness)
