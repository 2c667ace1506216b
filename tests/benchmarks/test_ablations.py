"""The ablation benchmark: the rerank sweep matches the evaluator; variants collected; doc block rebuilt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import ablations
from model_store.bundle import load_bundle
from training.evaluate import evaluate_sequential, sample_users, split_cases


@pytest.fixture()
def results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    out = tmp_path / "results"
    doc = tmp_path / "RESULTS.md"
    doc.write_text(f"# Results\n{ablations.BEGIN}\nold\n{ablations.END}\ntail\n")
    monkeypatch.setattr(ablations, "RESULTS", out)
    monkeypatch.setattr(ablations, "DOC", doc)
    return out


def test_rerank_sweep_equals_the_evaluator_and_grows_with_n(tiny_bundle: Path, results: Path) -> None:
    args = ["rerank", "--bundle", str(tiny_bundle), "--ns", "0", "3", "6", "--users", "30"]
    assert ablations.main(args) == 0
    (path,) = results.glob("ablation-rerank-n-*.json")
    data = json.loads(path.read_text())
    assert path.with_suffix(".png").stat().st_size > 0
    rows = {row["n"]: row for row in data["rows"]}
    for kind in ("elmrec", "served"):  # a larger window only appends items after the same prefix
        assert rows[0][kind]["hr@10"] <= rows[3][kind]["hr@10"] <= rows[6][kind]["hr@10"]
    bundle = load_bundle(tiny_bundle)
    users = sample_users(bundle.codec.n_users, 30, bundle.config.protocol.seed)
    case = split_cases(bundle.data.sequences, bundle.data.negatives, "test", users)
    direct = evaluate_sequential(bundle.engine(torch.device("cpu")), case, extra=6, beam=data["beam"])
    assert rows[6]["served"]["ndcg@10"] == pytest.approx(direct["ndcg@10"])


def test_collect_and_report(tiny_bundle: Path, results: Path) -> None:
    assert ablations.main(["collect", "--sweep", "demo", "--dataset", "synthetic",
                           f"a={tiny_bundle}", f"b={tiny_bundle}"]) == 0
    (path,) = results.glob("ablation-demo-synthetic-*.json")
    variants = json.loads(path.read_text())["variants"]
    metrics = json.loads((tiny_bundle / "metrics.json").read_text())
    assert [v["variant"] for v in variants] == ["a", "b"]
    assert variants[0]["direct"]["ndcg@10"] == metrics["direct"]["ndcg@10"]
    ablations.main(["report"])
    text = ablations.DOC.read_text()
    assert "old" not in text and "### demo on synthetic" in text and text.endswith("tail\n")
    with pytest.raises(SystemExit):
        ablations.main(["collect", "--sweep", "x", "--dataset", "y", "no-equals-sign"])


def test_collect_reuses_a_recorded_variant(tiny_bundle: Path, results: Path) -> None:
    ablations.main(["collect", "--sweep", "first", "--dataset", "synthetic", f"ref={tiny_bundle}"])
    (first,) = results.glob("ablation-first-synthetic-*.json")
    ablations.main(["collect", "--sweep", "second", "--dataset", "synthetic",
                    f"reference={first}:ref", f"new={tiny_bundle}"])
    (second,) = results.glob("ablation-second-synthetic-*.json")
    reused, fresh = json.loads(second.read_text())["variants"]
    assert reused["variant"] == "reference" and reused["reused_from"] == f"{first.name}:ref"
    assert reused["direct"] == fresh["direct"] and "reused_from" not in fresh
    for bad in (f"x={first}:missing", "x=no-such-file.json:ref", "x=not-a-spec"):
        with pytest.raises(SystemExit):
            ablations.main(["collect", "--sweep", "third", "--dataset", "synthetic", bad])


def test_selection_reads_what_each_rule_keeps(tiny_items_bundle: Path, results: Path) -> None:
    assert ablations.main(["selection", "--bundle", str(tiny_items_bundle)]) == 0
    [written] = list(results.glob("ablation-selection-*.json"))
    data = json.loads(written.read_text())
    curve = load_bundle(tiny_items_bundle).metrics["training"]["curve"]
    best_direct = max(c["valid_direct_ndcg@10"] for c in curve)
    assert data["rules"]["per task: direct"]["direct"] == best_direct
    assert data["rules"]["mean of both tasks"]["direct"] <= best_direct
    kept = load_bundle(tiny_items_bundle).metrics["training"]["best_step"]
    assert data["rules"]["per task: direct"]["step"] == kept["direct"]
    assert data["rules"]["per task: sequential"]["step"] == kept["sequential"]
