"""The two interceptors every call passes: error mapping (outermost), then access control.

- :class:`ErrorInterceptor` is the one place where domain errors become gRPC statuses: a
  :class:`~gateway.errors.GatewayError` becomes its ``status`` with a ``google.rpc.Status``
  (``BadRequest`` listing every bad field for ``INVALID_ARGUMENT``, ``ErrorInfo`` otherwise);
  anything else becomes a plain ``INTERNAL`` with an incident id that points to the log. No
  exception text, class name or stack trace ever reaches a caller of another jurisdiction.
- :class:`AccessInterceptor` authenticates the caller's leaf certificate, authorizes the
  method (deny by default), admits the call under the node's limits (:mod:`gateway.server.limits`),
  and only then decodes the request bytes; it hands the caller to the servicer through
  :func:`current_caller` and, for server streams, a :class:`StreamGuard` through
  :func:`current_stream` that ends the stream when the caller's certificate is revoked or the
  stream's lifetime is over.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NoReturn

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from gateway.errors import (
    FieldViolation,
    GatewayError,
    InvalidArgumentError,
    UnauthenticatedError,
    UnavailableError,
    to_status,
)
from gateway.pki.access import Authenticator, Principal, authorize
from gateway.pki.identity import Jurisdiction
from gateway.server.limits import Budget, Limiter, budget_of

__all__ = [
    "AccessInterceptor",
    "ErrorInterceptor",
    "StreamGuard",
    "current_caller",
    "current_stream",
]

log = logging.getLogger("gateway.server")

_CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("caller", default=None)

Behavior = Callable[..., Any]
Wrapper = Callable[..., Behavior]
_POOL_ATTRIBUTE = "experimental_thread_pool"  # grpcio: run this behavior on that executor


def current_caller() -> Principal:
    """The authenticated caller of the RPC being served (set by :class:`AccessInterceptor`)."""
    caller = _CALLER.get()
    if caller is None:
        raise UnauthenticatedError("no authenticated caller for this call")
    return caller


Observer = Callable[[str, str, "float | None"], None]
"""``observe(method, status code name, seconds or None for streams)``, once per call."""


def _status_of(method: str, exc: BaseException) -> status_pb2.Status:
    """The status a caller gets for ``exc``; an unexpected one is logged with an incident id."""
    if isinstance(exc, GatewayError):
        return to_status(exc)
    if isinstance(exc, NotImplementedError):
        return status_pb2.Status(code=code_pb2.UNIMPLEMENTED, message="method not implemented")
    incident = uuid.uuid4().hex[:12]
    log.error("internal error in %s (incident %s)", method, incident, exc_info=exc)
    return status_pb2.Status(
        code=code_pb2.INTERNAL, message=f"internal error (incident {incident})"
    )


def _client_went_away(exc: Exception, context: grpc.ServicerContext) -> bool:
    """grpcio raises a bare ``RpcError`` from a request iterator once the client cancelled or
    closed its stream (e.g. grpcurl ending a reflection stream): not an internal error."""
    return isinstance(exc, grpc.RpcError) and not context.is_active()


def _abort(context: grpc.ServicerContext, status: status_pb2.Status) -> NoReturn:
    """End the call with ``status`` (``abort_with_status`` raises)."""
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("unreachable: abort_with_status raises")


def _code(status: status_pb2.Status) -> str:
    return str(code_pb2.Code.Name(status.code))


def _wrap_handler(
    handler: grpc.RpcMethodHandler[Any, Any] | None, method: str, wrap: Wrapper, raw: bool
) -> Any:
    """Rebuild ``handler`` with its behavior wrapped by ``wrap(behavior, streaming, method)``.

    With ``raw`` the rebuilt handler hands the request bytes over undecoded and ``wrap`` also
    gets the deserializer and whether requests stream, to decode them itself.
    """
    if handler is None:
        return None
    deserializer = None if raw else handler.request_deserializer

    def wrapped(behavior: Behavior, streaming: bool) -> Behavior:
        if raw:
            outer = wrap(
                behavior,
                streaming,
                method,
                handler.request_deserializer,
                handler.request_streaming,
            )
        else:
            outer = wrap(behavior, streaming, method)
        # grpcio picks the thread pool of a call from its outermost behavior, on its polling
        # thread: the pool an inner interceptor chose must survive the outer wrapping.
        pool = getattr(behavior, _POOL_ATTRIBUTE, None)
        if pool is not None and getattr(outer, _POOL_ATTRIBUTE, None) is None:
            setattr(outer, _POOL_ATTRIBUTE, pool)
        return outer

    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrapped(handler.unary_unary, False),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrapped(handler.unary_stream, True),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrapped(handler.stream_unary, False),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        wrapped(handler.stream_stream, True),  # type: ignore[arg-type]
        request_deserializer=deserializer,
        response_serializer=handler.response_serializer,
    )


class _WrappingInterceptor(grpc.ServerInterceptor):
    """An interceptor that wraps each method's behavior with :meth:`_wrap`.

    grpcio asks on every call; the wrapped handler is built once per method and reused while
    the handler beneath stays the same object (it does, for registered services).
    """

    raw_requests = False  # True: the wrapped handler takes request bytes (see _wrap_handler)

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[object, Any]] = {}

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        handler = continuation(handler_call_details)
        known = self._wrapped.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = _wrap_handler(handler, method, self._wrap, self.raw_requests)
        if handler is not None:  # unknown methods are not remembered: callers choose them
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, behavior: Behavior, streaming: bool, method: str) -> Any:
        raise NotImplementedError


class ErrorInterceptor(_WrappingInterceptor):
    """Maps every exception leaving a servicer to a gRPC status (see module docstring), and
    tells ``observe`` (the node's metrics) how each call ended."""

    def __init__(self, observe: Observer | None = None) -> None:
        super().__init__()
        self._observe: Observer = observe or (lambda method, code, seconds: None)

    def _wrap(self, behavior: Behavior, streaming: bool, method: str) -> Behavior:
        observe = self._observe
        if streaming:

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                code = "OK"
                try:
                    yield from behavior(request, context)
                except GeneratorExit:  # the client went away
                    code = "CANCELLED"
                    raise
                except Exception as exc:
                    if _client_went_away(exc, context):
                        code = "CANCELLED"
                        log.debug("client closed its stream of %s", method)
                        return
                    status = _status_of(method, exc)
                    code = _code(status)
                    _abort(context, status)
                finally:
                    observe(method, code, None)

            return stream

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            started = time.perf_counter()
            code = "OK"
            try:
                return behavior(request, context)
            except Exception as exc:
                if _client_went_away(exc, context):  # a client stream the client gave up
                    code = "CANCELLED"
                    log.debug("client closed its stream of %s", method)
                    return None
                status = _status_of(method, exc)
                code = _code(status)
                _abort(context, status)
            finally:
                observe(method, code, time.perf_counter() - started)

        return unary


def _peer_leaf(context: grpc.ServicerContext) -> bytes:
    certs = context.auth_context().get("x509_pem_cert")
    if not certs or not isinstance(certs, list):
        raise UnauthenticatedError("no client certificate was presented")
    return certs[0]


class StreamGuard:
    """What ends an admitted server stream early: the caller's certificate no longer passing
    authentication (revoked by a newly loaded CRL, expired) or the stream's lifetime running
    out. Checked before each message the stream sends; a servicer that waits for messages asks
    :meth:`alive` while it waits, so an idle stream ends too."""

    def __init__(self, reauthenticate: Callable[[], object], lifetime: float) -> None:
        self._reauthenticate = reauthenticate
        self._lifetime = lifetime
        self._deadline = time.monotonic() + lifetime

    def check(self) -> None:
        """Return if the stream may send its next message.

        Raises:
            UnauthenticatedError: the caller's certificate is refused now (e.g. revoked).
            UnavailableError: the stream reached its lifetime; resume with a new one.
        """
        try:
            self._reauthenticate()
        except UnauthenticatedError as exc:
            raise UnauthenticatedError(f"stream ended: {exc}") from None
        if time.monotonic() >= self._deadline:
            raise UnavailableError(
                f"stream ended after its lifetime of {self._lifetime:g} s "
                "(limits.stream_lifetime_seconds): open a new one, resuming from the last "
                "cursor received"
            )

    def alive(self) -> bool:
        """True while :meth:`check` would pass."""
        try:
            self.check()
        except GatewayError:
            return False
        return True


class _Unguarded(StreamGuard):
    def __init__(self) -> None:
        super().__init__(lambda: None, float("inf"))

    def check(self) -> None:
        return None


_GUARD: contextvars.ContextVar[StreamGuard | None] = contextvars.ContextVar("guard", default=None)
_UNGUARDED = _Unguarded()


def current_stream() -> StreamGuard:
    """The guard of the server stream being served (a guard that never fires outside one)."""
    return _GUARD.get() or _UNGUARDED


Deserializer = Callable[[bytes], Any] | None


def _parse(parse: Deserializer, raw: Any, method: str, context: grpc.ServicerContext) -> Any:
    """``raw`` request bytes decoded by the method's deserializer; a caller's bytes that do
    not decode are the caller's mistake (INVALID_ARGUMENT), logged (with the caller's address,
    asked of the context only then), never INTERNAL."""
    if parse is None or not isinstance(raw, bytes):
        return raw
    try:
        return parse(raw)
    except Exception:  # protobuf's DecodeError, or whatever a deserializer raises on bad bytes
        log.warning(
            "undecodable request to %s from %s (%d bytes)",
            method,
            context.peer(),
            len(raw),
            extra={"event": "undecodable", "method": method, "status": "INVALID_ARGUMENT"},
        )
        name = method.rpartition("/")[2]
        problem = FieldViolation(
            "request", f"{len(raw)} bytes that do not decode as the {name} request message"
        )
        raise InvalidArgumentError(str(problem), [problem]) from None


def _parse_each(
    parse: Deserializer, raws: Iterator[Any], method: str, context: grpc.ServicerContext
) -> Iterator[Any]:
    for raw in raws:
        yield _parse(parse, raw, method, context)


class AccessInterceptor(_WrappingInterceptor):
    """Authenticates and authorizes every call, admits it under the node's limits, and only
    then decodes the request; refusals are logged with the rule.

    Requests reach this interceptor as bytes (the method's deserializer is taken out of the
    handler), so a caller without the right to call a method learns PERMISSION_DENIED whatever
    it sent, and bytes that do not decode are INVALID_ARGUMENT, not grpcio's INTERNAL
    "Exception deserializing request!". Server streams are watched by a :class:`StreamGuard`.
    """

    raw_requests = True

    def __init__(
        self,
        authenticator: Authenticator,
        jurisdiction: Jurisdiction,
        limiter: Limiter | None = None,
        reserve: futures.ThreadPoolExecutor | None = None,
    ) -> None:
        """``reserve``: the thread pool of the methods of the reserved budget (Health/Check and
        PeerExchange); grpcio hands their calls to it on its polling thread, so no call of
        another method ever queues in front of them or takes one of its threads."""
        super().__init__()
        self._authenticator = authenticator
        self._jurisdiction = jurisdiction
        self._limiter = limiter
        self._reserve = reserve

    def _admit(self, context: grpc.ServicerContext, method: str, streaming: bool) -> _Admitted:
        try:
            leaf = _peer_leaf(context)
            principal = self._authenticator.authenticate(leaf)
            authorize(method, principal, self._jurisdiction)
            release = (
                self._limiter.admit(method, principal.identity.uri, streaming)
                if self._limiter is not None
                else _nothing
            )
        except GatewayError as exc:
            log.warning(
                "refused %s from %s: %s",
                method,
                context.peer(),
                exc,
                extra={"event": "refused", "method": method, "status": exc.status},
            )
            raise
        return _Admitted(principal, leaf, release)

    def _guard(self, admitted: _Admitted) -> StreamGuard:
        lifetime = self._limiter.limits.stream_lifetime_seconds if self._limiter else float("inf")
        leaf, authenticate = admitted.leaf, self._authenticator.authenticate
        return StreamGuard(lambda: authenticate(leaf), lifetime)

    def _wrap(
        self,
        behavior: Behavior,
        streaming: bool,
        method: str,
        parse: Deserializer = None,
        request_streaming: bool = False,
    ) -> Behavior:
        decode = _parse_each if request_streaming else _parse

        def decoded(raw: Any, context: grpc.ServicerContext) -> Any:
            return decode(parse, raw, method, context)

        if streaming:

            def stream(raw: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                admitted = self._admit(context, method, True)
                guard = self._guard(admitted)
                token, guarded = _CALLER.set(admitted.principal), _GUARD.set(guard)
                try:
                    for message in behavior(decoded(raw, context), context):
                        guard.check()
                        yield message
                except (UnauthenticatedError, UnavailableError) as exc:
                    if str(exc).startswith("stream ended"):
                        log.warning(
                            "%s stream of %s: %s",
                            method,
                            admitted.principal.identity.uri,
                            exc,
                            extra={"event": "stream-ended", "method": method, "status": exc.status},
                        )
                    raise
                finally:
                    _GUARD.reset(guarded)
                    _CALLER.reset(token)
                    admitted.release()

            return stream

        def unary(raw: Any, context: grpc.ServicerContext) -> Any:
            admitted = self._admit(context, method, False)
            token = _CALLER.set(admitted.principal)
            try:
                return behavior(decoded(raw, context), context)
            finally:
                _CALLER.reset(token)
                admitted.release()

        if self._reserve is not None and budget_of(method, False) is Budget.RESERVED:
            setattr(unary, _POOL_ATTRIBUTE, self._reserve)
        return unary


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class _Admitted:
    principal: Principal
    leaf: bytes
    release: Callable[[], None]
