"""customs-gateway: cross-border exchange of customs watchlists and seizure notices.

Folders, one concern each:

- ``gateway.merkle``: RFC 9162 Merkle tree hashing and proofs (pure).
- ``gateway.notes``: C2SP signed notes, checkpoints and cosignatures (pure).
- ``gateway.pki``: certificate authorities, identities and access decisions (pure).
- ``gateway.domain``: the customs data model, its validation, watchlists and screening (pure).
- ``gateway.envelope``: signing and verifying envelopes and receipts (pure).
- ``gateway.ledger``: the append-only ledger in SQLite.
- ``gateway.exchange``: submit, delivery and inbound streams.
- ``gateway.audit``: offline verification and reconciliation of ledgers.
- ``gateway.server``: the gRPC node: config, TLS, interceptors, servicers.
- ``gateway.cli``: the ``customs-gateway`` command.
"""

__version__ = "0.1.0"
