"""Status: where a message this node sent is, per recipient (``GetDeliveryStatus``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from customs.gateway.v1 import common_pb2, partner_pb2
from gateway.envelope import proto_jurisdiction
from gateway.errors import NotFoundError
from gateway.exchange import _store as store
from gateway.pki.identity import Jurisdiction

if TYPE_CHECKING:
    from gateway.exchange.core import Exchange

__all__ = ["delivery_status"]


def delivery_status(ex: Exchange, message_id: str) -> partner_pb2.DeliveryStatus:
    """Where a message this node sent is, per recipient.

    Raises:
        NotFoundError: this node sent no message ``message_id``.
    """
    reader = ex.ledger.reader()
    row = store.MessageRow.get(reader, ex.jurisdiction.value, message_id)
    if row is None or row.direction != "out":
        raise NotFoundError(f"no message {message_id!r} sent by this node")
    status = partner_pb2.DeliveryStatus(
        message_id=message_id,
        kind=cast(common_pb2.MessageKind, row.kind),
        ledger_index=row.ledger_index,
    )
    for out in store.outbox_of(reader, message_id):
        recipient = partner_pb2.RecipientStatus(
            recipient=proto_jurisdiction(Jurisdiction(out.recipient)),
            state=cast(partner_pb2.DeliveryState, out.state),
            attempts=out.attempts,
            last_error=out.last_error,
        )
        if out.state == store.FAILING:
            recipient.next_attempt_at.FromMilliseconds(out.next_attempt_ms)
        if out.receipt:
            recipient.receipt.ParseFromString(out.receipt)
        status.recipients.append(recipient)
    return status
