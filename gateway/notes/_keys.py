"""Ed25519 note signers and verifier keys (C2SP signed-note and tlog-cosignature/v1).

Signature type 0x01 signs the note text; type 0x04 (cosignature/v1) signs
``"cosignature/v1\\ntime <t>\\n" || text`` and prefixes the 8-byte big-endian timestamp.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from gateway.notes.errors import BadSignatureError, KeyFormatError

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
_TYPES = {ED25519: "Ed25519", COSIGNATURE_V1: "Ed25519 cosignature/v1"}
_MAX_TIMESTAMP = 2**63 - 1


def check_key_name(name: str) -> None:
    """Refuse key names that are empty or contain Unicode spaces or ``+`` (signed-note)."""
    if not name or "+" in name or any(c.isspace() for c in name):
        raise KeyFormatError(f"key name {name!r} must be non-empty, without spaces or '+'")
    if any(ord(c) < 0x20 for c in name):
        raise KeyFormatError(f"key name {name!r} contains a control character")


def key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || type || public key)[:4]`` (signed-note, tlog-cosignature)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def cosignature_message(text: str, timestamp: int) -> bytes:
    """The bytes a cosignature/v1 signs: header line, time line, then the whole note text."""
    return f"cosignature/v1\ntime {timestamp}\n".encode() + text.encode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class Verifier:
    """A trusted key: name, key ID, signature type and 32-byte Ed25519 public key."""

    name: str
    key_id: bytes
    sig_type: int
    public_key: bytes

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        """Parse ``<name>+<hex key ID>+<base64(type || public key)>``; the ID must match.

        Raises:
            KeyFormatError: malformed, unknown type, wrong key length or mismatched key ID.
        """
        name, sep, rest = vkey.strip().partition("+")
        hex_id, sep2, material = rest.partition("+")
        if not sep or not sep2:
            raise KeyFormatError(f"verifier key {vkey!r} is not <name>+<key id>+<key>")
        check_key_name(name)
        try:
            wanted = bytes.fromhex(hex_id)
            raw = base64.b64decode(material, validate=True)
        except (ValueError, binascii.Error) as e:
            raise KeyFormatError(f"verifier key {vkey!r}: bad hex key ID or base64 key") from e
        if len(hex_id) != 8 or len(raw) != 33 or raw[0] not in _TYPES:
            raise KeyFormatError(
                f"verifier key {vkey!r}: want an 8-digit key ID and type 0x01 or 0x04 "
                "with a 32-byte Ed25519 key"
            )
        computed = key_id(name, raw[0], raw[1:])
        if computed != wanted:
            raise KeyFormatError(
                f"verifier key {vkey!r}: key ID {hex_id} != computed {computed.hex()}"
            )
        return cls(name, computed, raw[0], raw[1:])

    @property
    def vkey(self) -> str:
        """The C2SP vkey text of this key."""
        material = base64.b64encode(bytes([self.sig_type]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    def verify(self, text: str, signature: bytes) -> int | None:
        """Check ``signature`` (without the key ID) over the note ``text``.

        Returns:
            The cosignature timestamp for type 0x04, None for type 0x01.

        Raises:
            BadSignatureError: the signature does not verify.
        """
        key = Ed25519PublicKey.from_public_bytes(self.public_key)
        timestamp: int | None = None
        if self.sig_type == COSIGNATURE_V1:
            if len(signature) != 72:
                raise BadSignatureError(
                    f"cosignature by {self.name} is {len(signature)} bytes, not 8 + 64"
                )
            timestamp = int.from_bytes(signature[:8], "big")
            if timestamp > _MAX_TIMESTAMP:
                raise BadSignatureError(f"cosignature by {self.name}: timestamp above 2^63-1")
            message, sig = cosignature_message(text, timestamp), signature[8:]
        else:
            message, sig = text.encode(), signature
        try:
            key.verify(sig, message)
        except InvalidSignature as e:
            raise BadSignatureError(
                f"{_TYPES[self.sig_type]} signature by {self.name}+{self.key_id.hex()} "
                "does not verify"
            ) from e
        return timestamp


class NoteSigner:
    """Signs note text with an Ed25519 key (type 0x01, or 0x04 for cosignatures)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey, sig_type: int = ED25519) -> None:
        check_key_name(name)
        if sig_type not in _TYPES:
            raise KeyFormatError(f"signature type {sig_type:#04x} is not Ed25519 or 0x04")
        self.name = name
        self.sig_type = sig_type
        self._key = private_key
        self.public_key = _raw_public(private_key.public_key())
        self.key_id = key_id(name, sig_type, self.public_key)

    @property
    def verifier(self) -> Verifier:
        """The verifier key matching this signer."""
        return Verifier(self.name, self.key_id, self.sig_type, self.public_key)

    def signature_line(self, text: str, timestamp: int | None = None) -> str:
        """``— <name> base64(key ID || signature)\\n`` over ``text``.

        Cosigners (type 0x04) need ``timestamp``, POSIX seconds; plain signers refuse one.
        """
        if self.sig_type == COSIGNATURE_V1:
            if timestamp is None or not 0 <= timestamp <= _MAX_TIMESTAMP:
                raise KeyFormatError(
                    f"a cosignature needs a timestamp in 0..2^63-1, got {timestamp}"
                )
            sig = timestamp.to_bytes(8, "big") + self._key.sign(
                cosignature_message(text, timestamp)
            )
        else:
            if timestamp is not None:
                raise KeyFormatError("a plain Ed25519 note signature takes no timestamp")
            sig = self._key.sign(text.encode())
        return f"— {self.name} {base64.b64encode(self.key_id + sig).decode()}\n"
