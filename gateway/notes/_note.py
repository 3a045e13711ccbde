"""C2SP signed-note: text, a blank line, then signature lines ``— <name> <base64>``."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gateway.notes._keys import NoteSigner, Verifier
from gateway.notes.errors import NoteFormatError, UnverifiedNoteError

MAX_SIGNATURES = 100  # the spec asks for at least 16
_DASH = "— "


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key ID and the signature bytes after it."""

    name: str
    key_id: bytes
    signature: bytes

    @property
    def line(self) -> str:
        """The signature line, newline included."""
        return f"{_DASH}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


@dataclass(frozen=True)
class Note:
    """A parsed, not yet verified, note: ``text`` ends in a newline."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def render(self) -> str:
        """The note in wire form."""
        return self.text + "\n" + "".join(s.line for s in self.signatures)


@dataclass(frozen=True)
class VerifiedSignature:
    """A signature that verified, by which key, and its timestamp for cosignatures."""

    verifier: Verifier
    signature: NoteSignature
    timestamp: int | None


def parse_signature_line(line: str) -> NoteSignature:
    """Parse one ``— <name> <base64(key ID || signature)>`` line (the newline is optional).

    Raises:
        NoteFormatError: not a signature line.
    """
    body = line[:-1] if line.endswith("\n") else line
    if not body.startswith(_DASH):
        raise NoteFormatError(f"signature line {body[:60]!r} does not start with an em dash")
    name, space, b64 = body[len(_DASH) :].partition(" ")
    if not space or not name or " " in b64:
        raise NoteFormatError(f"signature line {body[:60]!r} is not '— <name> <base64>'")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (ValueError, binascii.Error) as e:
        raise NoteFormatError(f"signature line of {name}: signature is not base64") from e
    if len(raw) < 5:
        raise NoteFormatError(f"signature line of {name}: {len(raw)} bytes, too short")
    return NoteSignature(name, raw[:4], raw[4:])


def parse_note(note: str | bytes) -> Note:
    """Split a signed note into text and signatures; checks the format only.

    Raises:
        NoteFormatError: not UTF-8, control characters, no blank line, or bad signature lines.
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteFormatError("note is not valid UTF-8") from e
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise NoteFormatError("note contains a control character other than newline")
    if not note.endswith("\n"):
        raise NoteFormatError("note does not end with a newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("note has no blank line before its signatures")
    text, sig_block = note[: split + 1], note[split + 2 :]
    lines = sig_block.splitlines(keepends=True)
    if not lines:
        raise NoteFormatError("note has no signature lines")
    if len(lines) > MAX_SIGNATURES:
        raise NoteFormatError(f"note has {len(lines)} signatures, more than {MAX_SIGNATURES}")
    return Note(text, tuple(parse_signature_line(line) for line in lines))


def sign_note(text: str, signers: Sequence[NoteSigner], timestamp: int | None = None) -> str:
    """A signed note of ``text`` (ending in a newline) with one line per signer."""
    if not text.endswith("\n"):
        raise NoteFormatError("note text must end with a newline")
    if not signers:
        raise NoteFormatError("a signed note needs at least one signer")
    lines = [s.signature_line(text, timestamp if s.sig_type != 0x01 else None) for s in signers]
    return text + "\n" + "".join(lines)


def verify_note(note: Note, verifiers: Iterable[Verifier]) -> list[VerifiedSignature]:
    """Check every signature of a known key; ignore unknown keys (signed-note, Signatures).

    Returns:
        The verified signatures, at least one.

    Raises:
        BadSignatureError: a signature whose name and key ID match a known key fails.
        UnverifiedNoteError: no signature is from a known key.
    """
    known = {(v.name, v.key_id): v for v in verifiers}
    verified: list[VerifiedSignature] = []
    for sig in note.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue
        timestamp = verifier.verify(note.text, sig.signature)
        verified.append(VerifiedSignature(verifier, sig, timestamp))
    if not verified:
        names = ", ".join(f"{v.name}+{v.key_id.hex()}" for v in known.values()) or "none"
        raise UnverifiedNoteError(f"no signature on the note is from a trusted key ({names})")
    return verified


def open_note(
    note: str | bytes, verifiers: Iterable[Verifier]
) -> tuple[Note, list[VerifiedSignature]]:
    """Parse and verify a note; see :func:`parse_note` and :func:`verify_note`."""
    parsed = parse_note(note)
    return parsed, verify_note(parsed, verifiers)
