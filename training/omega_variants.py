"""Ω baseline names (omega-spectral-k32-l1, omega-random-d2048, ...): parsed, then built on train edges."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np

from model_store.config import OmegaConfig
from model_store.omega import Omega
from training import trainer

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


def build_omega(variant: OmegaVariant, n_users: int, n_items: int, users: np.ndarray, items: np.ndarray,
                seed: int, layers: int = 4) -> Omega:
    """Ω of the variant on the training graph (σ = 1); spectral k is capped at min(n_users, n_items)."""
    size = min(variant.size, n_users, n_items) if variant.kind == "spectral" else variant.size
    config = OmegaConfig(kind=variant.kind, dim=size, sigma=1.0, layers=layers,
                         include_e0=variant.include_e0, seed=seed, solver=variant.solver)
    return trainer.build_omega(config, n_users, n_items, users, items)
