"""The trainer's state: per-key best weights, the shared early-stopping rule, old checkpoints read."""

from __future__ import annotations

import json

import pytest

from model_store.errors import DataError
from training.presets import PRESETS, apply_overrides
from training.train_state import TrainState


def test_per_task_selection_keeps_each_tasks_best_and_stops_when_neither_improves() -> None:
    state = TrainState.start("per_task", patience=2)
    for step, (direct, sequential) in enumerate([(0.3, 0.01), (0.35, 0.02), (0.34, 0.03), (0.33, 0.025),
                                                 (0.32, 0.02)], start=1):
        state.step = step
        state.record({"direct": direct, "sequential": sequential, "mean": 0.0}, {"step": step})
        if step == 4:
            assert not state.should_stop  # direct is 2 bad, sequential only 1
    assert state.best["direct"].step == 2 and state.best["sequential"].step == 3
    assert state.should_stop


def test_state_round_trips_and_old_checkpoints_become_mean_selection() -> None:
    state = TrainState.start("per_task", patience=3)
    state.step = 7
    state.record({"direct": 0.2, "sequential": 0.05, "mean": 0.0}, {})
    again = TrainState.from_json(json.loads(json.dumps(state.to_json())), patience=3)
    assert again.to_json() == state.to_json()
    old = {"step": 5, "epoch": 1, "batch": 2, "best_score": 0.4, "best_step": 4, "bad_evals": 2,
           "curve": [], "stopped": "time", "train_seconds": 3.0}
    migrated = TrainState.from_json(old, patience=3)
    assert list(migrated.best) == ["mean"] and migrated.best["mean"].score == 0.4
    assert migrated.stoppers["mean"].bad_updates == 2 and not migrated.should_stop


def test_per_task_selection_needs_the_items_kind() -> None:
    with pytest.raises(DataError, match="per_task"):
        apply_overrides(PRESETS["tiny"], {"selection": "per_task"})
    assert apply_overrides(PRESETS["tiny-items"], {"selection": "mean"}).selection == "mean"
