"""Builds the result tables of docs/RESULTS.md from the JSON files in benchmarks/results/.

    python -m benchmarks.report            # rewrites the block between the markers in docs/RESULTS.md
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
DOC = Path(__file__).parents[1] / "docs" / "RESULTS.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10")


MAIN_OMEGA = ("omega-spectral", "omega-random")  # the other Ω-alone variants are tabled in docs/OMEGA.md


def load() -> list[dict[str, Any]]:
    rows = []
    for path in sorted(RESULTS.glob("quality-*.json")):
        row = json.loads(path.read_text())
        if row["method"].startswith("omega-") and row["method"] not in MAIN_OMEGA:
            continue
        row["_file"] = path.name
        rows.append(row)
    return rows


ORDER = ("popularity", "itemknn", "als", "bpr", "lightgcn", "sasrec")  # first rows, in this order
NOTES = {("sasrec", "direct"): " (direct: sees history incl. validation item)"}


def _label(row: dict[str, Any]) -> str:
    """Method, then (preset, variant, id numbering when not the protocol's default), then notes."""
    scheme = row.get("protocol", {}).get("id_scheme")
    parts = [row.get("preset"), row.get("variant"), "graph ids" if scheme == "graph" else None]
    detail = ", ".join(str(p) for p in parts if p)
    return f"{row['method']}{f' ({detail})' if detail else ''}{NOTES.get((row['method'], row['task']), '')}"


def _minutes(row: dict[str, Any]) -> Any:
    """A trained model's training minutes (summed over resumed runs), else the call's wall time.

    A model run's own `minutes` is the wall time of its last process only, which for a resumed run
    is a fraction of its training."""
    return row.get("training", {}).get("train_minutes", row.get("minutes", ""))


def _order(label: str) -> tuple[int, str]:
    name = label.split(" ")[0]
    return (ORDER.index(name) if name in ORDER else len(ORDER), label)


def tables(rows: list[dict[str, Any]]) -> str:
    out: list[str] = []
    by_task: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        label = row.get("protocol", {}).get("label", "?")
        by_task[(row["task"], label)].append(row)
    for (task, label), items in sorted(by_task.items()):
        datasets = sorted({r["dataset"] for r in items})
        out.append(f"### {task}, {label} protocol (test split)\n")
        head = "| method | " + " | ".join(f"{d} {m.upper()}" for d in datasets for m in METRICS) + \
            " | users (per dataset) | device | minutes (per dataset) | seed |"
        out.append(head)
        out.append("|" + "---|" * (head.count("|") - 1))
        methods = sorted({_label(r) for r in items}, key=_order)
        for method in methods:
            cells = []
            meta: dict[str, Any] = {}
            users: list[str] = []
            minutes: list[str] = []
            for d in datasets:
                match = [r for r in items if r["dataset"] == d and _label(r) == method]
                if not match:
                    cells += ["–"] * len(METRICS)
                    continue
                r = match[-1]
                cells += [f"{r[m]:.4f}" for m in METRICS]
                users.append(str(r.get("users", "")))
                minutes.append(str(_minutes(r)))
                meta = r
            out.append(f"| {method} | " + " | ".join(cells) +
                       f" | {' / '.join(users)} | {meta.get('device', '')} | {' / '.join(minutes)} "
                       f"| {meta.get('seed', '')} |")
        if task == "sequential":
            out.append("\nSequential figures are history-filtered (the product's behaviour); unfiltered "
                       "NDCG@10: " + "; ".join(
                           f"{_label(r)} {r['dataset']} {r['unfiltered']['ndcg@10']:.4f}"
                           for r in items if "unfiltered" in r) + ".")
        out.append("")
    return "\n".join(out)


def main() -> int:
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        print(f"{DOC} has no {BEGIN} ... {END} block", file=sys.stderr)
        return 2
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{tables(load())}\n{END}{tail}")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
