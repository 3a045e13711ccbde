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

import os as _os

__version__ = "0.1.0"

AEAD_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:"
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-CHACHA20-POLY1305"
)
"""The TLS 1.2 suites every port of a node offers and accepts: forward-secret and AEAD only
(TLS 1.3 suites are all AEAD). No CBC, no static RSA key exchange (ADR 0025)."""

# grpc core reads its cipher list from this variable once, when grpc is first imported: set it
# here, before any module of the package imports grpc, whatever the environment says, so that
# no CBC suite is ever offered on the gRPC port.
_os.environ["GRPC_SSL_CIPHER_SUITES"] = AEAD_CIPHERS
