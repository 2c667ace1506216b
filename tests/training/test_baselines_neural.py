"""Learned baselines (ALS, BPR, LightGCN, SASRec) learn, honour the time box and tune on validation only."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from model_store.errors import DataError
from training.baselines.fitting import FitInputs, Fitted, fit_inputs, fit_learned
from training.baselines.harness import Harness
from training.baselines.lightgcn import LightGCNConfig, fit_lightgcn
from training.baselines.mf import fit_als, fit_bpr
from training.baselines.runner import run_baselines
from training.baselines.sasrec import SASRecConfig, fit_sasrec
from training.baselines.simple import popularity_table
from training.cli import main
from training.evaluate import evaluate, split_cases
from training.negatives import p5_negatives
from training.ranking import TableRanker
from training.split import leave_one_out, train_edges

CLUSTERS, SIZE = 30, 10  # 300 items in 30 clusters of 10


def planted(n_users: int = 600, seed: int = 0) -> list[list[int]]:
    """Each user walks its cluster's items in a fixed cyclic order from a random start (6-9 items)."""
    rng = np.random.default_rng(seed)
    out = []
    for u in range(n_users):
        c, start, length = u % CLUSTERS, int(rng.integers(SIZE)), int(rng.integers(6, 10))
        out.append([c * SIZE + (start + t) % SIZE for t in range(length)])
    return out


def inputs_for(sequences: list[list[int]], max_minutes: float = 1.0,
               negatives: list[list[int]] | None = None) -> tuple[FitInputs, list[list[int]]]:
    negatives = negatives or p5_negatives(sequences, 99, seed=1)
    users, items = train_edges(leave_one_out(sequences))
    harness = Harness(len(sequences), CLUSTERS * SIZE, users, items)
    return fit_inputs(harness, sequences, negatives, 0, max_minutes), negatives


FAST = {
    "als": fit_als,
    "bpr": fit_bpr,
    "lightgcn": lambda i: fit_lightgcn(i, LightGCNConfig(lr=0.01, batch=512, max_epochs=40, eval_every=10)),
    "sasrec": lambda i: fit_sasrec(i, SASRecConfig(dim=32, dropout=0.1, lr=1e-2, batch=64, max_epochs=20,
                                                  eval_every=5)),
}


@pytest.mark.parametrize("method", list(FAST))
def test_each_learned_baseline_beats_popularity_on_planted_structure(method: str) -> None:
    sequences = planted()
    inputs, negatives = inputs_for(sequences)
    fitted: Fitted = FAST[method](inputs)
    case = split_cases(sequences, negatives, "test")
    pop = TableRanker(popularity_table(inputs.harness))
    for task in ("direct", "sequential"):
        ours = evaluate(TableRanker(fitted.scorers[task]), case, task)["ndcg@10"]
        base = evaluate(pop, case, task)["ndcg@10"]
        assert ours > base + 0.2, (method, task, ours, base)
    if method == "sasrec":  # the order inside a cluster is deterministic: the next item is learnable
        seq = evaluate(TableRanker(fitted.scorers["sequential"]), case, "sequential")
        assert seq["unfiltered"]["hr@5"] > 0.8


@pytest.mark.parametrize("method", ["lightgcn", "sasrec"])
def test_time_box_is_honoured_and_reported(method: str) -> None:
    inputs, _ = inputs_for(planted(), max_minutes=0.01)  # 0.6 s
    start = time.perf_counter()
    if method == "lightgcn":
        fitted = fit_lightgcn(inputs, LightGCNConfig(batch=256, max_epochs=100_000, patience=100_000))
    else:
        fitted = fit_sasrec(inputs, SASRecConfig(dim=16, max_epochs=100_000, patience=100_000))
    assert time.perf_counter() - start < 6.0  # the box plus one epoch and one validation check
    for task in ("direct", "sequential"):
        report = fitted.report[task]
        assert report["stopped"] == "time_box" and report["epochs"] < 100_000
        assert 1 <= report["best_epoch"] <= report["epochs"]
        assert task in fitted.scorers


