"""Item-item co-occurrence graph of the TRAIN interactions (cosine with shrinkage): a 2-hop graph score.

Row h holds the items co-consumed with item h, weighted by cos(h, j) = |U_h ∩ U_j| / (√|U_h| √|U_j| +
shrink). A history scores every item by Σ_t decay^(n-1-t) · sim(h_t, ·): recent items weigh more.
ItemKNN (the baseline) is exactly this score; ELMRec can mix it into its graph prior.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from model_store.errors import BundleError


def interaction_matrix(n_users: int, n_items: int, users: np.ndarray, items: np.ndarray) -> sp.csr_matrix:
    """Binary user x item matrix of the given (training) edges; repeated pairs count once."""
    matrix = sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, n_items))
    matrix.data[:] = 1.0
    return matrix


def cosine_similarity(matrix: sp.csr_matrix, shrink: float = 10.0) -> sp.csr_matrix:
    """Cosine item-item similarity with shrinkage, diagonal removed."""
    co = (matrix.T @ matrix).tocsr().astype(np.float64)
    norms = np.sqrt(np.asarray(matrix.sum(axis=0)).ravel())
    co.setdiag(0.0)
    co.eliminate_zeros()
    coo = co.tocoo()
    values = coo.data / (norms[coo.row] * norms[coo.col] + shrink)
    return sp.csr_matrix((values, (coo.row, coo.col)), shape=co.shape)


def keep_top_k(similarity: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Each row's k largest entries (ties: lower column first); the rest dropped."""
    rows, cols, vals = [], [], []
    for r in range(similarity.shape[0]):
        start, end = similarity.indptr[r], similarity.indptr[r + 1]
        idx, val = similarity.indices[start:end], similarity.data[start:end]
        keep = np.lexsort((idx, -val))[:k]
        rows.append(np.full(len(keep), r, dtype=np.int64))
        cols.append(idx[keep])
        vals.append(val[keep])
    if not rows:
        return sp.csr_matrix(similarity.shape, dtype=np.float32)
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=similarity.shape)


@dataclass
class ItemGraph:
    """Item-item similarities (I x I, CSR) and the history score they give."""

    similarity: sp.csr_matrix

    @classmethod
    def build(cls, n_users: int, n_items: int, users: np.ndarray, items: np.ndarray,
              shrink: float = 10.0, top_k: int | None = None) -> ItemGraph:
        """From TRAIN edges only; `top_k` keeps each item's strongest neighbours (None = all)."""
        sim = cosine_similarity(interaction_matrix(n_users, n_items, users, items), shrink)
        if top_k is not None:
            sim = keep_top_k(sim, top_k)
        return cls(sim.astype(np.float32).tocsr())

    @property
    def n_items(self) -> int:
        return int(self.similarity.shape[0])

    def history_scores(self, history: Sequence[int], decay: float) -> np.ndarray:
        """Σ_t decay^(n-1-t) · sim(h_t, ·) over all items (zeros for an empty history)."""
        if not len(history):
            return np.zeros(self.n_items, dtype=np.float64)
        weights = decay ** np.arange(len(history) - 1, -1, -1, dtype=np.float64)
        row = sp.csr_matrix((weights, (np.zeros(len(history), dtype=np.int64), np.asarray(history))),
                            shape=(1, self.n_items))
        return np.asarray((row @ self.similarity).todense(), dtype=np.float64).ravel()

    def to_tensors(self) -> dict[str, np.ndarray]:
        sim = self.similarity
        return {"indptr": sim.indptr.astype(np.int64), "indices": sim.indices.astype(np.int64),
                "data": sim.data.astype(np.float32)}

    @classmethod
    def from_tensors(cls, tensors: dict[str, np.ndarray], n_items: int) -> ItemGraph:
        """Rebuild from `to_tensors`; raises BundleError when the arrays do not form an n_items CSR."""
        try:
            indptr, indices, data = tensors["indptr"], tensors["indices"], tensors["data"]
        except KeyError as exc:
            raise BundleError(f"item graph: missing tensor {exc}") from exc
        ok = (indptr.ndim == indices.ndim == data.ndim == 1 and len(indptr) == n_items + 1
              and len(indices) == len(data) == int(indptr[-1]) and int(indptr[0]) == 0
              and bool(np.all(np.diff(indptr) >= 0))
              and (not len(indices) or (int(indices.min()) >= 0 and int(indices.max()) < n_items))
              and bool(np.all(np.isfinite(data))))
        if not ok:
            raise BundleError(f"item graph: the arrays do not form a {n_items} x {n_items} CSR matrix")
        return cls(sp.csr_matrix((data, indices, indptr), shape=(n_items, n_items)))
