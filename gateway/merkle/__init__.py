"""RFC 6962 / RFC 9162 Merkle trees: hashing, tree heads, proofs and their verification.

Pure: no storage and no network. Proof generation reads perfect subtree hashes from a
:class:`SubtreeSource` (a SQLite store, or :class:`MemoryTree`), in one call per proof.
"""

from gateway.merkle._hash import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash
from gateway.merkle._memory import MemoryTree
from gateway.merkle._tree import (
    Frontier,
    Node,
    SubtreeSource,
    consistency_proof,
    consistency_ranges,
    fold,
    hash_ranges,
    inclusion_proof,
    inclusion_ranges,
    node_id,
    perfect_nodes,
    tree_root,
)
from gateway.merkle._verify import (
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from gateway.merkle.errors import (
    ConsistencyProofError,
    InclusionProofError,
    MerkleError,
    TreeRangeError,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "ConsistencyProofError",
    "Frontier",
    "InclusionProofError",
    "MemoryTree",
    "MerkleError",
    "Node",
    "SubtreeSource",
    "TreeRangeError",
    "consistency_proof",
    "consistency_ranges",
    "fold",
    "hash_ranges",
    "inclusion_proof",
    "inclusion_ranges",
    "leaf_hash",
    "node_hash",
    "node_id",
    "perfect_nodes",
    "root_from_inclusion_proof",
    "tree_root",
    "verify_consistency",
    "verify_inclusion",
]
