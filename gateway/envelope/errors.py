"""Why an envelope or receipt was refused. All are the sender's fault."""

from __future__ import annotations

from gateway.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
)

__all__ = [
    "BadSignatureError",
    "ClockSkewError",
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


class ClockSkewError(FailedPreconditionError):
    """The envelope was created ahead of this node's clock by more than the allowed skew: one
    of the two clocks is wrong, and a later attempt (or a fixed clock) may succeed."""
