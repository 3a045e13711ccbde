"""Jurisdictions, roles and SPIFFE identities: who a certificate says its holder is.

An identity is one URI SAN in SPIFFE form, ``spiffe://<jurisdiction>.customs-exchange/<role>/<name>``,
for example ``spiffe://hk.customs-exchange/partner/cargo-risk``. The trust domain names the
jurisdiction; the first path segment the role; the second the holder. Nothing else is accepted.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from gateway.errors import InvalidArgumentError

__all__ = ["TRUST_DOMAIN_SUFFIX", "IdentityError", "Jurisdiction", "Role", "SpiffeId"]

TRUST_DOMAIN_SUFFIX = "customs-exchange"

_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


class IdentityError(InvalidArgumentError):
    """A string is not a well-formed customs-exchange SPIFFE id, jurisdiction or role."""


class Jurisdiction(enum.StrEnum):
    """The three customs administrations; the value is the ISO 3166-1 alpha-2 code."""

    CN = "CN"
    HK = "HK"
    MO = "MO"

    @property
    def trust_domain(self) -> str:
        """The SPIFFE trust domain of this jurisdiction, e.g. ``hk.customs-exchange``."""
        return f"{self.value.lower()}.{TRUST_DOMAIN_SUFFIX}"

    @classmethod
    def parse(cls, text: str) -> Jurisdiction:
        """Parse ``CN``/``HK``/``MO`` in any case, or raise :class:`IdentityError`."""
        try:
            return cls(text.strip().upper())
        except ValueError:
            known = ", ".join(j.value for j in cls)
            raise IdentityError(f"unknown jurisdiction {text!r} (known: {known})") from None


class Role(enum.StrEnum):
    """What a certificate holder may be: a node, a partner system, an auditor, or a
    monitoring system (which may read the node's metrics and nothing else)."""

    NODE = "node"
    PARTNER = "partner"
    AUDITOR = "auditor"
    MONITOR = "monitor"

    @classmethod
    def parse(cls, text: str) -> Role:
        """Parse a role name, or raise :class:`IdentityError`."""
        try:
            return cls(text.strip().lower())
        except ValueError:
            known = ", ".join(r.value for r in cls)
            raise IdentityError(f"unknown role {text!r} (known: {known})") from None


@dataclass(frozen=True, order=True)
class SpiffeId:
    """A parsed identity: jurisdiction, role and holder name."""

    jurisdiction: Jurisdiction
    role: Role
    name: str

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise IdentityError(
                f"bad holder name {self.name!r}: use 1-63 lower-case letters, digits and '-'"
            )

    @property
    def uri(self) -> str:
        """The URI form, e.g. ``spiffe://hk.customs-exchange/partner/cargo-risk``."""
        return f"spiffe://{self.jurisdiction.trust_domain}/{self.role.value}/{self.name}"

    @property
    def dns_name(self) -> str:
        """The DNS name a node is dialled by, e.g. ``gateway.hk.customs-exchange``.

        Roots constrain DNS names to their own trust domain, so a client that dials a peer by
        this name can only complete a handshake with a certificate of that jurisdiction.
        """
        return f"{self.name}.{self.jurisdiction.trust_domain}"

    def __str__(self) -> str:
        return self.uri

    @classmethod
    def parse(cls, uri: str) -> SpiffeId:
        """Parse the URI form strictly (no query, fragment, port, user info or extra segments)."""
        prefix = "spiffe://"
        if not uri.startswith(prefix):
            raise IdentityError(f"not a SPIFFE id: {uri!r}")
        host, _, path = uri[len(prefix) :].partition("/")
        suffix = "." + TRUST_DOMAIN_SUFFIX
        if not host.endswith(suffix):
            raise IdentityError(f"trust domain {host!r} is not a customs-exchange domain")
        jurisdiction = Jurisdiction.parse(host[: -len(suffix)])
        if host != jurisdiction.trust_domain:
            raise IdentityError(f"trust domain {host!r} is not in canonical lower case")
        parts = path.split("/")
        if len(parts) != 2:
            raise IdentityError(f"SPIFFE id {uri!r} must have the path /<role>/<name>")
        role = Role.parse(parts[0])
        if parts[0] != role.value:
            raise IdentityError(f"role {parts[0]!r} is not in canonical lower case")
        return cls(jurisdiction, role, parts[1])
