"""The root of every error the gateway raises on purpose.

Each trust boundary has its own subtree (``LedgerError``, ``PkiError``, ``ValidationError``, ...)
defined in its own package; all of them descend from :class:`GatewayError`, which says whose
fault the error is through :attr:`GatewayError.status`, the name of a gRPC status code. The
server maps these to gRPC statuses in one interceptor; the CLI maps them to exit codes. This
module imports nothing from gRPC, so the pure core can raise these errors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2

__all__ = [
    "AlreadyExistsError",
    "FailedPreconditionError",
    "FieldViolation",
    "GatewayError",
    "InvalidArgumentError",
    "NotFoundError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "to_status",
]

ERROR_DOMAIN = "customs-exchange"


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: its path (``notice.goods[0].actual_hs_code``) and why."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}"


class GatewayError(Exception):
    """Base of all deliberate errors. ``status`` names the gRPC code a caller receives.

    The message is safe to show to a caller of another jurisdiction: it carries the numbers
    needed to act (indexes, sizes, hashes in hex) and no internals.
    """

    status: ClassVar[str] = "INTERNAL"
    # Extra protobuf messages for the google.rpc.Status details (e.g. a WitnessConflict).
    details: Sequence[Message] = ()


class InvalidArgumentError(GatewayError):
    """The caller sent something malformed; ``violations`` lists every bad field."""

    status = "INVALID_ARGUMENT"

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.violations: list[FieldViolation] = list(violations or [])


class NotFoundError(GatewayError):
    """The thing asked for does not exist here."""

    status = "NOT_FOUND"


class AlreadyExistsError(GatewayError):
    """An identifier was reused for different content (a replay or a forgery)."""

    status = "ALREADY_EXISTS"


class FailedPreconditionError(GatewayError):
    """The request is well formed but does not fit the current state (e.g. a stale version)."""

    status = "FAILED_PRECONDITION"


class PermissionDeniedError(GatewayError):
    """The caller is known but not allowed to do this."""

    status = "PERMISSION_DENIED"


class UnauthenticatedError(GatewayError):
    """The caller could not be identified (no, unknown, expired or revoked certificate)."""

    status = "UNAUTHENTICATED"


class ResourceExhaustedError(GatewayError):
    """A limit of the node is reached (the caller's own share or a budget of the node); the
    message names the limit, ``details`` carry a ``google.rpc.QuotaFailure``. Retry later."""

    status = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, details: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self.details = tuple(details)


class UnavailableError(GatewayError):
    """The node cannot serve now (shutting down, storage unavailable); retrying may succeed."""

    status = "UNAVAILABLE"


def to_status(exc: GatewayError) -> status_pb2.Status:
    """The ``google.rpc.Status`` a caller receives for ``exc``, with its details.

    ``INVALID_ARGUMENT`` carries a ``BadRequest`` listing every bad field; everything else an
    ``ErrorInfo`` naming the error class.
    """
    code = getattr(code_pb2, exc.status, code_pb2.INTERNAL)
    detail = any_pb2.Any()
    if isinstance(exc, InvalidArgumentError) and exc.violations:
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in exc.violations
                ]
            )
        )
    else:
        detail.Pack(error_details_pb2.ErrorInfo(reason=type(exc).__name__, domain=ERROR_DOMAIN))
    extra = []
    for message in exc.details:
        packed = any_pb2.Any()
        packed.Pack(message)
        extra.append(packed)
    return status_pb2.Status(code=code, message=str(exc), details=[detail, *extra])
