"""The authorization table, checked over every RPC x role x jurisdiction relation.

The expected outcome is written here independently of ``gateway.pki.policy.RULES``: for every
method the node serves (read from the generated service descriptors, so a new RPC is covered
automatically), every role and every pair of caller/node jurisdictions.
"""

from __future__ import annotations

import itertools

import pytest

from customs.gateway.v1 import audit_pb2, partner_pb2, peer_pb2
from gateway.errors import PermissionDeniedError
from gateway.pki import Jurisdiction, Role, SpiffeId, authorize

SERVICES = {
    d.full_name: [m.name for m in d.methods]
    for module in (audit_pb2, partner_pb2, peer_pb2)
    for d in module.DESCRIPTOR.services_by_name.values()
}
SERVICES["grpc.health.v1.Health"] = ["Check", "Watch"]
SERVICES["grpc.reflection.v1alpha.ServerReflection"] = ["ServerReflectionInfo"]
SERVICES["grpc.reflection.v1.ServerReflection"] = ["ServerReflectionInfo"]
SERVICES["https.Metrics"] = ["Scrape"]  # the HTTPS metrics endpoint asks the same table


def expected(service: str, role: Role, same_jurisdiction: bool) -> str | None:
    """None when allowed, else the name of the rule that refuses."""
    short = service.rsplit(".", 1)[-1]
    if short in ("Health", "ServerReflection"):
        return None
    if short == "PartnerGateway":
        return None if role is Role.PARTNER and same_jurisdiction else "partner-own-jurisdiction"
    if short == "PeerExchange":
        return None if role is Role.NODE and not same_jurisdiction else "peer-nodes-only"
    if short == "LedgerAudit":
        return None if role is Role.AUDITOR else "auditors-read-only"
    if short == "Metrics":
        return None if role is Role.MONITOR and same_jurisdiction else "metrics-own-monitors"
    return "deny-by-default"


CASES = [
    pytest.param(
        f"/{service}/{method}", role, caller, node, id=f"{method}-{caller}-{role}-at-{node}"
    )
    for service, methods in SERVICES.items()
    for method in methods
    for role in Role
    for caller, node in itertools.product(Jurisdiction, repeat=2)
]


def test_every_service_of_the_api_is_governed_by_a_rule():
    assert {
        "customs.gateway.v1.PartnerGateway",
        "customs.gateway.v1.PeerExchange",
        "customs.gateway.v1.LedgerAudit",
    } <= set(SERVICES)
    assert len(CASES) > 9 * 3 * 20


@pytest.mark.parametrize(("method", "role", "caller", "node"), CASES)
def test_table(method, role, caller, node):
    service = method.split("/")[1]
    identity = SpiffeId(caller, role, "someone")
    rule = expected(service, role, caller is node)
    if rule is None:
        assert authorize(method, identity, node).service == service
    else:
        with pytest.raises(PermissionDeniedError, match=f"^rule {rule}: .*{identity.uri}"):
            authorize(method, identity, node)


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("/customs.gateway.v1.Unknown/Call", id="unknown-service"),
        pytest.param("customs.gateway.v1.PartnerGateway/SubmitSeizureNotice", id="no-slash"),
        pytest.param("/customs.gateway.v1.PartnerGateway/", id="no-method"),
        pytest.param("", id="empty"),
        pytest.param("/customs.gateway.v1.PartnerGateway/X/Y", id="extra-segment"),
    ],
)
def test_unknown_or_malformed_methods_are_denied_by_default(method):
    partner = SpiffeId(Jurisdiction.HK, Role.PARTNER, "risk")
    with pytest.raises(PermissionDeniedError, match=r"^rule deny-by-default: no rule allows"):
        authorize(method, partner, Jurisdiction.HK)


def test_a_caller_without_identity_is_denied():
    with pytest.raises(PermissionDeniedError, match=r"^rule deny-by-default: the caller has no"):
        authorize("/grpc.health.v1.Health/Check", object(), Jurisdiction.HK)
