"""Prefix trie over the output-token sequences of all items, for beam search constrained to real items."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp


class ItemTrie:
    """Nodes are prefixes; `children[node, token] = child + 1`; a node reached by EOS is an item leaf."""

    def __init__(self, sequences: Sequence[Sequence[int]], vocab_size: int) -> None:
        edges: dict[tuple[int, int], int] = {}
        leaf_item: dict[int, int] = {}
        depth = [0]
        for item, seq in enumerate(sequences):
            node = 0
            for token in seq:
                key = (node, int(token))
                child = edges.get(key)
                if child is None:
                    child = len(depth)
                    edges[key] = child
                    depth.append(depth[node] + 1)
                node = child
            if node in leaf_item:
                raise ValueError(f"items {leaf_item[node]} and {item} have the same token sequence")
            leaf_item[node] = item
        self.n_nodes = len(depth)
        parents = np.fromiter((p for p, _ in edges), dtype=np.int64, count=len(edges))
        tokens = np.fromiter((t for _, t in edges), dtype=np.int64, count=len(edges))
        children = np.fromiter(edges.values(), dtype=np.int64, count=len(edges))
        self.children = sp.csr_matrix(
            (children + 1, (parents, tokens)), shape=(self.n_nodes, vocab_size), dtype=np.int64
        )
        self.leaf_item = np.full(self.n_nodes, -1, dtype=np.int64)
        for node, item in leaf_item.items():
            self.leaf_item[node] = item
        self.max_depth = max(depth)

    def allowed(self, nodes: np.ndarray) -> np.ndarray:
        """Dense (len(nodes), vocab) array of child+1 (0 where the token is not allowed)."""
        return np.asarray(self.children[nodes].toarray())
