"""Errors of signed notes, checkpoints and cosignatures."""

from __future__ import annotations

from gateway.errors import GatewayError

__all__ = [
    "BadSignatureError",
    "CheckpointFormatError",
    "KeyFormatError",
    "NoteError",
    "NoteFormatError",
    "UnverifiedNoteError",
]


class NoteError(GatewayError):
    """Base of every note failure: the note's sender is at fault."""

    status = "INVALID_ARGUMENT"


class NoteFormatError(NoteError):
    """The bytes are not a well-formed C2SP signed note."""


class KeyFormatError(NoteError):
    """A key name or verifier key (vkey) is malformed or its key ID does not match."""


class CheckpointFormatError(NoteError):
    """The note text is not a well-formed C2SP tlog-checkpoint body."""


class BadSignatureError(NoteError):
    """A signature from a known key does not verify."""


class UnverifiedNoteError(NoteError):
    """No signature from a trusted key is on the note."""
