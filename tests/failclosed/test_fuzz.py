"""Property: no request of any shape gets INTERNAL or UNKNOWN, and a refused one writes nothing.

Hypothesis builds request bytes for every RPC of every service the node serves, from the
request's own descriptor: fields with extreme integers (0, 2^31, 2^63, 2^64 - 1, negatives as
ten-byte varints), strings that are not UTF-8, nested messages built the same way, fields the
message does not have, wire types that do not match, then truncates some of them at a random
byte, repeats one field thousands of times, or sends plain random bytes. Each goes over real
mutual TLS, from a caller the access table admits (so the request reaches decoding and the
servicer), to one real CN node. After every example: the status is not INTERNAL or UNKNOWN; a
refused request left the ledger as it was; every envelope result of a DeliverBatch has a
caller's status. After each method: the node still answers SERVING.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from customs.gateway.v1 import peer_pb2
from gateway.pki import Role
from gateway.server import Node
from tests.failclosed.runtime_support import (
    CN,
    HK,
    METHODS,
    Method,
    allowed_caller,
    call_raw,
    ledger_state,
)
from tests.support import World, channel_to, running_node

EXTREMES = [0, 1, 2**31 - 1, 2**31, 2**32 - 1, 2**63 - 1, 2**63, 2**64 - 1, -1, -(2**63)]
NOT_UTF8 = [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"a\x00\xfe"]
CALLER_CODES_ONLY = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN}

_VARINT_TYPES = {
    FieldDescriptor.TYPE_INT32,
    FieldDescriptor.TYPE_INT64,
    FieldDescriptor.TYPE_UINT32,
    FieldDescriptor.TYPE_UINT64,
    FieldDescriptor.TYPE_SINT32,
    FieldDescriptor.TYPE_SINT64,
    FieldDescriptor.TYPE_BOOL,
    FieldDescriptor.TYPE_ENUM,
}
_FIXED = {
    FieldDescriptor.TYPE_FIXED32: 4,
    FieldDescriptor.TYPE_SFIXED32: 4,
    FieldDescriptor.TYPE_FLOAT: 4,
    FieldDescriptor.TYPE_FIXED64: 8,
    FieldDescriptor.TYPE_SFIXED64: 8,
    FieldDescriptor.TYPE_DOUBLE: 8,
}


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # negatives as protobuf writes them: ten bytes
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _delimited(number: int, body: bytes) -> bytes:
    return _key(number, 2) + _varint(len(body)) + body


_INTS = st.sampled_from(EXTREMES) | st.integers(-(2**63), 2**64 - 1)
_TEXT = st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass"))
_STRINGS = st.sampled_from(NOT_UTF8) | _TEXT | st.binary(max_size=40)


def _field(field: FieldDescriptor, depth: int) -> st.SearchStrategy[bytes]:
    n = field.number
    if field.type in _VARINT_TYPES:
        return _INTS.map(lambda v: _key(n, 0) + _varint(v))
    if field.type in _FIXED:
        size = _FIXED[field.type]
        return st.binary(min_size=size, max_size=size).map(
            lambda b: _key(n, 5 if size == 4 else 1) + b
        )
    if field.type == FieldDescriptor.TYPE_MESSAGE and depth < 3:
        return _message(field.message_type, depth + 1).map(lambda b: _delimited(n, b))
    return _STRINGS.map(lambda b: _delimited(n, b))


def _stray_bytes(parts: tuple[int, int, bytes]) -> bytes:
    number, wire_type, body = parts
    if wire_type == 0:
        return _key(number, 0) + _varint(int.from_bytes(body[:9] or b"\0", "little"))
    if wire_type == 1:
        return _key(number, 1) + body[:8].ljust(8, b"\0")
    if wire_type == 5:
        return _key(number, 5) + body[:4].ljust(4, b"\0")
    return _delimited(number, body)


# A field the message does not have, or a known number with any wire type.
_STRAY = st.tuples(
    st.integers(1, 2**29 - 1), st.sampled_from([0, 1, 2, 5]), st.binary(max_size=12)
).map(_stray_bytes)


def _message(descriptor: Descriptor, depth: int = 0) -> st.SearchStrategy[bytes]:
    fields = [_field(f, depth) for f in descriptor.fields]
    entry = st.one_of(*fields, _STRAY) if fields else _STRAY
    return st.lists(entry, max_size=6).map(b"".join)


def _requests(method: Method) -> st.SearchStrategy[bytes]:
    structured = _message(method.request.DESCRIPTOR)
    truncated = st.tuples(structured, st.integers(0, 2**16)).map(
        lambda t: t[0][: t[1] % (len(t[0]) + 1)]
    )
    descriptor: Descriptor = method.request.DESCRIPTOR
    if descriptor.fields:
        huge = st.tuples(
            st.one_of(*[_field(f, 2) for f in descriptor.fields]), st.integers(1000, 20000)
        ).map(lambda t: t[0] * t[1] if len(t[0]) * t[1] < 3_000_000 else t[0] * 1000)
    else:
        huge = st.binary(min_size=1000, max_size=4000)
    return st.one_of(st.binary(max_size=256), structured, truncated, huge)


@pytest.fixture(scope="module")
def cn(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("cn-fuzz")
    with running_node(world.write_config(CN, tmp / "cn-data")) as node:
        yield node


@pytest.fixture(scope="module")
def channels(world: World, cn: Node) -> Iterator[dict[str, grpc.Channel]]:
    opened: dict[str, grpc.Channel] = {}
    for method in METHODS:
        cred = allowed_caller(world, method)
        key = cred.identity.uri
        if key not in opened:
            opened[key] = channel_to(world, cn, cred)
        opened[str(method)] = opened[key]
    yield opened
    for channel in {id(c): c for c in opened.values()}.values():
        channel.close()


def _check_results(method: Method, response: bytes) -> bool:
    """For DeliverBatch: every envelope's error is a caller's status; True if all refused."""
    if method.name != "DeliverBatch":
        return False
    results = peer_pb2.DeliverBatchResponse.FromString(response).results
    for result in results:
        if result.HasField("error"):
            assert result.error.code not in (code_pb2.INTERNAL, code_pb2.UNKNOWN), result.error
    return all(r.HasField("error") for r in results)


@pytest.mark.parametrize("method", METHODS, ids=str)
def test_no_request_of_any_shape_is_internal(
    world: World, cn: Node, channels: dict[str, grpc.Channel], method: Method
) -> None:
    channel = channels[str(method)]
    timeout = 0.5 if method.response_streaming else 5.0

    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(payload=_requests(method))
    def one(payload: bytes) -> None:
        before = ledger_state(cn)
        code, details, responses = call_raw(channel, method, payload, timeout=timeout)
        assert code not in CALLER_CODES_ONLY, (code, details, payload[:64])
        refused = code is not grpc.StatusCode.OK
        if not refused and responses:
            refused = _check_results(method, responses[0])
        if refused:
            assert ledger_state(cn) == before, (code, details)

    one()
    with channel_to(world, cn, world.cred(HK, Role.AUDITOR)) as probe:
        status = health_pb2_grpc.HealthStub(probe).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert status.status == health_pb2.HealthCheckResponse.SERVING
