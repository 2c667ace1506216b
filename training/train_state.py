"""The trainer's typed, JSON-checkpointed state: position in the run, best validation per key, curve."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from training.early_stopping import EarlyStopping

SELECTION_KEYS = {"mean": ("mean",), "per_task": ("direct", "sequential")}


@dataclass
class Best:
    """The best validation score seen for one selection key, where, and the validation it came from."""

    score: float = -1.0
    step: int = 0
    valid: dict[str, Any] | None = None


@dataclass
class TrainState:
    """Everything a resumed run needs besides weights and optimizer moments.

    Early stopping is `training.early_stopping.EarlyStopping` per selection key (the neural baselines'
    rule): the run stops once no key improved for `patience` validations in a row.
    """

    patience: int
    step: int = 0  # optimizer steps taken (global: the same on every rank)
    epoch: int = 0
    batch: int = 0  # position in the epoch's plan
    best: dict[str, Best] = field(default_factory=dict)
    stoppers: dict[str, EarlyStopping] = field(default_factory=dict)
    curve: list[dict[str, float]] = field(default_factory=list)
    stopped: str = ""  # "", "epochs", "early-stopping", "time", "max-steps"
    train_seconds: float = 0.0

    @classmethod
    def start(cls, selection: str, patience: int) -> TrainState:
        keys = SELECTION_KEYS[selection]
        return cls(patience, best={k: Best() for k in keys},
                   stoppers={k: EarlyStopping(patience) for k in keys})

    def record(self, scores: dict[str, float], valid: dict[str, Any]) -> list[str]:
        """Track one validation; returns the selection keys it improved."""
        improved = [key for key, stopper in self.stoppers.items() if stopper.update(scores[key])]
        for key in improved:
            self.best[key] = Best(scores[key], self.step, valid)
        return improved

    @property
    def should_stop(self) -> bool:
        return all(stopper.should_stop for stopper in self.stoppers.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "patience": self.patience, "step": self.step, "epoch": self.epoch, "batch": self.batch,
            "best": {k: vars(b) for k, b in self.best.items()},
            "bad_evals": {k: s.bad_updates for k, s in self.stoppers.items()},
            "curve": self.curve, "stopped": self.stopped, "train_seconds": self.train_seconds,
        }

    @classmethod
    def from_json(cls, raw: dict[str, Any], patience: int) -> TrainState:
        """Read a checkpoint's state.json; older checkpoints (one `best_score`) become selection "mean"."""
        raw = dict(raw)
        if "best" not in raw:
            raw["best"] = {"mean": {"score": raw.pop("best_score", -1.0), "step": raw.pop("best_step", 0),
                                    "valid": raw.pop("best_valid", None)}}
        bad = raw.get("bad_evals", 0)
        state = cls(patience, **{k: raw[k] for k in ("step", "epoch", "batch", "curve", "stopped",
                                                     "train_seconds") if k in raw})
        state.best = {k: Best(**v) for k, v in raw["best"].items()}
        for key, best in state.best.items():
            stopper = EarlyStopping(patience)
            stopper.best = best.score if best.score >= 0 else None
            stopper.bad_updates = int(bad[key] if isinstance(bad, dict) else bad)
            state.stoppers[key] = stopper
        return state
