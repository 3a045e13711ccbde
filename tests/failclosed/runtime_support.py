"""Shared by the runtime fail-closed tests: every method the node serves, the caller the access
table lets through to each, raw-byte calls, and a look at the ledger before and after."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.descriptor import ServiceDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from customs.gateway.v1 import audit_pb2, common_pb2, envelope_pb2, partner_pb2, peer_pb2
from gateway.domain.fixtures import seed_notice_request
from gateway.envelope import Signer, seal
from gateway.pki import Jurisdiction, Role
from gateway.server import Node
from tests.support import Credential, World

T = TypeVar("T")
CN, HK, MO = Jurisdiction.CN, Jurisdiction.HK, Jurisdiction.MO
PROTO = {
    CN: common_pb2.JURISDICTION_CN,
    HK: common_pb2.JURISDICTION_HK,
    MO: common_pb2.JURISDICTION_MO,
}


@dataclass(frozen=True)
class Method:
    """One RPC of the node: full name, its request message class and how it streams."""

    service: ServiceDescriptor
    name: str
    request: Any
    request_streaming: bool
    response_streaming: bool

    @property
    def path(self) -> str:
        """``/package.Service/Method``."""
        return f"/{self.service.full_name}/{self.name}"

    def __str__(self) -> str:
        return f"{self.service.name}/{self.name}"


def _methods(*modules: Any) -> list[Method]:
    found = []
    for module in modules:
        for service in module.DESCRIPTOR.services_by_name.values():
            for m in service.methods:
                request = getattr(module, m.input_type.name, None)
                if request is None:  # the request type lives in another module
                    from google.protobuf import message_factory

                    request = message_factory.GetMessageClass(m.input_type)
                found.append(
                    Method(service, m.name, request, m.client_streaming, m.server_streaming)
                )
    return found


METHODS = _methods(partner_pb2, peer_pb2, audit_pb2, health_pb2, reflection_pb2)


def allowed_caller(world: World, method: Method) -> Credential:
    """A caller the access table admits to ``method`` at the CN node."""
    service = method.service.full_name
    if service.endswith("PartnerGateway"):
        return world.cred(CN, Role.PARTNER)
    if service.endswith("PeerExchange"):
        return world.cred(HK, Role.NODE)
    if service.endswith("LedgerAudit"):
        return world.cred(HK, Role.AUDITOR)
    return world.cred(HK, Role.PARTNER)  # health and reflection: anyone authenticated


def denied_caller(world: World, method: Method) -> Credential | None:
    """A caller the access table refuses for ``method`` at the CN node (None: none is)."""
    service = method.service.full_name
    if service.endswith("PartnerGateway"):
        return world.cred(HK, Role.PARTNER)  # partners call only their own jurisdiction
    if service.endswith("PeerExchange"):
        return world.cred(CN, Role.PARTNER)  # only nodes of other jurisdictions
    if service.endswith("LedgerAudit"):
        return world.cred(CN, Role.PARTNER)  # auditors only
    return None


def call_raw(
    channel: grpc.Channel, method: Method, payload: bytes, timeout: float = 5.0
) -> tuple[grpc.StatusCode, str, list[bytes]]:
    """Send ``payload`` as the request bytes of ``method``; return (code, details, responses).

    A server stream is read until its first response (then cancelled) or its end.
    """
    path = method.path
    try:
        if method.request_streaming:
            call = channel.stream_stream(path)(iter([payload]), timeout=timeout)
            return _first(call)
        if method.response_streaming:
            return _first(channel.unary_stream(path)(payload, timeout=timeout))
        response, call = channel.unary_unary(path).with_call(payload, timeout=timeout)
        return grpc.StatusCode.OK, "", [response]
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", []


def _first(call: Any) -> tuple[grpc.StatusCode, str, list[bytes]]:
    got: list[bytes] = []
    try:
        for response in call:
            got.append(response)
            break
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", got
    call.cancel()
    return grpc.StatusCode.OK, "", got


@dataclass(frozen=True)
class LedgerState:
    """What the ledger holds: its size and root."""

    size: int
    root: bytes


def ledger_state(node: Node) -> LedgerState:
    """The node's ledger size and root now."""
    size = node.ledger.size()
    return LedgerState(size, node.ledger.root(size))


def sealed_notice(world: World, origin: Jurisdiction, to: Jurisdiction) -> envelope_pb2.Envelope:
    """A genuine seizure notice envelope from ``origin``'s node to ``to``, signed by it."""
    request = seed_notice_request(dt.datetime.now(dt.UTC))
    request.notice.notice_id = str(uuid.uuid4())
    request.notice.case_reference = f"{origin.value}-{uuid.uuid4().hex[:8]}"
    handling = request.addressing.handling
    del handling.releasable_to[:]
    handling.releasable_to.append(PROTO[to])
    header = envelope_pb2.EnvelopeHeader(
        message_id=str(uuid.uuid4()),
        kind=common_pb2.MESSAGE_KIND_SEIZURE_NOTICE,
        origin=PROTO[origin],
        origin_node=f"spiffe://{origin.trust_domain}/node/gateway",
        recipients=[PROTO[to]],
        handling=handling,
    )
    header.created_at.FromDatetime(dt.datetime.now(dt.UTC))
    cred = world.signing(origin)
    signer = Signer(cred.identity, cred.issued.private_key, cred.issued.certificate)  # type: ignore[arg-type]
    return seal(header, request.notice.SerializeToString(), signer)


def collect(call: Any) -> Iterator[Any]:
    """Iterate a server stream (helper for threads)."""
    yield from call
