"""C2SP signed notes, tlog-checkpoints and tlog-cosignature/v1 with Ed25519 (pure).

Byte-exact to c2sp.org/signed-note, c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature, so
any independent note verifier accepts what this signs.
"""

from gateway.notes._checkpoint import Checkpoint, cosign, parse_checkpoint, verify_cosignature
from gateway.notes._keys import (
    COSIGNATURE_V1,
    ED25519,
    NoteSigner,
    Verifier,
    cosignature_message,
    key_id,
)
from gateway.notes._note import (
    Note,
    NoteSignature,
    VerifiedSignature,
    open_note,
    parse_note,
    parse_signature_line,
    sign_note,
    verify_note,
)
from gateway.notes.errors import (
    BadSignatureError,
    CheckpointFormatError,
    KeyFormatError,
    NoteError,
    NoteFormatError,
    UnverifiedNoteError,
)

__all__ = [
    "COSIGNATURE_V1",
    "ED25519",
    "BadSignatureError",
    "Checkpoint",
    "CheckpointFormatError",
    "KeyFormatError",
    "Note",
    "NoteError",
    "NoteFormatError",
    "NoteSignature",
    "NoteSigner",
    "UnverifiedNoteError",
    "VerifiedSignature",
    "Verifier",
    "cosign",
    "cosignature_message",
    "key_id",
    "open_note",
    "parse_checkpoint",
    "parse_note",
    "parse_signature_line",
    "sign_note",
    "verify_cosignature",
    "verify_note",
]
