"""Ω alone as a baseline (omega-spectral-k32-l1, omega-random-d2048, ...): names parsed, Ω built on train
edges, items scored by Ω inner products."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

from model_store.config import OmegaConfig
from model_store.omega import Omega, build_omega
from training.ranking import ScoreTable, per_user
from training.records import Task

# omega-spectral[-k<K>][-l1][-randomized] | omega-random[-d<D>][-l1]; -l1 leaves E0 (λ^0) out of the mean.
_PATTERN = re.compile(r"omega-(?P<kind>spectral|random)(?:-(?P<letter>[kd])(?P<size>[1-9]\d{0,4}))?"
                      r"(?P<l1>-l1)?(?P<randomized>-randomized)?")
SYNTAX = "omega-spectral[-k<K>][-l1][-randomized] or omega-random[-d<D>][-l1]"


@dataclass(frozen=True)
class OmegaVariant:
    """One Ω baseline: kind, k (spectral) or d (random), first power 0 or 1, spectral solver."""

    kind: Literal["spectral", "random"]
    size: int
    include_e0: bool
    solver: Literal["svds", "randomized"] = "svds"


def parse_omega(method: str) -> OmegaVariant | None:
    """The variant a method name asks for; None when it is not an Ω name or is malformed.

    ``omega-spectral`` is k = 64 and ``omega-random`` d = 512, layers 0..4, as before the variants.
    """
    match = _PATTERN.fullmatch(method)
    if match is None:
        return None
    kind = match["kind"]
    letter = match["letter"]
    if letter is not None and letter != ("k" if kind == "spectral" else "d"):
        return None
    if kind == "random" and match["randomized"]:
        return None
    size = int(match["size"]) if match["size"] else (64 if kind == "spectral" else 512)
    solver = "randomized" if match["randomized"] else "svds"
    return OmegaVariant(cast(Literal["spectral", "random"], kind), size, include_e0=match["l1"] is None,
                        solver=cast(Literal["svds", "randomized"], solver))


def variant_omega(variant: OmegaVariant, n_users: int, n_items: int, users: np.ndarray, items: np.ndarray,
                  seed: int, layers: int = 4) -> Omega:
    """Ω of the variant on the training graph (σ = 1); spectral k is capped at min(n_users, n_items)."""
    size = min(variant.size, n_users, n_items) if variant.kind == "spectral" else variant.size
    config = OmegaConfig(kind=variant.kind, dim=size, sigma=1.0, layers=layers,
                         include_e0=variant.include_e0, seed=seed, solver=variant.solver)
    return build_omega(config, n_users, n_items, users, items)


def omega_table(omega: Omega, task: Task) -> ScoreTable:
    """Ω alone: user row · item rows for direct (a known user), sum of history rows · item rows for
    sequential."""

    def score(user: int, history: Sequence[int]) -> np.ndarray:
        if task == "direct":
            return omega.items @ omega.users[user]
        return omega.items @ omega.items[np.asarray(history, dtype=np.int64)].sum(axis=0)

    return per_user(score)