def test_tuning_and_fit_see_no_test_item() -> None:
    """Changing every test item leaves the chosen settings and validation scores untouched."""
    sequences = planted(300)
    rng = np.random.default_rng(5)
    moved = [[*s[:-1], int(rng.integers(CLUSTERS * SIZE))] for s in sequences]
    assert sum(a[-1] != b[-1] for a, b in zip(sequences, moved, strict=True)) > 250
    same = p5_negatives(sequences, 99, seed=1)  # the same candidates: only the test items differ
    reports = []
    for seqs in (sequences, moved):
        inputs, negatives = inputs_for(seqs, negatives=same)
        for task in ("direct", "sequential"):
            _, extra = fit_learned("als", fit_als, inputs.harness, seqs, negatives, task, 0)
            fit = {k: v for k, v in extra["fit"].items() if k not in ("minutes", "shared_with_other_task")}
            reports.append((task, extra["hyperparameters"], fit))
    assert reports[:2] == reports[2:]
    assert len(reports[0][2]["grid"]) > 1  # a real choice was made


def test_ties_count_against_the_positive_for_every_method() -> None:
    """A score table that ties every item ranks every held-out item last: no hit, on either task."""
    sequences = planted()
    negatives = p5_negatives(sequences, 99, seed=1)
    case = split_cases(sequences, negatives, "test")
    flat = TableRanker(lambda u, h: np.zeros((len(u), CLUSTERS * SIZE)))
    assert evaluate(flat, case, "direct")["hr@10"] == 0.0  # was ~0.10 with ties broken at random
    sequential = evaluate(flat, case, "sequential")
    assert sequential["hr@10"] == 0.0 and sequential["unfiltered"]["hr@10"] == 0.0


def test_harness_rows_carry_settings_and_reuse_the_fit(tiny_data: Path) -> None:
    direct = run_baselines(tiny_data, "direct", methods=["als"])[0]
    sequential = run_baselines(tiny_data, "sequential", methods=["als"])[0]
    for row in (direct, sequential):
        assert row["method"] == "als" and row["protocol"]["graph"] == "train"
        assert {"factors", "regularization", "alpha"} <= set(row["hyperparameters"])
        assert row["fit"]["refit_on_train_plus_valid"] is False and 0 <= row["ndcg@10"] <= 1
    assert direct["fit"]["shared_with_other_task"] is False
    assert sequential["fit"]["shared_with_other_task"] is True and "unfiltered" in sequential


def test_bad_time_box_is_a_clear_error(tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(DataError, match="max-minutes"):
        run_baselines(tiny_data, "direct", methods=["sasrec"], max_minutes=0)
    assert main(["baselines", "--data", str(tiny_data), "--task", "direct", "--methods", "lightgcn",
                 "--max-minutes", "-1"]) == 2
    assert "--max-minutes must be > 0" in capsys.readouterr().err


def test_report_puts_learned_rows_after_the_simple_ones_and_labels_sasrec_direct() -> None:
    from benchmarks.report import tables

    metrics = {"hr@5": 0.1, "ndcg@5": 0.1, "hr@10": 0.2, "ndcg@10": 0.15}
    rows = [{"method": m, "task": t, "dataset": "beauty", "protocol": {"label": "honest"}, "users": 9,
             **metrics, **({"unfiltered": metrics} if t == "sequential" else {})}
            for m in ("sasrec", "omega-spectral", "als", "popularity") for t in ("direct", "sequential")]
    text = tables(rows)
    direct, sequential = text.split("### sequential")
    names = [line.split(" | ")[0][2:] for line in direct.splitlines() if line.startswith("| ")][1:]
    assert names == ["popularity", "als", "sasrec (direct: sees history incl. validation item)",
                     "omega-spectral"]
    assert "| sasrec |" in sequential and "validation item" not in sequential
