"""What one training step computes, per model kind: the paper's prompt examples, or whole item sequences."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from model_store.item_model import sequence_batch
from training.samples import SampleSource

PlanEntry = tuple[str, np.ndarray]  # (task, example indices) of one batch


class Objective(Protocol):
    """Batches of one epoch and the loss of one batch."""

    def epoch_plan(self, seed: int, epoch: int, batch_size: int) -> list[PlanEntry]: ...

    def loss(self, net: nn.Module, entry: PlanEntry, rng: np.random.Generator,
             device: torch.device) -> torch.Tensor: ...


class PromptObjective:
    """The paper's formulation: one prompt -> one item-id target per example, tasks alternating."""

    def __init__(self, source: SampleSource, listwise_weight: float) -> None:
        self.source = source
        self.listwise_weight = listwise_weight

    def epoch_plan(self, seed: int, epoch: int, batch_size: int) -> list[PlanEntry]:
        return self.source.epoch_plan(seed, epoch, batch_size)

    def loss(self, net: nn.Module, entry: PlanEntry, rng: np.random.Generator,
             device: torch.device) -> torch.Tensor:
        task, index = entry
        batch = self.source.batch(task, index, rng)
        enc = batch.encoder.to(device)
        extra: Any = None
        if batch.candidates is not None and self.listwise_weight > 0:
            c = batch.candidates
            extra = (c.decoder_input.to(device), c.labels.to(device), c.positive.to(device))
        out: torch.Tensor = net(task, enc.input_ids, enc.attention_mask, enc.ww, batch.labels.to(device),
                                extra, self.listwise_weight)
        return out


class SequenceObjective:
    """Sequence-level training: each batch holds whole training sequences, next item at every position.

    Batches group users of similar length (within windows of 50 batches) so little padding is computed.
    """

    def __init__(self, train: Sequence[Sequence[int]], max_len: int) -> None:
        self.train = train
        self.max_len = max_len
        self.users = np.array([u for u, s in enumerate(train) if len(s) >= 1], dtype=np.int64)
        self.lengths = np.array([min(len(train[u]), max_len) for u in self.users], dtype=np.int64)

    def epoch_plan(self, seed: int, epoch: int, batch_size: int) -> list[PlanEntry]:
        rng = np.random.default_rng([seed, epoch, 17])
        order = rng.permutation(len(self.users))
        window = batch_size * 50
        batches: list[np.ndarray] = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")]
            batches.extend(chunk[s : s + batch_size] for s in range(0, len(chunk), batch_size))
        return [("sequential", self.users[batches[i]]) for i in rng.permutation(len(batches))]

    def loss(self, net: nn.Module, entry: PlanEntry, rng: np.random.Generator,
             device: torch.device) -> torch.Tensor:
        del rng  # no sampling: every position of every sequence is a target
        tokens, targets = sequence_batch([self.train[u] for u in entry[1].tolist()], self.max_len)
        out: torch.Tensor = net(tokens.to(device), targets.to(device))
        return out
