"""C2SP tlog-checkpoint bodies and tlog-cosignature/v1 cosigning of them."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from gateway.notes._keys import COSIGNATURE_V1, NoteSigner, Verifier
from gateway.notes._note import parse_signature_line
from gateway.notes.errors import CheckpointFormatError, KeyFormatError, UnverifiedNoteError

_SIZE = re.compile(r"0|[1-9][0-9]*")


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, size and 32-byte root hash, plus optional extension lines."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise CheckpointFormatError(f"origin {self.origin!r} must be one non-empty line")
        if self.size < 0:
            raise CheckpointFormatError(f"checkpoint size {self.size} is negative")
        if len(self.root_hash) != 32:
            raise CheckpointFormatError(f"root hash is {len(self.root_hash)} bytes, not 32")
        for ext in self.extensions:
            if not ext or "\n" in ext:
                raise CheckpointFormatError(f"extension line {ext!r} must be one non-empty line")

    def body(self) -> str:
        """The note text: origin, decimal size, base64 root, extensions, each with a newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "".join(f"{line}\n" for line in (*lines, *self.extensions))


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body (the text of a note, without signatures).

    Raises:
        CheckpointFormatError: fewer than three lines, a size with leading zeros, a root that
            is not the base64 of 32 bytes, or an empty extension line.
    """
    if not text.endswith("\n"):
        raise CheckpointFormatError("checkpoint text does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointFormatError(f"checkpoint has {len(lines)} lines, needs at least 3")
    origin, size_text, root_text, *extensions = lines
    if not _SIZE.fullmatch(size_text):
        raise CheckpointFormatError(f"checkpoint size {size_text!r} is not a plain decimal")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (ValueError, binascii.Error) as e:
        raise CheckpointFormatError(f"checkpoint root {root_text!r} is not base64") from e
    return Checkpoint(origin, int(size_text), root, tuple(extensions))


def cosign(checkpoint_body: str, signer: NoteSigner, timestamp: int) -> str:
    """A tlog-cosignature/v1 signature line over ``checkpoint_body`` at POSIX time ``timestamp``.

    The caller (the witness) must have checked consistency with the last checkpoint it cosigned
    for this origin; this function only signs.
    """
    if signer.sig_type != COSIGNATURE_V1:
        raise KeyFormatError(f"cosigner {signer.name} must use signature type 0x04")
    parse_checkpoint(checkpoint_body)
    return signer.signature_line(checkpoint_body, timestamp)


def verify_cosignature(checkpoint_body: str, line: str, verifier: Verifier) -> int:
    """Check one cosignature line over ``checkpoint_body``; return its timestamp.

    Raises:
        UnverifiedNoteError: the line is not from ``verifier`` (name and key ID differ).
        BadSignatureError: it is, and the signature does not verify.
    """
    if verifier.sig_type != COSIGNATURE_V1:
        raise KeyFormatError(f"verifier {verifier.name} is not a cosignature/v1 key")
    sig = parse_signature_line(line)
    if (sig.name, sig.key_id) != (verifier.name, verifier.key_id):
        raise UnverifiedNoteError(
            f"cosignature line is by {sig.name}+{sig.key_id.hex()}, "
            f"not {verifier.name}+{verifier.key_id.hex()}"
        )
    timestamp = verifier.verify(checkpoint_body, sig.signature)
    assert timestamp is not None
    return timestamp
