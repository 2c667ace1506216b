"""Early stopping on a validation score: the one patience rule of the trainer and the neural baselines."""

from __future__ import annotations

from typing import Literal


class EarlyStopping:
    """`update(score)` says whether the score improved on the best so far (strictly); `should_stop` once
    `patience` updates in a row brought no improvement. mode "max": higher is better, "min": lower."""

    def __init__(self, patience: int, mode: Literal["max", "min"] = "max") -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.patience, self.mode = patience, mode
        self.best: float | None = None
        self.bad_updates = 0

    def update(self, score: float) -> bool:
        """Record one validation score; True when it is the best so far."""
        improved = self.best is None or (score > self.best if self.mode == "max" else score < self.best)
        if improved:
            self.best, self.bad_updates = score, 0
        else:
            self.bad_updates += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.bad_updates >= self.patience
