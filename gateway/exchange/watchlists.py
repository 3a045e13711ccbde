"""The node's merged watchlist view, kept current from every payload the exchange records."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable

from cryptography.hazmat.primitives import serialization
from google.protobuf.message import Message

from customs.gateway.v1 import common_pb2, domain_pb2, partner_pb2
from gateway.domain.validate import check_declaration
from gateway.domain.watchlist import WatchlistView
from gateway.envelope import Signer, proto_jurisdiction
from gateway.pki.identity import Jurisdiction

__all__ = ["WATCHLIST_KINDS", "Watchlists"]

WATCHLIST_KINDS = (
    common_pb2.MESSAGE_KIND_WATCHLIST_ENTRY,
    common_pb2.MESSAGE_KIND_WATCHLIST_REVOCATION,
)


class Watchlists:
    """A :class:`WatchlistView` behind a lock, fed by the exchange (thread-safe).

    Page tokens are authenticated with a key derived from the node's signing key, so they stay
    valid across restarts of the same node and cannot be forged by callers.
    """

    def __init__(self, signer: Signer, clock: Callable[[], dt.datetime]) -> None:
        raw = signer.private_key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self._view = WatchlistView(
            hashlib.sha256(b"customs-gateway/page-token/v1\n" + raw).digest()
        )
        self._lock = threading.Lock()
        self._clock = clock

    def apply(
        self, origin: Jurisdiction, kind: int, payload: Message, message_id: str, at: dt.datetime
    ) -> None:
        """Exchange listener: merge watchlist entries and revocations, ignore other kinds."""
        if kind not in WATCHLIST_KINDS:
            return
        assert isinstance(payload, domain_pb2.WatchlistEntry | domain_pb2.WatchlistRevocation)
        with self._lock:
            self._view.apply(proto_jurisdiction(origin), payload, message_id, received_at=at)

    def list(self, request: partner_pb2.ListWatchlistRequest) -> partner_pb2.ListWatchlistResponse:
        """A snapshot or delta page of one watchlist."""
        with self._lock:
            return self._view.list_watchlist(request, now=self._clock())

    def screen(
        self, request: partner_pb2.ScreenDeclarationRequest
    ) -> partner_pb2.ScreenDeclarationResponse:
        """Screen a declaration against the entries active now."""
        check_declaration(request.declaration)
        with self._lock:
            return self._view.screen(
                request.declaration, now=self._clock(), watchlists=tuple(request.watchlists)
            )
