"""The two interceptors every call passes: error mapping (outermost), then access control.

- :class:`ErrorInterceptor` is the one place where domain errors become gRPC statuses: a
  :class:`~gateway.errors.GatewayError` becomes its ``status`` with a ``google.rpc.Status``
  (``BadRequest`` listing every bad field for ``INVALID_ARGUMENT``, ``ErrorInfo`` otherwise);
  anything else becomes a plain ``INTERNAL`` with an incident id that points to the log. No
  exception text, class name or stack trace ever reaches a caller of another jurisdiction.
- :class:`AccessInterceptor` authenticates the caller's leaf certificate and authorizes the
  method (deny by default), then hands the caller to the servicer through :func:`current_caller`.
"""

from __future__ import annotations

import contextvars
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from gateway.errors import GatewayError, UnauthenticatedError, to_status
from gateway.pki.access import Authenticator, Principal, authorize
from gateway.pki.identity import Jurisdiction

__all__ = ["AccessInterceptor", "ErrorInterceptor", "current_caller"]

log = logging.getLogger("gateway.server")

_CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("caller", default=None)

Behavior = Callable[..., Any]
Wrapper = Callable[[Behavior, bool, str], Behavior]


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
    handler: grpc.RpcMethodHandler[Any, Any] | None, method: str, wrap: Wrapper
) -> Any:
    """Rebuild ``handler`` with its behavior wrapped by ``wrap(behavior, streaming, method)``."""
    if handler is None:
        return None
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(
            wrap(handler.unary_unary, False, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            wrap(handler.unary_stream, True, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(
            wrap(handler.stream_unary, False, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        wrap(handler.stream_stream, True, method),  # type: ignore[arg-type]
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class _WrappingInterceptor(grpc.ServerInterceptor):
    """An interceptor that wraps each method's behavior with :meth:`_wrap`.

    grpcio asks on every call; the wrapped handler is built once per method and reused while
    the handler beneath stays the same object (it does, for registered services).
    """

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
        wrapped = _wrap_handler(handler, method, self._wrap)
        if handler is not None:  # unknown methods are not remembered: callers choose them
            self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, behavior: Behavior, streaming: bool, method: str) -> Behavior:
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


class AccessInterceptor(_WrappingInterceptor):
    """Authenticates and authorizes every call; refusals are logged with the rule."""

    def __init__(self, authenticator: Authenticator, jurisdiction: Jurisdiction) -> None:
        super().__init__()
        self._authenticator = authenticator
        self._jurisdiction = jurisdiction

    def _admit(self, context: grpc.ServicerContext, method: str) -> Principal:
        try:
            principal = self._authenticator.authenticate(_peer_leaf(context))
            authorize(method, principal, self._jurisdiction)
        except GatewayError as exc:
            log.warning(
                "refused %s from %s: %s",
                method,
                context.peer(),
                exc,
                extra={"event": "refused", "method": method, "status": exc.status},
            )
            raise
        return principal

    def _wrap(self, behavior: Behavior, streaming: bool, method: str) -> Behavior:
        if streaming:

            def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                token = _CALLER.set(self._admit(context, method))
                try:
                    yield from behavior(request, context)
                finally:
                    _CALLER.reset(token)

            return stream

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            token = _CALLER.set(self._admit(context, method))
            try:
                return behavior(request, context)
            finally:
                _CALLER.reset(token)

        return unary
