"""SASRec (Kang & McAuley 2018), compact PyTorch: full-softmax cross-entropy over all items, early-stopped.

Trained on the train part of every user's sequence (next item at every position); the stopping epoch is
chosen per task on validation users. Test histories include the validation item as input (like every
method of the harness); the model is not refit on train + validation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from training.baselines.fitting import EpochPlan, FitInputs, Fitted, early_stopped
from training.ranking import ScoreTable

INPUT = ("next-item logits given the last 50 items of the history (test: train + validation item); "
         "direct ranks the 100 candidates by these logits, so it sees the validation item")


@dataclass
class SASRecConfig:
    dim: int = 64
    blocks: int = 2
    heads: int = 1
    maxlen: int = 50
    dropout: float = 0.2
    lr: float = 1e-3
    batch: int = 128
    max_epochs: int = 200
    eval_every: int = 1  # epochs between validation checks
    patience: int = 5  # validation checks without improvement (on both tasks) before stopping


class SASRec(nn.Module):
    """Causal Transformer over item embeddings; next-item logits = last state · item embeddings (tied)."""

    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.items = nn.Embedding(n_items + 1, cfg.dim, padding_idx=0)  # token = item + 1; 0 = padding
        self.positions = nn.Embedding(cfg.maxlen, cfg.dim)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(cfg.dim, cfg.heads, dim_feedforward=cfg.dim, dropout=cfg.dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.blocks, norm=nn.LayerNorm(cfg.dim),
                                             enable_nested_tensor=False)
        for p in self.parameters():  # Xavier, as the reference implementation (unit-variance logits)
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.items.weight[0].zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded tokens -> (B, L, dim) states; position ids are right-aligned."""
        length = tokens.shape[1]
        pos = torch.arange(self.cfg.maxlen - length, self.cfg.maxlen, device=tokens.device)
        x = self.dropout(self.items(tokens) * self.cfg.dim ** 0.5 + self.positions(pos))
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).triu(1)
        blocked = causal | (tokens == 0)[:, None, :]  # no future, no padding ...
        blocked &= ~torch.eye(length, dtype=torch.bool, device=tokens.device)  # ... but always itself
        mask = blocked.repeat_interleave(self.cfg.heads, dim=0)
        return self.encoder(x, mask=mask)

    def logits(self, states: torch.Tensor) -> torch.Tensor:
        return states @ self.items.weight[1:].T


def pad_left(rows: list[list[int]], maxlen: int) -> torch.Tensor:
    """Item lists -> (B, L) tokens (item + 1), the last `maxlen` items of each, left-padded with 0."""
    rows = [r[-maxlen:] for r in rows]
    length = max([1, *(len(r) for r in rows)])
    out = np.zeros((len(rows), length), dtype=np.int64)
    for n, r in enumerate(rows):
        if r:
            out[n, length - len(r):] = np.asarray(r, dtype=np.int64) + 1
    return torch.from_numpy(out)


def fit_sasrec(inputs: FitInputs, config: SASRecConfig | None = None) -> Fitted:
    """Train SASRec on the train sequences; keep per task the epoch with the best validation NDCG@10."""
    cfg = config or SASRecConfig()
    torch.manual_seed(inputs.seed)
    rng = np.random.default_rng([inputs.seed, 13])
    model = SASRec(inputs.harness.n_items, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98))
    seqs = [s for s in inputs.train if len(s) >= 2]
    loss_fn = nn.CrossEntropyLoss()

    def train_epoch() -> float:
        model.train()
        order = rng.permutation(len(seqs))
        total, count = 0.0, 0
        for s in range(0, len(order), cfg.batch):
            rows = [seqs[i] for i in order[s: s + cfg.batch]]
            inp = pad_left([r[:-1] for r in rows], cfg.maxlen)
            tgt = pad_left([r[1:] for r in rows], cfg.maxlen)
            states = model(inp)
            keep = tgt > 0
            loss = loss_fn(model.logits(states[keep]), tgt[keep] - 1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total, count = total + float(loss.detach()) * int(keep.sum()), count + int(keep.sum())
        return total / max(count, 1)

    def snapshot() -> ScoreTable:
        frozen = SASRec(inputs.harness.n_items, cfg)
        frozen.load_state_dict(model.state_dict())
        frozen.eval()

        def scores(users: list[int], histories: list[list[int]]) -> np.ndarray:  # noqa: ARG001
            with torch.inference_mode():
                states = frozen(pad_left(histories, cfg.maxlen))[:, -1]
                return frozen.logits(states).numpy()

        return scores

    params = {**asdict(cfg), "loss": "full-softmax cross-entropy", "optimizer": "adam"}
    return early_stopped(inputs, train_epoch, snapshot, params,
                         EpochPlan(cfg.max_epochs, cfg.eval_every, cfg.patience))
