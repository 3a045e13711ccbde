"""Why an envelope or receipt was refused. All are the sender's fault."""

from __future__ import annotations

from gateway.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
)

__all__ = [
    "BadSignatureError",
    "MalformedEnvelopeError",
    "NotReleasableError",
    "ReplayError",
    "UntrustedSignerError",
]


class MalformedEnvelopeError(InvalidArgumentError):
    """The envelope's bytes do not parse, or a required header field is missing or wrong."""


class UntrustedSignerError(UnauthenticatedError):
    """The signer certificate does not chain to its jurisdiction, is expired or revoked, or is
    not the origin the header claims."""


class BadSignatureError(UnauthenticatedError):
    """The signature does not verify over the carried bytes: forged or altered."""


class NotReleasableError(PermissionDeniedError):
    """The message is not addressed to, or not releasable to, this jurisdiction."""


class ReplayError(AlreadyExistsError):
    """A message id already recorded with a different digest: a replay or a forgery."""
