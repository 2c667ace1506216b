"""Training examples of the three tasks, turned into padded tensors batch by batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from model_store.model import EOS_ID
from model_store.prompts import EncoderBatch, PromptBuilder, pad_encoder, pad_labels


@dataclass
class Review:
    """One explanation example: a training (user, item) pair and its review text's token ids."""

    user: int
    item: int
    tokens: list[int]


@dataclass
class Candidates:
    """The prompt's candidates as decoder inputs/labels (B, C, t) and the positive's position (B,)."""

    decoder_input: torch.Tensor
    labels: torch.Tensor
    positive: torch.Tensor


@dataclass
class TaskBatch:
    """One single-task batch ready for ElmrecModel.loss."""

    task: str
    encoder: EncoderBatch
    labels: torch.Tensor
    candidates: Candidates | None = None


def candidate_tensors(
    lists: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], positives: Sequence[int]
) -> Candidates:
    """Teacher-forcing tensors for every candidate of every row (rows padded with -100 labels)."""
    c = max(len(cands) for cands in lists)
    t = max(len(targets[i]) for cands in lists for i in cands)
    labels = np.full((len(lists), c, t), -100, dtype=np.int64)
    dec_in = np.zeros((len(lists), c, t), dtype=np.int64)
    for b, cands in enumerate(lists):
        for j, item in enumerate(cands):
            tok = targets[item]
            labels[b, j, : len(tok)] = tok
            dec_in[b, j, 1 : len(tok)] = tok[:-1]
    return Candidates(torch.from_numpy(dec_in), torch.from_numpy(labels),
                      torch.as_tensor(list(positives), dtype=torch.long))


class SampleSource:
    """Enumerates examples per task and builds batches; negatives come from a per-batch seeded rng."""

    def __init__(
        self,
        train: Sequence[Sequence[int]],
        n_items: int,
        builder: PromptBuilder,
        targets: Sequence[Sequence[int]],
        train_negatives: int,
        reviews: Sequence[Review] = (),
    ) -> None:
        self.train = train
        self.n_items = n_items
        self.builder = builder
        self.targets = targets
        self.train_negatives = min(train_negatives, max(n_items - 1, 1))
        self.reviews = list(reviews)
        self.seen = [set(s) for s in train]
        self.direct = np.array([(u, i) for u, seq in enumerate(train) for i in seq], dtype=np.int64)
        self.sequential = np.array(
            [(u, t) for u, seq in enumerate(train) for t in range(1, len(seq))], dtype=np.int64
        ).reshape(-1, 2)

    def counts(self) -> dict[str, int]:
        return {"direct": len(self.direct), "sequential": len(self.sequential),
                "explanation": len(self.reviews)}

    def epoch_plan(self, seed: int, epoch: int, batch_size: int) -> list[tuple[str, np.ndarray]]:
        """Batches of example indices for one epoch, tasks alternating batch by batch."""
        rng = np.random.default_rng([seed, epoch, 11])
        per_task: list[list[tuple[str, np.ndarray]]] = []
        for task, n in self.counts().items():
            if n == 0:
                continue
            order = rng.permutation(n)
            per_task.append([(task, order[s : s + batch_size]) for s in range(0, n, batch_size)])
        plan: list[tuple[str, np.ndarray]] = []
        for step in range(max((len(b) for b in per_task), default=0)):
            plan.extend(batches[step] for batches in per_task if step < len(batches))
        return plan

    def negatives(self, user: int, rng: np.random.Generator) -> list[int]:
        """Uniform items outside the user's training history."""
        out: list[int] = []
        seen = self.seen[user]
        while len(out) < self.train_negatives:
            for item in rng.integers(0, self.n_items, size=2 * self.train_negatives).tolist():
                if item not in seen and item not in out:
                    out.append(item)
                    if len(out) == self.train_negatives:
                        break
            if len(seen) >= self.n_items - 1:
                break
        return out

    def batch(self, task: str, index: np.ndarray, rng: np.random.Generator) -> TaskBatch:
        rows: list[tuple[list[int], list[int]]] = []
        labels: list[list[int]] = []
        candidates: Candidates | None = None
        if task == "direct":
            lists: list[list[int]] = []
            positives: list[int] = []
            for u, pos in self.direct[index].tolist():
                cands = [pos, *self.negatives(u, rng)]
                order = [cands[i] for i in rng.permutation(len(cands))]
                rows.append(self.builder.direct(u, order))
                labels.append(list(self.targets[pos]))
                lists.append(order)
                positives.append(order.index(pos))
            candidates = candidate_tensors(lists, self.targets, positives)
        elif task == "sequential":
            for u, t in self.sequential[index].tolist():
                rows.append(self.builder.sequential(u, self.train[u][:t]))
                labels.append(list(self.targets[self.train[u][t]]))
        else:
            for r in index.tolist():
                review = self.reviews[r]
                rows.append(self.builder.explanation(review.user, review.item))
                labels.append([*review.tokens, EOS_ID])
        return TaskBatch(task, pad_encoder(rows), pad_labels(labels), candidates)
