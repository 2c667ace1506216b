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
