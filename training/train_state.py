"""The trainer's typed, JSON-checkpointed state: position in the run, best validation per key, curve."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

SELECTION_KEYS = {"mean": ("mean",), "per_task": ("direct", "sequential")}


@dataclass
class Best:
    """The best validation score seen for one selection key, and where."""

    score: float = -1.0
    step: int = 0
    valid: dict[str, Any] | None = None


@dataclass
class TrainState:
    """Everything a resumed run needs besides weights and optimizer moments."""

    step: int = 0  # optimizer steps taken (global: the same on every rank)
    epoch: int = 0
    batch: int = 0  # position in the epoch's plan
    best: dict[str, Best] = field(default_factory=dict)
    bad_evals: int = 0  # validations in a row that improved no selection key
    curve: list[dict[str, float]] = field(default_factory=list)
    stopped: str = ""  # "", "epochs", "early-stopping", "time", "max-steps"
    train_seconds: float = 0.0

    @classmethod
    def start(cls, selection: str) -> TrainState:
        return cls(best={key: Best() for key in SELECTION_KEYS[selection]})

    def record(self, scores: dict[str, float], valid: dict[str, Any]) -> list[str]:
        """Track a validation; returns the selection keys it improved (and counts a bad one if none)."""
        improved = [key for key, best in self.best.items() if scores[key] > best.score]
        for key in improved:
            self.best[key] = Best(scores[key], self.step, valid)
        self.bad_evals = 0 if improved else self.bad_evals + 1
        return improved

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> TrainState:
        """Read a checkpoint's state.json; older checkpoints (one `best_score`) become selection "mean"."""
        raw = dict(raw)
        if "best" not in raw:
            raw["best"] = {"mean": {"score": raw.pop("best_score", -1.0), "step": raw.pop("best_step", 0),
                                    "valid": raw.pop("best_valid", None)}}
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in raw.items() if k in known}
        values["best"] = {k: Best(**v) for k, v in values["best"].items()}
        return cls(**values)
