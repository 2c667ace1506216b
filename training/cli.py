"""Command line: `python -m training train|evaluate|baselines ...`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from model_store.device import CHOICES
from model_store.errors import DataError, ElmrecError
from training.presets import PRESETS


def _train(args: argparse.Namespace) -> int:
    from training.trainer import RunSpec, train

    spec = RunSpec(data=Path(args.data), preset=args.preset, out=Path(args.out), limit_users=args.limit_users,
                   id_scheme=args.id_scheme, max_minutes=args.max_minutes, resume=args.resume, seed=args.seed,
                   device=args.device, omega_kind=args.omega, epochs=args.epochs,
                   reviews=Path(args.reviews) if args.reviews else None, data_options=_data_options(args),
                   overrides=_overrides(args.set))
    path = train(spec)
    if path is None:  # a torchrun rank other than 0: rank 0 writes and reports
        return 0
    metrics = json.loads((path / "metrics.json").read_text()) if (path / "metrics.json").exists() else {}
    print(f"bundle written to {path}")
    for task in ("direct", "sequential"):
        if task in metrics:
            m = metrics[task]
            print(f"  test {task:10s} HR@5 {m['hr@5']:.4f} NDCG@5 {m['ndcg@5']:.4f} "
                  f"HR@10 {m['hr@10']:.4f} NDCG@10 {m['ndcg@10']:.4f} ({m['users']} users)")
    return 0


def _overrides(pairs: list[str]) -> dict[str, Any]:
    """`--set key=value` pairs; values parsed as JSON when they are JSON (numbers, true/false, null)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise DataError(f"--set takes key=value, got {pair!r}")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def _data_options(args: argparse.Namespace) -> dict[str, Any]:
    """Column flags apply to interaction files only; a P5 folder takes none."""
    if Path(args.data).is_dir():
        return {}
    options: dict[str, Any] = {"k_core": args.k_core}
    for key in ("user_col", "item_col", "time_col", "sep"):
        if getattr(args, key):  # unset: recognised from the header (columns) or the extension (sep)
            options[key] = getattr(args, key)
    if args.file_order:
        options["file_order"] = True
    return options


def _evaluate(args: argparse.Namespace) -> int:
    from model_store.bundle import load_bundle

    if (args.task == "explanation") != (args.reviews is not None):
        raise DataError("--task explanation needs --reviews FILE (the reviews of held-out pairs are scored), "
                        "and --reviews applies to --task explanation only")
    bundle = load_bundle(args.bundle)
    result: dict[str, Any]
    if args.task == "explanation":
        from training.explain_eval import evaluate_explanation

        result = evaluate_explanation(bundle, Path(args.reviews), args.split, args.limit_users, args.device,
                                      args.max_tokens, args.beams)
    else:
        from training.evaluate import evaluate_bundle

        result = evaluate_bundle(bundle, args.task, args.split, args.limit_users, args.filter_history,
                                 args.device, progress=not args.json, pure=args.pure)
    _print(result, args.json)
    return 0


def _baselines(args: argparse.Namespace) -> int:
    from training.baselines.runner import run_baselines

    results = run_baselines(Path(args.data), args.task, split=args.split, id_scheme=args.id_scheme,
                            limit_users=args.limit_users, seed=args.seed, methods=args.methods,
                            max_minutes=args.max_minutes, test_users=args.test_users)
    _print(results, args.json)
    return 0


def _print(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train ELMRec and write a bundle")
    t.add_argument("--data", required=True,
                   help="P5 folder or interactions file (csv/tsv/parquet, RecBole .inter)")
    t.add_argument("--preset", default="small", choices=list(PRESETS))
    t.add_argument("--out", required=True, help="bundle folder to write")
    t.add_argument("--limit-users", type=int, default=None, help="first N users in file order")
    t.add_argument("--id-scheme", default="shuffled", choices=["shuffled", "graph", "p5"],
                   help="item numbers: shuffled (default), graph (neighbours in the TRAIN graph share "
                        "id-token prefixes; beyond the paper), p5 (P5's leaky numbers: reproduction)")
    t.add_argument("--omega", default=None, choices=["random", "spectral"],
                   help="Ω kind (default: spectral for shuffled ids, random for the p5 reproduction)")
    t.add_argument("--max-minutes", type=float, default=None)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--resume", action="store_true", help="continue from OUT.ckpt")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--device", default="auto", choices=CHOICES)
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset setting, e.g. --set max_steps=1500 --set model.dropout=0.1")
    t.add_argument("--reviews", default=None, help="jsonl {user, item, text} to train explanation")
    t.add_argument("--user-col", default=None,
                   help="interaction files: user column (default: recognised from the header: user, user_id, "
                        "userId, uid, reviewerID, also as RecBole's user_id:token)")
    t.add_argument("--item-col", default=None,
                   help="interaction files: item column (default: recognised: item, item_id, itemId, "
                        "movieId, asin, product_id)")
    when = t.add_mutually_exclusive_group()
    when.add_argument("--time-col", default=None,
                      help="interaction files: timestamp column, numbers or ISO dates (default: recognised: "
                           "timestamp, time, ts, unixReviewTime, datetime, date)")
    when.add_argument("--file-order", action="store_true",
                      help="interaction files: no timestamp column, rows are already in time order")
    t.add_argument("--sep", default=None, help="interaction files: separator (default from the extension)")
    t.add_argument("--k-core", type=int, default=0, help="interaction files: iterative k-core filter")
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="evaluate a bundle on its own recorded split")
    e.add_argument("--bundle", required=True)
    e.add_argument("--task", required=True, choices=["direct", "sequential", "explanation"])
    e.add_argument("--split", default="test", choices=["valid", "test"])
    e.add_argument("--limit-users", type=int, default=None,
                   help="the first N users (default: the users of the bundle's own metrics.json)")
    e.add_argument("--filter-history", action=argparse.BooleanOptionalAction, default=True)
    e.add_argument("--device", default="auto", choices=CHOICES)
    e.add_argument("--pure", action="store_true",
                   help="the T5 alone, without the bundle's graph-score ensemble (if it has one)")
    e.add_argument("--reviews", default=None,
                   help="explanation: jsonl {user, item, text}; the reviews of the split's held-out pairs "
                        "are scored (BLEU-4, ROUGE-1/2/L)")
    e.add_argument("--max-tokens", type=int, default=None,
                   help="explanation: longest generated text in tokens (default and most: the review length "
                        "training keeps)")
    e.add_argument("--beams", type=int, default=1, help="explanation: beam width (1 = greedy)")
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=_evaluate)

    b = sub.add_parser("baselines", help="popularity, ItemKNN, Ω alone, the P5 leak rule; "
                       "learned ones (als bpr lightgcn sasrec) when named in --methods")
    b.add_argument("--data", required=True)
    b.add_argument("--task", required=True, choices=["direct", "sequential"])
    b.add_argument("--split", default="test", choices=["valid", "test"])
    b.add_argument("--id-scheme", default="shuffled", choices=["shuffled", "p5"])
    b.add_argument("--limit-users", type=int, default=None)
    b.add_argument("--test-users", type=int, default=None,
                   help="score the fixed random sample of N users a bundle with test_users=N is scored on")
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--methods", nargs="*", default=None)
    b.add_argument("--max-minutes", type=float, default=None,
                   help="time box of each neural baseline (lightgcn, sasrec); default 5")
    b.add_argument("--json", action="store_true")
    b.set_defaults(func=_baselines)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except (ElmrecError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
