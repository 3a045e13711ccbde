"""Fetch a node's status over mutual TLS (``NodeStatus.GetStatus``) as a :class:`NodeStatus`."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import grpc
from google.protobuf import timestamp_pb2

from customs.gateway.v1 import status_pb2, status_pb2_grpc
from gateway.errors import InvalidArgumentError, PermissionDeniedError, UnavailableError
from gateway.pki.authority import identity_of
from gateway.pki.identity import IdentityError, Jurisdiction, Role, SpiffeId
from gateway.pki.pem import load_certificate
from gateway.status._model import (
    CertificateInUse,
    CheckpointStatus,
    CrlInForce,
    LeaseStatus,
    NodeStatus,
    PeerStatus,
)
from gateway.transport import ClientIdentity, secure_channel

__all__ = [
    "NodeUnreachableError",
    "fetch_status",
    "from_proto",
    "status_with_certificate",
    "status_with_config",
]

DEFAULT_TIMEOUT = 15.0  # seconds; the node probes its peers (a few seconds each, in parallel)


class NodeUnreachableError(UnavailableError):
    """The node did not answer: it is down, or not at that address (needs attention)."""


def _time(ts: timestamp_pb2.Timestamp) -> dt.datetime:
    return ts.ToDatetime(tzinfo=dt.UTC)


def _maybe(message: object, name: str) -> dt.datetime | None:
    has = getattr(message, "HasField")  # noqa: B009 - generated messages, untyped
    return _time(getattr(message, name)) if has(name) else None


def from_proto(response: status_pb2.GetStatusResponse, address: str) -> NodeStatus:
    """The typed form of a ``GetStatusResponse`` from the node at ``address``."""
    checkpoint = None
    if response.HasField("checkpoint"):
        c = response.checkpoint
        checkpoint = CheckpointStatus(c.size, _time(c.created_at), tuple(c.cosigners))
    peers = tuple(
        PeerStatus(
            jurisdiction=p.jurisdiction,
            address=p.address,
            reachable=p.reachable,
            probe_error=p.probe_error,
            queued=p.queued,
            failing=p.failing,
            oldest_pending=_maybe(p, "oldest_pending"),
            consecutive_failures=p.consecutive_failures,
            last_success=_maybe(p, "last_success"),
            last_failure=_maybe(p, "last_failure"),
            last_error=p.last_error,
            cosigned_size=p.cosigned_size,
        )
        for p in response.peers
    )
    certificates = tuple(
        CertificateInUse(
            c.name, c.subject, c.serial, _time(c.not_before), _time(c.not_after), c.fingerprint
        )
        for c in response.certificates
    )
    crls = tuple(
        CrlInForce(c.issuer, c.number, _time(c.this_update), _maybe(c, "next_update"), c.revoked)
        for c in response.crls
    )
    return NodeStatus(
        address=address,
        identity=response.identity,
        jurisdiction=response.jurisdiction,
        version=response.version,
        now=_time(response.now),
        started_at=_maybe(response, "started_at"),
        ledger_size=response.ledger_size,
        checkpoint=checkpoint,
        peers=peers,
        certificates=certificates,
        crls=crls,
        expiry_warning_days=response.expiry_warning_days,
        checkpoint_interval_seconds=response.checkpoint_interval_seconds,
        storage=response.storage or "sqlite",
        replica=response.replica,
        leases=tuple(
            LeaseStatus(
                name=lease.name,
                holder=lease.holder,
                epoch=lease.epoch,
                acquired_at=_maybe(lease, "acquired_at"),
                expires_in_seconds=lease.expires_in_seconds,
                here=lease.here,
            )
            for lease in response.leases
        ),
        lease_seconds=response.lease_seconds,
    )


def fetch_status(
    address: str, identity: ClientIdentity, server: SpiffeId, *, timeout: float = DEFAULT_TIMEOUT
) -> NodeStatus:
    """Ask the node ``server`` at ``address`` for its status.

    Raises:
        NodeUnreachableError: no answer (down, wrong address, or TLS failed before any call).
        PermissionDeniedError: the node refused the caller (the message names the rule).
    """
    with secure_channel(address, identity, server) as channel:
        stub = status_pb2_grpc.NodeStatusStub(channel)
        try:
            response = stub.GetStatus(status_pb2.GetStatusRequest(), timeout=timeout)
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
            if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
                raise PermissionDeniedError(
                    f"node {server.uri} at {address} refused the status request: {details}"
                ) from None
            if code is grpc.StatusCode.UNIMPLEMENTED:
                raise InvalidArgumentError(
                    f"{address} does not serve NodeStatus (an older node, or not a gateway)"
                ) from None
            raise NodeUnreachableError(
                f"node {server.uri} at {address} unreachable: {code.name}: {details}"
            ) from None
    return from_proto(response, address)


def _dial_address(listen: str) -> str:
    host, _, port = listen.rpartition(":")
    if port == "0":
        raise InvalidArgumentError(
            f"the node listens on {listen} (a port chosen at start): give its ADDRESS instead"
        )
    if host in ("0.0.0.0", ""):  # noqa: S104 - the wildcard the node binds, dialled locally
        host = "127.0.0.1"
    elif host in ("[::]", "::"):
        host = "[::1]"
    return f"{host}:{port}"


def status_with_config(
    config: str | Path, *, address: str | None = None, timeout: float = DEFAULT_TIMEOUT
) -> NodeStatus:
    """The status of the node of ``config``, asked with the node's own TLS certificate.

    Raises:
        ConfigError: the config is not usable (one line naming the key).
        NodeUnreachableError, PermissionDeniedError: as :func:`fetch_status`.
    """
    # the config format lives with the server
    from gateway.server.config import LISTEN_ADDRESS_FILE, load_config

    cfg = load_config(config)
    identity = ClientIdentity.from_files(
        cfg.tls_certificate, cfg.tls_key, cfg.trust_bundle, server_jurisdiction=cfg.jurisdiction
    )
    if address is None and cfg.listen.endswith(":0"):
        # a node on a port chosen at start writes the address it got into its data directory
        written = cfg.data_dir / LISTEN_ADDRESS_FILE
        if written.is_file():
            address = written.read_text(encoding="utf-8").strip()
    return fetch_status(
        address or _dial_address(cfg.listen), identity, cfg.identity, timeout=timeout
    )


def status_with_certificate(
    address: str,
    certificate: Path,
    key: Path,
    trust_bundle: Path,
    *,
    name: str = "gateway",
    timeout: float = DEFAULT_TIMEOUT,
) -> NodeStatus:
    """The status of the node at ``address``, asked with an operator's ``monitor`` (or node)
    certificate; the node must be of the certificate's jurisdiction, named ``name``.

    Raises:
        InvalidArgumentError: the certificate carries no customs-exchange identity.
        NodeUnreachableError, PermissionDeniedError: as :func:`fetch_status`.
    """
    cert = load_certificate(certificate)
    try:
        caller = identity_of(cert)
    except IdentityError as exc:
        raise InvalidArgumentError(f"{certificate}: {exc}") from None
    jurisdiction: Jurisdiction = caller.jurisdiction
    identity = ClientIdentity.from_files(
        certificate, key, trust_bundle, server_jurisdiction=jurisdiction
    )
    server = SpiffeId(jurisdiction, Role.NODE, name)
    return fetch_status(address, identity, server, timeout=timeout)
