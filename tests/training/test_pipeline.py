"""End to end through the CLI: the bundle's Ω comes from train edges only, bad data fails cleanly, metrics
reproduce, training improves validation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import save_model

from model_store.bundle import load_bundle, omega_matrix, write_manifest
from model_store.model import ElmrecModel
from model_store.omega import build_omega
from training.cli import main
from training.split import leave_one_out, train_edges
from training.trainer import RunSpec, train

METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10")


def test_the_bundles_omega_was_built_from_training_interactions_only(tiny_bundle: Path) -> None:
    """The trained bundle's stored Ω table is the one its train split's graph gives, and not the one a
    graph holding the held-out (validation and test) pairs gives; its stored degrees are the train graph's."""
    bundle = load_bundle(tiny_bundle)
    n_users, n_items = bundle.codec.n_users, bundle.codec.n_items
    split = leave_one_out(bundle.data.sequences)
    users, items = train_edges(split)
    held = [(u, i) for part in (split.valid, split.test) for u, i in enumerate(part.tolist())
            if i not in split.train[u]]  # a repeat purchase would be a training edge in its own right
    assert len(held) > n_users
    stored = bundle.omega
    np.testing.assert_array_equal(stored.user_degree, [len(set(t)) for t in split.train])
    rebuilt = build_omega(bundle.config.omega, n_users, n_items, users, items)
    np.testing.assert_allclose(stored.users, rebuilt.users, atol=1e-5)
    np.testing.assert_allclose(stored.items, rebuilt.items, atol=1e-5)
    held_users, held_items = (np.asarray(x, dtype=np.int64) for x in zip(*held, strict=True))
    leaky = build_omega(bundle.config.omega, n_users, n_items, np.concatenate([users, held_users]),
                        np.concatenate([items, held_items]))
    assert not np.allclose(stored.users, leaky.users, atol=1e-3)  # the check above can tell them apart
    assert not np.array_equal(leaky.user_degree, stored.user_degree)


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


def _evaluate(capsys: pytest.CaptureFixture[str], bundle: Path, *args: str) -> dict[str, Any]:
    assert main(["evaluate", "--bundle", str(bundle), "--json", "--device", "cpu", *args]) == 0
    return dict(json.loads(capsys.readouterr().out.strip().splitlines()[-1]))


def test_evaluate_sequential_reproduces_the_filtered_and_unfiltered_metrics(
    tiny_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stored = load_bundle(tiny_bundle).metrics["sequential"]
    result = _evaluate(capsys, tiny_bundle, "--task", "sequential")
    assert result["users"] == stored["users"]
    unfiltered = _evaluate(capsys, tiny_bundle, "--task", "sequential", "--no-filter-history")
    for key in METRICS:
        assert result[key] == pytest.approx(stored[key], abs=1e-9)
        assert result["unfiltered"][key] == pytest.approx(stored["unfiltered"][key], abs=1e-9)
        assert unfiltered[key] == pytest.approx(stored["unfiltered"][key], abs=1e-9)
        assert unfiltered["filtered"][key] == pytest.approx(stored[key], abs=1e-9)
    assert result["ndcg@10"] != result["unfiltered"]["ndcg@10"]  # the filter changed something here


def test_evaluate_refuses_a_bad_limit(tiny_bundle: Path, capsys) -> None:
    assert main(["evaluate", "--bundle", str(tiny_bundle), "--task", "direct", "--limit-users", "0"]) == 2


def test_training_improves_validation_over_its_untrained_start(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The synthetic data is learnable: trained through the CLI (tiny preset, 12 epochs), the T5's
    validation NDCG@10 is well above that of the same model at its initialisation (the trainer's seed)."""
    trained = tmp_path / "trained"
    assert main(["train", "--data", str(tiny_data), "--preset", "tiny", "--out", str(trained), "--device",
                 "cpu", "--epochs", "12", "--set", "patience=1000"]) == 0
    bundle = load_bundle(trained)
    untrained = tmp_path / "untrained"
    shutil.copytree(trained, untrained)
    output_tokens = bundle.build_model().output_tokens.tolist()
    torch.manual_seed(bundle.config.protocol.seed)  # as the trainer does right before building the model
    start = ElmrecModel(bundle.config.model, omega_matrix(bundle.omega), output_tokens)
    save_model(start, str(untrained / "model.safetensors"))
    write_manifest(untrained)
    args = ("--task", "sequential", "--split", "valid", "--pure")
    after = _evaluate(capsys, trained, *args)["ndcg@10"]
    before = _evaluate(capsys, untrained, *args)["ndcg@10"]
    assert after > 2 * before, (before, after)
    curve = bundle.metrics["training"]["curve"]
    assert curve[-1]["train_loss"] < curve[0]["train_loss"]


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
