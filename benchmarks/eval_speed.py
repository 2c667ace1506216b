"""Wall time of the offline evaluator (`training.evaluate`) over a bundle's test split, both tasks."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.engine import RESULTS, environment, torch_threads, write_json
from model_store.device import describe

DESCRIPTION = (__doc__ or "") + """

    python -m benchmarks.eval_speed --bundle bundles/beauty-small --device cpu --limit-users 500 --json

Times `evaluate_direct` (exact likelihood of the positive and its 99 negatives, batches of 32 users) and
`evaluate_sequential` (constrained beam of max(beam, 10 + N) over all items, batches of 64 users) with
the evaluator's own batching, on the first N test users (all by default). By default the T5 alone
(`pure`, as the paper evaluates ELMRec); `--graph` times the bundle's graph-score ensemble instead.
The JSON also carries HR/NDCG@5/10 of both tasks (sequential history-filtered, and unfiltered), so a
run over all users is a full test evaluation.
"""


def run(
    bundle_dir: Path, device: str, limit_users: int | None = None, graph: bool = False,
    threads: int | None = 1, command: str = "",
) -> dict[str, Any]:
    """Evaluate both tasks once, timing each call (CUDA synchronised)."""
    with torch_threads(threads if device == "cpu" else None):
        return _run(bundle_dir, device, limit_users, graph, command)


def _run(bundle_dir: Path, device: str, limit_users: int | None, graph: bool, command: str) -> dict[str, Any]:
    from model_store.bundle import load_bundle
    from training.evaluate import evaluate_direct, evaluate_sequential, method_name, split_cases

    bundle = load_bundle(bundle_dir)
    engine = bundle.engine(device)
    n_all = bundle.codec.n_users
    n = n_all if limit_users is None else min(limit_users, n_all)
    case = split_cases(bundle.data.sequences, bundle.data.negatives, "test", list(range(n)))
    warm = split_cases(bundle.data.sequences, bundle.data.negatives, "test", list(range(min(2, n))))
    evaluate_direct(engine, warm, pure=not graph)  # first-call costs (allocator, kernels) left out
    evaluate_sequential(engine, warm, extra=bundle.config.rerank_n, beam=bundle.config.beam, pure=not graph)

    def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[float, dict[str, Any]]:
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        if engine.device.type == "cuda":
            torch.cuda.synchronize(engine.device)
        return time.perf_counter() - start, out

    direct_s, direct = timed(evaluate_direct, engine, case, pure=not graph)
    seq_s, seq = timed(evaluate_sequential, engine, case, extra=bundle.config.rerank_n,
                       beam=bundle.config.beam, pure=not graph)
    prior = bundle.config.graph_prior.model_dump()
    return {
        "benchmark": "eval_speed",
        "device": describe(engine.device),
        "preset": bundle.config.preset,
        "dataset": bundle.config.dataset.name,
        "users": n,
        "all_test_users": n_all,
        "direct_seconds": round(direct_s, 2),
        "sequential_seconds": round(seq_s, 2),
        "direct_ms_per_user": round(1000 * direct_s / max(n, 1), 3),
        "sequential_ms_per_user": round(1000 * seq_s / max(n, 1), 3),
        "direct_method": method_name(prior, "direct", not graph),
        "sequential_method": method_name(prior, "sequential", not graph),
        "sequential_beam": seq["beam"],
        "direct_ndcg@10": round(direct["ndcg@10"], 4),
        "sequential_ndcg@10": round(seq["ndcg@10"], 4),
        "split": "test",
        "direct_metrics": _metrics(direct),
        "sequential_metrics": {**_metrics(seq), "history_filtered": True},
        "sequential_unfiltered_metrics": _metrics(seq.get("unfiltered", {})),
        **environment(command),
    }


METRICS = ("hr@5", "ndcg@5", "hr@10", "ndcg@10")


def _metrics(result: dict[str, Any]) -> dict[str, float]:
    """HR and NDCG at 5 and 10 of an evaluator result (rounded to 4 places)."""
    return {k: round(float(result[k]), 4) for k in METRICS if k in result}


def summary(result: dict[str, Any]) -> str:
    r = result
    return (
        f"evaluation of {r['users']} test users ({r['dataset']} / {r['preset']}, {r['device']}): "
        f"direct {r['direct_seconds']:.2f} s ({r['direct_ms_per_user']:.2f} ms/user, {r['direct_method']}), "
        f"sequential {r['sequential_seconds']:.2f} s ({r['sequential_ms_per_user']:.2f} ms/user, "
        f"beam {r['sequential_beam']}, {r['sequential_method']})"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.eval_speed", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--limit-users", type=int, default=None, help="the first N test users (default: all)")
    p.add_argument("--graph", action="store_true", help="time the bundle's graph-score ensemble too")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads on CPU (0: torch's default); see docs/PERFORMANCE.md")
    p.add_argument("--json", action="store_true", help="print one JSON object last and write it to --out-dir")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.limit_users is not None and args.limit_users < 1:
        p.error("--limit-users must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    command = " ".join(["python -m benchmarks.eval_speed", *(sys.argv[1:] if argv is None else argv)])
    result = run(args.bundle, args.device, args.limit_users, args.graph, args.threads or None, command)
    print(summary(result))
    if args.json:
        path = write_json(result, args.out_dir, args.device, "graph" if args.graph else "")
        print(f"wrote {path}")
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
