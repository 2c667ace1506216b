"""Quality JSONs from a bundle, and the RESULTS tables built from them: one row per labelled run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import quality, report


def test_bundle_results_keep_their_variant_and_id_scheme_apart(
    tiny_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(quality, "RESULTS", tmp_path)
    monkeypatch.setattr(report, "RESULTS", tmp_path)
    assert quality.main(["bundle", "--bundle", str(tiny_bundle)]) == 0
    assert quality.main(["bundle", "--bundle", str(tiny_bundle), "--variant", "long"]) == 0
    files = sorted(p.name for p in tmp_path.glob("quality-*-direct-*.json"))
    assert any("-long-" in f for f in files) and any("-long-" not in f for f in files)
    # the same run relabelled as graph-numbered: a third row, in the honest table
    source = next(tmp_path.glob("quality-*-direct-*-long-*.json"))
    row = json.loads(source.read_text())
    row["protocol"]["id_scheme"] = "graph"
    (tmp_path / source.name.replace("-long-", "-long-graph-")).write_text(json.dumps(row))
    text = report.tables(report.load())
    direct = text.split("### direct, honest protocol")[1].split("###")[0]
    preset = row["preset"]
    labels = [line.split(" | ")[0].lstrip("| ") for line in direct.splitlines()
              if line.startswith("| elmrec")]
    assert f"elmrec ({preset})" in labels
    assert f"elmrec ({preset}, long)" in labels
    assert f"elmrec ({preset}, long, graph ids)" in labels


def _row(dataset: str, method: str, minutes: float, train_minutes: float | None) -> dict[str, object]:
    row: dict[str, object] = {"dataset": dataset, "task": "direct", "method": method, "preset": "small",
                              "protocol": {"id_scheme": "shuffled", "label": "honest"}, "users": 2000,
                              "device": "cpu", "seed": 0, "minutes": minutes,
                              **{m: 0.1 for m in report.METRICS}}
    if train_minutes is not None:
        row["training"] = {"train_minutes": train_minutes}
    return row


def test_minutes_are_per_dataset_and_a_resumed_models_whole_training() -> None:
    # a resumed run's last process took 5.8 minutes of its 80.3 minutes of training
    rows = [_row("beauty", "elmrec", 5.82, 80.27), _row("sports", "elmrec", 32.12, 21.88),
            _row("toys", "elmrec", 31.16, 21.72), _row("beauty", "popularity", 0.01, None),
            _row("toys", "popularity", 0.05, None)]
    lines = {line.split(" | ")[0].lstrip("| "): line.split(" | ")
             for line in report.tables(rows).splitlines() if line.startswith("| ") and "---" not in line}
    assert lines["elmrec (small)"][-2] == "80.27 / 21.88 / 21.72"
    assert lines["popularity (small)"][-2] == "0.01 / 0.05"
