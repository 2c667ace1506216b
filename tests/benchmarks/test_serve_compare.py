"""benchmarks.serve_compare: two real services, one after the other, and the ratios between them."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.serve_compare import main, ratios


def test_ratios_are_new_over_old_per_task_and_level() -> None:
    level = {"concurrency": 1, "rps": 10.0, "p50_ms": 20.0, "p99_ms": 40.0}
    faster = {"concurrency": 1, "rps": 30.0, "p50_ms": 5.0, "p99_ms": 10.0}
    new = {task: {"levels": [faster]} for task in ("direct", "sequential")}
    old = {task: {"levels": [level]} for task in ("direct", "sequential")}
    assert ratios(new, old)["direct"] == [{"concurrency": 1, "rps": 3.0, "p50_ms": 0.25, "p99_ms": 0.25}]


def test_compares_two_served_bundles(tiny_items_bundle: Path, tiny_bundle: Path, tmp_path: Path) -> None:
    assert main(["--new", str(tiny_items_bundle), "--old", str(tiny_bundle), "--concurrency", "1",
                 "--requests", "5", "--json", "--out-dir", str(tmp_path)]) == 0
    [written] = list(tmp_path.glob("serve-compare-cpu-*.json"))
    result = json.loads(written.read_text())
    for side in ("new", "old"):
        for task in ("direct", "sequential"):
            run = result["runs"][side][task]
            assert run["levels"][0]["ok"] == 5 and run["levels"][0]["errors"] == 0
    runs = result["runs"]
    assert runs["new"]["direct"]["model_version"] != runs["old"]["direct"]["model_version"]
    assert set(result["ratios_new_over_old"]) == {"direct", "sequential"}
    assert not (tmp_path / ".serve-compare").exists()
