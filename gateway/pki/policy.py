"""Who may call what: the authorization table, deny by default (pure).

One table, :data:`RULES`, lists every allowed combination of service, caller role and the
caller's jurisdiction relative to the node's (the same administration, another one, or either).
A call that no rule allows is refused, and the refusal names the rule that governs the service
(or ``deny-by-default`` when none does) so an operator can see why from the log line alone.

======================  ==========================================  ===========  ==========
rule                    service                                     roles        relation
======================  ==========================================  ===========  ==========
health                  grpc.health.v1.Health                       any          any
reflection              grpc.reflection.v1(alpha).ServerReflection  any          any
partner-own-            customs.gateway.v1.PartnerGateway           partner      own
jurisdiction
peer-nodes-only         customs.gateway.v1.PeerExchange             node         other
auditors-read-only      customs.gateway.v1.LedgerAudit              auditor      any
metrics-own-monitors    https.Metrics (``GET /metrics``, not gRPC)  monitor      own
status-own-operators    customs.gateway.v1.NodeStatus               monitor,     own
                                                                    node
======================  ==========================================  ===========  ==========

"Any" still means an *authenticated* caller: authentication runs before authorization.
The metrics endpoint is HTTPS with client certificates (ADR 0008); it asks this table for
:data:`METRICS_METHOD`, so there is one table for every door of the node.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.errors import PermissionDeniedError
from gateway.pki.identity import Jurisdiction, Role, SpiffeId

__all__ = [
    "METRICS_METHOD",
    "RULES",
    "Relation",
    "Rule",
    "authorize",
    "relation_of",
    "rule_for_service",
]

METRICS_METHOD = "/https.Metrics/Scrape"
"""What the HTTPS metrics endpoint asks :func:`authorize` for (it is not a gRPC method)."""


class Relation(enum.StrEnum):
    """The caller's jurisdiction relative to the node's."""

    OWN = "own"
    OTHER = "other"
    ANY = "any"

    def admits(self, caller: Jurisdiction, node: Jurisdiction) -> bool:
        """True when a caller of ``caller``'s jurisdiction fits this relation to ``node``."""
        if self is Relation.ANY:
            return True
        return (caller is node) == (self is Relation.OWN)


ALL_ROLES = frozenset(Role)


@dataclass(frozen=True)
class Rule:
    """An allow rule: callers with one of ``roles`` in ``relation`` may call every RPC of
    ``service``."""

    name: str
    service: str
    roles: frozenset[Role]
    relation: Relation
    meaning: str

    def admits(self, identity: SpiffeId, node: Jurisdiction) -> bool:
        """True when ``identity`` may call this rule's service on ``node``'s node."""
        return identity.role in self.roles and self.relation.admits(identity.jurisdiction, node)


RULES: tuple[Rule, ...] = (
    Rule("health", "grpc.health.v1.Health", ALL_ROLES, Relation.ANY, "any authenticated caller"),
    Rule(
        "reflection",
        "grpc.reflection.v1alpha.ServerReflection",
        ALL_ROLES,
        Relation.ANY,
        "any authenticated caller (the API schema is public)",
    ),
    Rule(
        "reflection",
        "grpc.reflection.v1.ServerReflection",
        ALL_ROLES,
        Relation.ANY,
        "any authenticated caller (the API schema is public)",
    ),
    Rule(
        "partner-own-jurisdiction",
        "customs.gateway.v1.PartnerGateway",
        frozenset({Role.PARTNER}),
        Relation.OWN,
        "partners of this node's jurisdiction only",
    ),
    Rule(
        "peer-nodes-only",
        "customs.gateway.v1.PeerExchange",
        frozenset({Role.NODE}),
        Relation.OTHER,
        "nodes of the other jurisdictions only",
    ),
    Rule(
        "auditors-read-only",
        "customs.gateway.v1.LedgerAudit",
        frozenset({Role.AUDITOR}),
        Relation.ANY,
        "auditors of any jurisdiction",
    ),
    Rule(
        "status-own-operators",
        "customs.gateway.v1.NodeStatus",
        frozenset({Role.MONITOR, Role.NODE}),
        Relation.OWN,
        "this node's own jurisdiction's monitors and nodes only (customs-gateway status)",
    ),
    Rule(
        "metrics-own-monitors",
        "https.Metrics",
        frozenset({Role.MONITOR}),
        Relation.OWN,
        "monitoring systems of this node's jurisdiction only",
    ),
)

_BY_SERVICE: dict[str, Rule] = {r.service: r for r in RULES}


def relation_of(caller: Jurisdiction, node: Jurisdiction) -> Relation:
    """``OWN`` when the caller belongs to the node's jurisdiction, else ``OTHER``."""
    return Relation.OWN if caller is node else Relation.OTHER


def _service_of(method: str) -> str:
    # gRPC method names are "/package.Service/Method"
    parts = method.split("/")
    if len(parts) != 3 or parts[0] or not parts[1] or not parts[2]:
        return ""
    return parts[1]


def rule_for_service(method: str) -> Rule | None:
    """The rule governing the service of ``method`` (``/pkg.Service/Method``), if any."""
    return _BY_SERVICE.get(_service_of(method))


def authorize(method: str, identity: SpiffeId | object, node: Jurisdiction) -> Rule:
    """Allow ``identity`` to call ``method`` on the node of ``node``, or refuse.

    ``identity`` is a :class:`SpiffeId` or anything with an ``identity`` attribute holding
    one (such as :class:`gateway.pki.access.Principal`).

    Returns:
        The rule that allowed the call.

    Raises:
        PermissionDeniedError: ``rule <name>: ...`` naming the governing rule, what it admits
            and who the caller is; ``rule deny-by-default`` for a method no rule covers.
    """
    who = identity if isinstance(identity, SpiffeId) else getattr(identity, "identity", None)
    if not isinstance(who, SpiffeId):
        raise PermissionDeniedError("rule deny-by-default: the caller has no identity")
    rule = rule_for_service(method)
    if rule is None:
        raise PermissionDeniedError(
            f"rule deny-by-default: no rule allows {who.uri} to call {method}"
        )
    if not rule.admits(who, node):
        relation = relation_of(who.jurisdiction, node)
        raise PermissionDeniedError(
            f"rule {rule.name}: {rule.service} on the {node} node is for {rule.meaning}; "
            f"{who.uri} is a {who.jurisdiction} {who.role} ({relation} jurisdiction)"
        )
    return rule
