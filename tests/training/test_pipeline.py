"""End to end through the CLI: Ω graph has no held-out pair, bad data fails cleanly, metrics reproduce."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_store.bundle import load_bundle
from model_store.omega import normalized_adjacency
from training.cli import main
from training.data import load_p5_folder
from training.split import leave_one_out, train_edges
from training.trainer import RunSpec, train

BEAUTY = Path(__file__).resolve().parents[2] / "data" / "beauty"


def test_omega_graph_of_beauty_contains_no_validation_or_test_pair() -> None:
    data = load_p5_folder(BEAUTY)
    split = leave_one_out(data.sequences)
    users, items = train_edges(split)
    adj = normalized_adjacency(data.n_users, data.n_items, users, items).tocsr()
    n_u = data.n_users
    held = 0
    for held_out in (split.valid, split.test):
        for u, item in enumerate(held_out.tolist()):
            if item in set(split.train[u]):
                continue  # a repeat purchase: the pair is a training edge in its own right
            held += 1
            assert adj[u, n_u + item] == 0, f"held-out pair (user {u}, item {item}) is a graph edge"
    assert held > 40_000
    assert adj.nnz == 2 * len({(u, i) for u, i in zip(users.tolist(), items.tolist(), strict=True)})


def test_train_on_malformed_data_exits_2_and_writes_nothing(tmp_path: Path, capsys) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / "sequential_data.txt").write_text("1 2 3 4 5\n2 7 x 9\n")
    out = tmp_path / "bundle"
    assert main(["train", "--data", str(folder), "--preset", "tiny", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "sequential_data.txt" in err and "line 2" in err
    assert not out.exists()
    assert not list(tmp_path.glob(".bundle*"))


def test_unknown_preset_and_missing_data_are_clear_errors(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["train", "--data", str(tmp_path), "--preset", "huge", "--out", str(tmp_path / "b")])
    assert main(["train", "--data", str(tmp_path / "nope"), "--preset", "tiny",
                 "--out", str(tmp_path / "b")]) == 2
    assert "nope" in capsys.readouterr().err


def test_evaluate_cli_reproduces_the_bundle_metrics(tiny_bundle: Path, capsys) -> None:
    assert main(["evaluate", "--bundle", str(tiny_bundle), "--task", "direct", "--split", "test",
                 "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    stored = load_bundle(tiny_bundle).metrics["direct"]
    assert result["users"] == stored["users"]
    for key in ("hr@5", "ndcg@5", "hr@10", "ndcg@10"):
        assert result[key] == pytest.approx(stored[key], abs=1e-9)
    assert result["protocol"]["id_scheme"] == "shuffled" and result["protocol"]["graph"] == "train"


def test_evaluate_sequential_json_has_both_filtered_and_unfiltered(tiny_bundle: Path, capsys) -> None:
    assert main(["evaluate", "--bundle", str(tiny_bundle), "--task", "sequential", "--limit-users", "10",
                 "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["users"] == 10
    assert set(result["unfiltered"]) == {"hr@5", "ndcg@5", "hr@10", "ndcg@10"}
    assert 0.0 <= result["ndcg@10"] <= result["hr@10"] <= 1.0


def test_evaluate_refuses_a_bad_limit(tiny_bundle: Path, capsys) -> None:
    assert main(["evaluate", "--bundle", str(tiny_bundle), "--task", "direct", "--limit-users", "0"]) == 2


def test_tiny_training_beats_its_own_untrained_start(tiny_bundle: Path) -> None:
    """The synthetic data is learnable: the trained model's validation score exceeds its first evaluation."""
    metrics = load_bundle(tiny_bundle).metrics
    curve = metrics["training"]["curve"]
    assert curve[0]["train_loss"] > curve[-1]["train_loss"]
    assert np.isfinite(metrics["training"]["best_score"]["mean"])


def test_evaluate_reproduces_a_sampled_bundles_metrics_by_default(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bundle scored on a sample of its users (test_users): evaluate scores the same users, same figures."""
    bundle = train(RunSpec(data=tiny_data, preset="tiny", out=tmp_path / "sampled", device="cpu", epochs=1,
                           overrides={"test_users": 15}))
    stored = load_bundle(bundle).metrics
    for task in ("direct", "sequential"):
        assert main(["evaluate", "--bundle", str(bundle), "--task", task, "--json", "--device", "cpu"]) == 0
        result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert result["users"] == stored[task]["users"] == 15
        assert {k: result[k] for k in ("hr@5", "ndcg@5", "hr@10", "ndcg@10")} == {
            k: stored[task][k] for k in ("hr@5", "ndcg@5", "hr@10", "ndcg@10")}
        if task == "sequential":
            assert result["unfiltered"] == stored[task]["unfiltered"]
