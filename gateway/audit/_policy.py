"""The witness policy: which witnesses must have cosigned a ledger's latest checkpoint.

A node's own key can re-sign any history it likes; a checkpoint counts against the node's own
operator only with the cosignatures of others (DESIGN section 4, C2SP tlog-witness). The policy
is stated, never implied: ``quorum`` of ``witnesses`` (jurisdiction codes, or witness key names
for hand-given keys). A policy that could pass on nothing is refused (fail closed).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from gateway.audit.errors import AuditError
from gateway.pki.identity import Jurisdiction

__all__ = ["WitnessPolicy", "witness_id"]


@dataclass(frozen=True)
class WitnessPolicy:
    """``quorum`` distinct members of ``witnesses`` must have cosigned the latest checkpoint.

    ``WitnessPolicy.unwitnessed()`` is the one explicit opt-out: nothing is required, and the
    result says that the log's operator alone vouches for the history.
    """

    witnesses: frozenset[str]
    quorum: int
    opted_out: bool = False

    @classmethod
    def all_of(cls, witnesses: Iterable[str]) -> WitnessPolicy:
        """Every one of ``witnesses`` (the default: every other jurisdiction of the bundle)."""
        members = frozenset(witnesses)
        return cls(members, len(members))

    @classmethod
    def unwitnessed(cls) -> WitnessPolicy:
        """The explicit opt-out: verify what the log's operator alone signed."""
        return cls(frozenset(), 0, opted_out=True)

    def check(self, own: str | None = None) -> None:
        """Refuse a policy that can pass on nothing, or names the log's own jurisdiction.

        Raises:
            AuditError: empty witness set, quorum below 1 or above the set, own jurisdiction.
        """
        if self.opted_out:
            return
        if not self.witnesses:
            raise AuditError(
                "the witness policy names no witness, so it would pass on nothing: give "
                "--witnesses (or a trust bundle, or witness keys), or opt out explicitly with "
                "--no-witnesses"
            )
        if self.quorum < 1:
            raise AuditError(f"witness quorum {self.quorum} is below 1: it would pass on nothing")
        if self.quorum > len(self.witnesses):
            raise AuditError(
                f"witness quorum {self.quorum} is more than the {len(self.witnesses)} witnesses "
                f"named ({', '.join(sorted(self.witnesses))}): no ledger could meet it"
            )
        if own is not None and own in self.witnesses:
            raise AuditError(
                f"{own} cannot witness its own ledger: the policy must name other jurisdictions"
            )

    def met_by(self, cosigners: Iterable[str]) -> bool:
        """True if the distinct ``cosigners`` meet the policy."""
        if self.opted_out:
            return True
        return len(self.witnesses & set(cosigners)) >= self.quorum

    def describe(self) -> str:
        """The policy in words, e.g. ``every one of CN, MO`` or ``2 of CN, HK, MO``."""
        if self.opted_out:
            return "none (opted out: the log's operator alone vouches for this history)"
        names = ", ".join(sorted(self.witnesses))
        if self.quorum == len(self.witnesses):
            return f"every one of {names}"
        return f"{self.quorum} of {names}"


def witness_id(key_name: str) -> str:
    """The witness a cosignature key name stands for: the jurisdiction code of
    ``<cc>.customs-exchange/witness``, otherwise the key name itself."""
    for j in Jurisdiction:
        if key_name == f"{j.trust_domain}/witness":
            return j.value
    return key_name
