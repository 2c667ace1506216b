"""Quality results as JSON files in benchmarks/results/: baselines on a dataset, or a bundle's own metrics.

    python -m benchmarks.quality baselines --data data/beauty [--tasks direct sequential] [--limit-users N]
    python -m benchmarks.quality bundle --bundle bundles/beauty-small [--variant "85 min"]
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def write_result(result: dict[str, Any], command: str) -> Path:
    """One JSON file per (dataset, task, split, method, preset, device)."""
    import torch

    RESULTS.mkdir(parents=True, exist_ok=True)
    result = {**result, "command": command, "date": _stamp(), "torch": torch.__version__,
              "python": platform.python_version()}
    device = str(result["device"]).split(" ")[0].replace("/", "-")
    name = "-".join(str(result[k]) for k in ("dataset", "task", "split", "method")).replace("/", "-")
    preset = result.get("preset")
    scheme = result.get("protocol", {}).get("id_scheme", "shuffled")
    variant = result.get("variant")
    tag = (("-" + preset if preset else "") + ("-" + variant if variant else "")
           + ("" if scheme == "shuffled" else "-" + scheme))
    path = RESULTS / re.sub(r"[^A-Za-z0-9.+_-]+", "_", f"quality-{name}{tag}-{device}-{_stamp()}.json")
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def baselines(args: argparse.Namespace) -> None:
    from training.baselines.runner import run_baselines

    for task in args.tasks:
        for result in run_baselines(Path(args.data), task, split=args.split, id_scheme=args.id_scheme,
                                    limit_users=args.limit_users, seed=args.seed, methods=args.methods,
                                    max_minutes=args.max_minutes, test_users=args.test_users):
            result["minutes"] = round(result.pop("seconds") / 60, 2)
            if args.test_users:
                result["variant"] = f"sample of {result['users']} users"
            path = write_result(result, " ".join(["python -m benchmarks.quality", *sys.argv[1:]]))
            print(f"{result['method']:15s} {task:10s} HR@10 {result['hr@10']:.4f} "
                  f"NDCG@10 {result['ndcg@10']:.4f} -> {path.name}")


def bundle(args: argparse.Namespace) -> None:
    metrics = json.loads((Path(args.bundle) / "metrics.json").read_text())
    training = metrics.get("training", {})
    for key in ("direct", "direct_elmrec", "sequential", "sequential_elmrec"):
        if key not in metrics:
            continue
        task = metrics[key]["task"]
        result = dict(metrics[key])
        result["minutes"] = training.get("minutes")
        result["training"] = {k: v for k, v in training.items() if k != "curve"}
        result["bundle"] = str(args.bundle)
        if args.variant:
            result["variant"] = args.variant
        path = write_result(result, f"python -m training train ... --out {args.bundle} (metrics.json)")
        print(f"{result['method']:15s} {task:10s} HR@10 {result['hr@10']:.4f} "
              f"NDCG@10 {result['ndcg@10']:.4f} -> {path.name}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("baselines")
    b.add_argument("--data", required=True)
    b.add_argument("--tasks", nargs="+", default=["direct", "sequential"], choices=["direct", "sequential"])
    b.add_argument("--split", default="test", choices=["valid", "test"])
    b.add_argument("--id-scheme", default="shuffled", choices=["shuffled", "p5"])
    b.add_argument("--limit-users", type=int, default=None)
    b.add_argument("--test-users", type=int, default=None,
                   help="evaluate on the fixed random sample of N users a bundle with test_users=N uses")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--methods", nargs="*", default=None)
    b.add_argument("--max-minutes", type=float, default=None, help="time box of each neural baseline")
    b.set_defaults(func=baselines)
    u = sub.add_parser("bundle")
    u.add_argument("--bundle", required=True)
    u.add_argument("--variant", default=None,
                   help="label of this run beside its preset (e.g. `85 min`), kept in the JSON and the table")
    u.set_defaults(func=bundle)
    args = p.parse_args(argv)
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
