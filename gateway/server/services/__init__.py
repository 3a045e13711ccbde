"""Thin gRPC servicers: convert requests, call the exchange and ledger, return responses.

They raise :class:`gateway.errors.GatewayError`; the error interceptor turns it into a status.
"""

from gateway.server.services.audit import AuditService
from gateway.server.services.partner import PartnerService
from gateway.server.services.peer import PeerService

__all__ = ["AuditService", "PartnerService", "PeerService"]
