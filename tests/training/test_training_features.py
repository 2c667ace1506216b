"""Training features: resume from a checkpoint, the explanation task, generic interaction files, baselines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from model_store.bundle import load_bundle
from model_store.errors import DataError
from training.baselines.harness import Harness
from training.baselines.runner import run_baselines
from training.baselines.simple import popularity_table
from training.data import load_data
from training.evaluate import evaluate, sample_users, split_cases
from training.negatives import negatives_for
from training.ranking import TableRanker
from training.split import leave_one_out, train_edges
from training.trainer import RunSpec, train


def _weights(folder: Path) -> dict[str, np.ndarray]:
    return load_file(str(folder / "model.safetensors"))


def test_interrupted_training_resumes_to_the_same_weights(tiny_data: Path, tmp_path: Path) -> None:
    """Stop after part of an epoch (max_steps), resume, and land exactly where one straight run lands."""
    straight = train(RunSpec(data=tiny_data, preset="tiny", out=tmp_path / "straight", device="cpu",
                             epochs=2, overrides={"eval_every": 10_000}))
    first = RunSpec(data=tiny_data, preset="tiny", out=tmp_path / "resumed", device="cpu", epochs=2,
                    overrides={"eval_every": 10_000, "max_steps": 7})
    train(first)
    assert (tmp_path / "resumed.ckpt" / "state.json").exists()
    state = json.loads((tmp_path / "resumed.ckpt" / "state.json").read_text())
    assert state["step"] == 7
    train(RunSpec(data=tiny_data, preset="tiny", out=tmp_path / "resumed", device="cpu", epochs=2,
                  resume=True, overrides={"eval_every": 10_000}))
    assert straight.exists()
    a = _weights(tmp_path / "straight.ckpt")
    b = _weights(tmp_path / "resumed.ckpt")
    assert a.keys() == b.keys()
    for name in a:
        assert np.allclose(a[name], b[name], atol=1e-6), name


def test_explanation_task_trains_on_training_pairs_only(tiny_data: Path, tmp_path: Path) -> None:
    sequences = [line.split() for line in (tiny_data / "sequential_data.txt").read_text().splitlines()]
    reviews = tmp_path / "reviews.jsonl"
    rows = []
    for fields in sequences[:20]:
        user, items = fields[0], fields[1:]
        rows.append({"user": user, "item": items[0], "text": f"great product number {items[0]}"})
        rows.append({"user": user, "item": items[-1], "text": "the held-out item"})  # test pair: skipped
    reviews.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    out = train(RunSpec(data=tiny_data, preset="tiny", out=tmp_path / "exp", device="cpu", epochs=1,
                        reviews=reviews))
    bundle = load_bundle(out)
    assert bundle.metrics["training"]["explanation_examples"] == 20


def test_malformed_reviews_name_the_line(tiny_data: Path, tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text('{"user": "1", "item": "2", "text": "ok"}\n{"user": "1"}\n')
    with pytest.raises(DataError, match=r"reviews.jsonl, line 2"):
        train(RunSpec(data=tiny_data, preset="tiny", out=tmp_path / "x", device="cpu", reviews=reviews))
    assert not (tmp_path / "x").exists()


def test_generic_csv_trains_into_a_bundle_with_the_files_own_ids(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    lines = ["uid,iid,ts"]
    for u in range(30):
        for t in range(6):
            lines.append(f"u{u},sku-{int(rng.integers(0, 25))},{1000 + 10 * t}")
    path = tmp_path / "log.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="no item column"):  # uid and ts are usual names, iid is not
        train(RunSpec(data=path, preset="tiny", out=tmp_path / "b0", device="cpu"))
    out = train(RunSpec(data=path, preset="tiny", out=tmp_path / "b", device="cpu", epochs=1,
                        data_options={"item_col": "iid"}))
    bundle = load_bundle(out)
    assert all(i.startswith("sku-") for i in bundle.codec.items)
    assert all(u.startswith("u") for u in bundle.codec.users)


def test_baselines_share_the_harness_and_leak_rule_needs_p5_ids(tiny_data: Path) -> None:
    results = run_baselines(tiny_data, "sequential", split="test")
    methods = {r["method"] for r in results}
    assert {"popularity", "itemknn", "omega-spectral"} <= methods
    for r in results:
        assert r["protocol"]["id_scheme"] == "shuffled" and r["protocol"]["graph"] == "train"
        assert "unfiltered" in r and 0 <= r["ndcg@10"] <= 1
    # the synthetic users walk consecutive P5 ids, so the leak rule is near perfect there
    leak = run_baselines(tiny_data, "sequential", id_scheme="p5", methods=["p5-leak"])[0]
    assert leak["unfiltered"]["hr@10"] > 0.5
    with pytest.raises(ValueError, match="p5"):
        run_baselines(tiny_data, "sequential", methods=["p5-leak"])


def test_baselines_on_the_bundles_test_user_sample(tiny_data: Path) -> None:
    """`test_users=N` scores exactly the users a bundle with test_users=N is evaluated on."""
    full = run_baselines(tiny_data, "direct", methods=["popularity"])[0]
    sample = run_baselines(tiny_data, "direct", methods=["popularity"], test_users=7)[0]
    assert sample["users"] == 7 < full["users"]
    data = load_data(tiny_data)
    negatives = negatives_for(data)
    harness = Harness(data.n_users, data.n_items, *train_edges(leave_one_out(data.sequences)))
    case = split_cases(data.sequences, negatives, "test", sample_users(data.n_users, 7, 0))
    expected = evaluate(TableRanker(popularity_table(harness)), case, "direct")
    assert sample["ndcg@10"] == pytest.approx(expected["ndcg@10"])


def test_graph_prior_is_tuned_on_validation_and_reported(tiny_data: Path, tmp_path: Path) -> None:
    out = train(RunSpec(data=tiny_data, preset="tiny", out=tmp_path / "gp", device="cpu", epochs=1,
                        overrides={"graph_prior": True, "graph_pool": 5}))
    bundle = load_bundle(out)
    chosen = bundle.config.graph_prior
    report = bundle.metrics["graph_prior"]["validation"]
    assert str(chosen.direct_weight) in report["direct_valid_ndcg@10"]
    best = max(report["direct_valid_ndcg@10"].values())
    assert report["direct_valid_ndcg@10"][str(chosen.direct_weight)] == best
    if chosen.direct_weight > 0:
        assert bundle.metrics["direct"]["method"] == "elmrec+graph"
        assert bundle.metrics["direct_elmrec"]["method"] == "elmrec"
    else:
        assert bundle.metrics["direct"]["method"] == "elmrec"


def test_preset_overrides_are_validated() -> None:
    from model_store.errors import DataError
    from training.presets import PRESETS, apply_overrides

    out = apply_overrides(PRESETS["tiny"], {"max_steps": 12, "model.dropout": 0.2, "omega_layers": 2})
    assert (out.max_steps, out.model.dropout, out.omega_layers) == (12, 0.2, 2)
    assert out.omega("shuffled", 5.0, 0).layers == 2
    assert PRESETS["tiny"].max_steps is None  # the shared preset is untouched
    for bad in ({"bogus": 1}, {"model.nope": 1}, {"max_steps": "many"}, {"model.dropout": 2.0}):
        with pytest.raises(DataError):
            apply_overrides(PRESETS["tiny"], bad)


def test_cli_set_flags_are_checked_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from training.cli import main

    data = Path(__file__).resolve().parents[2] / "data" / "beauty"
    for flag, message in (("no-equals-sign", "--set takes key=value"),
                          ("unknown_setting=3", "unknown preset setting 'unknown_setting'")):
        assert main(["train", "--data", str(data), "--preset", "tiny", "--out", str(tmp_path / "b"),
                     "--set", flag]) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_cooccurrence_mix_is_tuned_on_validation_and_served_as_evaluated(tiny_data: Path,
                                                                         tmp_path: Path) -> None:
    from model_store.bundle import ITEM_GRAPH
    from training.evaluate import evaluate_bundle

    out = train(RunSpec(data=tiny_data, preset="tiny", out=tmp_path / "cooc", device="cpu", epochs=1,
                        overrides={"graph_prior": True, "graph_pool": 10, "graph_cooc": True}))
    bundle = load_bundle(out)
    chosen = bundle.config.graph_prior
    report = bundle.metrics["graph_prior"]["validation"]["sequential_valid_ndcg@10"]
    assert {key.split(",")[0] for key in report if key != "beam-only"} == {"λ=0.0", "λ=0.5", "λ=0.8", "λ=1.0"}
    best = max(report.values())
    if chosen.sequential_weight or chosen.pool:
        assert report[f"λ={chosen.cooc_mix},w={chosen.sequential_weight}"] == best
    else:
        assert report["beam-only"] == best
    direct = bundle.metrics["graph_prior"]["validation"]["direct_valid_ndcg@10"]
    assert {key.split(",")[0] for key in direct} == {"μ=0.0", "μ=0.5", "μ=0.8", "μ=1.0"}
    if chosen.direct_weight:
        assert direct[f"μ={chosen.direct_cooc_mix},w={chosen.direct_weight}"] == max(direct.values())
    uses_graph = max(chosen.cooc_mix, chosen.direct_cooc_mix) > 0
    assert (out / ITEM_GRAPH).exists() == uses_graph == (bundle.item_graph is not None)
    served = evaluate_bundle(bundle, "sequential", "test", None, device="cpu")
    assert served["ndcg@10"] == pytest.approx(bundle.metrics["sequential"]["ndcg@10"])
    assert served["hr@10"] == pytest.approx(bundle.metrics["sequential"]["hr@10"])
    served_direct = evaluate_bundle(bundle, "direct", "test", None, device="cpu")
    assert served_direct["ndcg@10"] == pytest.approx(bundle.metrics["direct"]["ndcg@10"])
