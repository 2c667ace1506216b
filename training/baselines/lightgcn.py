"""LightGCN (He et al. 2020): BPR loss, Adam, the train graph; time-boxed, early-stopped on validation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from model_store.omega import normalized_adjacency
from training.baselines.fitting import EpochPlan, FitInputs, Fitted, early_stopped
from training.ranking import ScoreTable

INPUT = "user vector learned on train interactions (the history argument is not used)"


@dataclass
class LightGCNConfig:
    dim: int = 64
    layers: int = 3
    lr: float = 5e-3
    reg: float = 1e-4
    batch: int = 2048
    max_epochs: int = 1000
    eval_every: int = 2  # epochs between validation checks
    patience: int = 5  # validation checks without improvement (on both tasks) before stopping


def fit_lightgcn(inputs: FitInputs, config: LightGCNConfig | None = None) -> Fitted:
    """LightGCN (He et al. 2020) with BPR loss and Adam on the train graph; time-boxed, early-stopped."""
    cfg = config or LightGCNConfig()
    h = inputs.harness
    torch.manual_seed(inputs.seed)
    rng = np.random.default_rng([inputs.seed, 11])
    spread = _Propagate(normalized_adjacency(h.n_users, h.n_items, h.users, h.items).astype(np.float32))
    emb = torch.nn.Parameter(torch.randn(h.n_users + h.n_items, cfg.dim) * 0.1)
    opt = torch.optim.Adam([emb], lr=cfg.lr, fused=True)
    pairs = h.matrix.tocoo()
    users, items = pairs.row.astype(np.int64), pairs.col.astype(np.int64)  # distinct train edges
    known = np.sort(users * h.n_items + items)

    def propagate() -> torch.Tensor:
        x, total = emb, emb
        for _ in range(cfg.layers):
            x = spread(x)
            total = total + x
        return total / (cfg.layers + 1)

    def sample_negatives(u: np.ndarray) -> np.ndarray:
        neg = rng.integers(0, h.n_items, size=len(u))
        for _ in range(5):  # resample the draws that hit a train item of the user
            hit = _contains(known, u * h.n_items + neg)
            if not hit.any():
                break
            neg[hit] = rng.integers(0, h.n_items, size=int(hit.sum()))
        return neg

    def snapshot() -> ScoreTable:
        with torch.no_grad():
            final = propagate().numpy().copy()
        ue, ie = final[: h.n_users], final[h.n_users:]
        def scores(u: list[int], histories: list[list[int]]) -> np.ndarray:  # noqa: ARG001 (no fold-in)
            return ue[np.asarray(u, dtype=np.int64)] @ ie.T

        return scores

    def train_epoch() -> float:
        order = rng.permutation(len(users))
        total = 0.0
        for s in range(0, len(order), cfg.batch):
            b = order[s: s + cfg.batch]
            u = torch.from_numpy(users[b])
            i = torch.from_numpy(items[b] + h.n_users)
            j = torch.from_numpy(sample_negatives(users[b]) + h.n_users)
            final = propagate()
            pos = (final[u] * final[i]).sum(-1)
            neg = (final[u] * final[j]).sum(-1)
            reg = (emb[u].pow(2).sum() + emb[i].pow(2).sum() + emb[j].pow(2).sum()) / (2 * len(b))
            loss = -torch.nn.functional.logsigmoid(pos - neg).mean() + cfg.reg * reg
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        return total / len(order)

    params = {"dim": cfg.dim, "layers": cfg.layers, "lr": cfg.lr, "reg": cfg.reg, "batch": cfg.batch,
              "optimizer": "adam", "loss": "bpr"}
    return early_stopped(inputs, train_epoch, snapshot, params,
                         EpochPlan(cfg.max_epochs, cfg.eval_every, cfg.patience))


class _Propagate:
    """x -> A x for the symmetric normalised train graph A, by scipy (about 3x torch.sparse.mm on CPU)."""

    def __init__(self, adj: sp.csr_matrix) -> None:
        graph = adj.tocsr()

        class Spread(torch.autograd.Function):
            @staticmethod
            def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:  # noqa: ARG004 (autograd signature)
                return torch.from_numpy(graph @ x.detach().numpy())

            @staticmethod
            def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG004
                return torch.from_numpy(graph @ grad.contiguous().numpy())  # A is symmetric: Aᵀ = A

        self.apply = Spread.apply

    def __call__(self, x: Any) -> Any:
        return self.apply(x)


def _contains(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    pos = np.searchsorted(sorted_keys, keys).clip(max=len(sorted_keys) - 1)
    return np.asarray(sorted_keys[pos] == keys)
