"""Ablation sweeps of ELMRec on one dataset: variants trained side by side, and the rerank window N.

    python -m benchmarks.ablations collect --sweep omega-kind --dataset beauty \
        spectral=bundles/beauty-small-spectral random=bundles/beauty-small-random
    python -m benchmarks.ablations rerank --bundle bundles/beauty-small-spectral --ns 0 5 10 15
    python -m benchmarks.ablations selection --bundle bundles/beauty-small   # per-task vs mean selection
    python -m benchmarks.ablations report      # rewrites the ablations block of docs/RESULTS.md

A variant may also be `NAME=ablation-<...>.json:VARIANT`: its row is copied from an earlier ablation
JSON (same preset, steps and seed) and keeps `reused_from`, so a sweep need not retrain its reference.

`collect` reads each bundle's own metrics.json (test split, the bundle's test users); `rerank` runs ONE
constrained beam per user (width max(beam, 10 + max N)) and applies the history-filtering rerank with
each N to it, for the T5 alone and for the served (graph-ensembled) ranking. Each writes
`benchmarks/results/ablation-<sweep>-<dataset>-<device>-<date>.json` and a PNG beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from model_store.device import describe

RESULTS = Path(__file__).parent / "results"
DOC = Path(__file__).parents[1] / "docs" / "RESULTS.md"
BEGIN, END = "<!-- ablations:begin -->", "<!-- ablations:end -->"
FIELDS = ("direct", "direct_elmrec", "sequential", "sequential_elmrec")


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def _device() -> str:
    return describe("cpu")


def _write(sweep: str, dataset: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"ablation-{sweep}-{dataset}-cpu-{_stamp()}.json"
    payload = {"benchmark": "ablation", "sweep": sweep, "dataset": dataset, "date": _stamp(),
               "command": " ".join(["python -m benchmarks.ablations", *sys.argv[1:]]), **payload}
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _figures(metrics: dict[str, Any]) -> dict[str, Any]:
    keep = ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "users", "method")
    return {k: metrics[k] for k in keep if k in metrics}


def variant_row(name: str, bundle: Path) -> dict[str, Any]:
    """One trained variant: its test figures (served and T5 alone), steps, minutes, config switches."""
    metrics = json.loads((bundle / "metrics.json").read_text())
    config = json.loads((bundle / "config.json").read_text())
    training = metrics.get("training", {})
    row: dict[str, Any] = {"variant": name, "bundle": str(bundle),
                           "steps": training.get("step"), "minutes": training.get("minutes"),
                           "omega": config.get("omega"), "model": config.get("model"),
                           "protocol": config.get("protocol"), "preset": config.get("preset")}
    for key in FIELDS:
        if key in metrics:
            row[key] = _figures(metrics[key])
    return row


def reused_row(name: str, spec: str) -> dict[str, Any]:
    """A variant recorded in an earlier ablation JSON (`FILE:VARIANT`), marked with where it came from."""
    file, sep, variant = spec.rpartition(":")
    path = Path(file) if Path(file).exists() else RESULTS / file
    if not sep or not path.exists():
        raise SystemExit(f"reused variants are NAME=ABLATION_JSON:VARIANT, got {spec!r}")
    for row in json.loads(path.read_text()).get("variants", []):
        if row["variant"] == variant:
            return {**row, "variant": name, "reused_from": f"{path.name}:{variant}"}
    raise SystemExit(f"{path.name} has no variant {variant!r}")


def collect(args: argparse.Namespace) -> None:
    rows = []
    for spec in args.variants:
        name, sep, source = spec.partition("=")
        if not sep:
            raise SystemExit(f"variants are NAME=BUNDLE_DIR or NAME=ABLATION_JSON:VARIANT, got {spec!r}")
        is_bundle = Path(source).is_dir()
        rows.append(variant_row(name, Path(source)) if is_bundle else reused_row(name, source))
    path = _write(args.sweep, args.dataset, {"device": _device(), "variants": rows})
    plot_variants(rows, path.with_suffix(".png"), args.sweep)
    for row in rows:
        cells = " ".join(f"{key} {row[key]['ndcg@10']:.4f}" for key in FIELDS if key in row)
        print(f"{row['variant']:16s} NDCG@10 {cells}")
    print(f"-> {path.name}")


def rerank(args: argparse.Namespace) -> None:
    import torch

    from model_store.bundle import load_bundle
    from model_store.engine import filter_rerank
    from training.evaluate import sample_users, split_cases
    from training.metrics import rank_if_present, summarize

    torch.set_num_threads(args.threads)
    bundle = load_bundle(Path(args.bundle))
    engine = bundle.engine(torch.device("cpu"))
    users = sample_users(bundle.codec.n_users, args.users, bundle.config.protocol.seed)
    case = split_cases(bundle.data.sequences, bundle.data.negatives, args.split, users)
    width = max(bundle.config.beam, 10 + max(args.ns))
    ranks: dict[str, dict[int, list[int | None]]] = {"elmrec": {n: [] for n in args.ns},
                                                     "served": {n: [] for n in args.ns}}
    for start in range(0, len(users), args.batch_users):
        chunk = range(start, min(len(users), start + args.batch_users))
        hists = [case.histories[i] for i in chunk]
        for kind, pure in (("elmrec", True), ("served", False)):
            generated = engine.beam_sequential([case.users[i] for i in chunk], hists, width, pure=pure)
            for i, items in zip(chunk, generated, strict=True):
                for n in args.ns:
                    kept = filter_rerank(items, case.histories[i], 10, n, True)
                    ranks[kind][n].append(rank_if_present({s.item: s.score for s in kept}, case.targets[i]))
    rows = [{"n": n, **{kind: dict(summarize(ranks[kind][n])) for kind in ranks}} for n in args.ns]
    path = _write("rerank-n", bundle.config.dataset.name, {
        "device": _device(), "bundle": args.bundle, "split": args.split, "users": len(users), "beam": width,
        "protocol": bundle.config.protocol.model_dump(), "rows": rows})
    plot_rerank(rows, path.with_suffix(".png"))
    for row in rows:
        print(f"N={row['n']:3d} NDCG@10 elmrec {row['elmrec']['ndcg@10']:.4f} "
              f"served {row['served']['ndcg@10']:.4f}")
    print(f"-> {path.name}")


def selection(args: argparse.Namespace) -> None:
    """Lever "best weights per task": from a bundle's validation curve, the step each selection rule keeps
    (the mean of both tasks' NDCG@10, or each task's own) and the validation figures there."""
    bundle = Path(args.bundle)
    metrics = json.loads((bundle / "metrics.json").read_text())
    config = json.loads((bundle / "config.json").read_text())
    curve = metrics["training"]["curve"]
    keys = {"direct": "valid_direct_ndcg@10", "sequential": "valid_sequential_ndcg@10"}

    def best(score: Any) -> dict[str, Any]:
        point = max(curve, key=score)  # the first of equal scores, as the trainer keeps it
        return {"step": point["step"], "epoch": point["epoch"],
                **{task: point[key] for task, key in keys.items()}}

    rows = {"mean of both tasks": best(lambda c: (c[keys["direct"]] + c[keys["sequential"]]) / 2),
            "per task: direct": best(lambda c: c[keys["direct"]]),
            "per task: sequential": best(lambda c: c[keys["sequential"]])}
    path = _write("selection", config["dataset"]["name"], {
        "device": _device(), "bundle": str(bundle), "split": "valid",
        "users": config["preset_settings"]["eval_users"], "preset": config["preset"],
        "note": "validation NDCG@10 only (the curve the trainer recorded); test figures need each rule's "
                "weights, which only the per-task rule's bundle keeps",
        "rules": rows, "curve": curve})
    plot_selection(curve, rows, path.with_suffix(".png"))
    for name, row in rows.items():
        print(f"{name:22s} step {row['step']:5d} valid direct {row['direct']:.4f} "
              f"sequential {row['sequential']:.4f}")
    print(f"-> {path.name}")


def plot_selection(curve: list[dict[str, Any]], rows: dict[str, Any], path: Path) -> None:
    from benchmarks.plots import save, subplots

    fig, axes = subplots(1, 2, figsize=(9, 3.5))
    steps = [c["step"] for c in curve]
    for ax, task in zip(axes, ("direct", "sequential"), strict=True):
        ax.plot(steps, [c[f"valid_{task}_ndcg@10"] for c in curve], marker=".")
        for (name, row), style in zip(rows.items(), ("--", ":", "-."), strict=True):
            ax.axvline(row["step"], linestyle=style, color="grey", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(f"valid {task} NDCG@10")
        ax.legend(fontsize=7)
    save(fig, path, "best weights: mean of both tasks vs per task (validation)", dpi=100)


def plot_variants(rows: list[dict[str, Any]], path: Path, sweep: str) -> None:
    from benchmarks.plots import save, subplots

    fig, axes = subplots(1, 2, figsize=(9, 3.5))
    names = [r["variant"] for r in rows]
    for ax, task in zip(axes, ("direct", "sequential"), strict=True):
        width = 0.38
        for offset, key, label in ((-width / 2, f"{task}_elmrec", "T5 alone"), (width / 2, task, "served")):
            values = [r.get(key, r.get(task, {})).get("ndcg@10", 0.0) for r in rows]
            ax.bar([i + offset for i in range(len(rows))], values, width, label=label)
        ax.set_xticks(range(len(rows)), names, rotation=20)
        ax.set_title(f"{task} NDCG@10")
        ax.legend(fontsize=8)
    save(fig, path, f"ablation: {sweep}", dpi=100)


def plot_rerank(rows: list[dict[str, Any]], path: Path) -> None:
    from benchmarks.plots import save, subplots

    fig, ax = subplots(figsize=(5, 3.5))
    ns = [r["n"] for r in rows]
    for kind, label in (("elmrec", "T5 alone"), ("served", "served (T5 + graph)")):
        ax.plot(ns, [r[kind]["ndcg@10"] for r in rows], marker="o", label=label)
    ax.set_xlabel("rerank N (generate 10+N, drop history, keep 10)")
    ax.set_ylabel("sequential NDCG@10 (filtered)")
    ax.legend(fontsize=8)
    save(fig, path, dpi=100)


def _cell(block: dict[str, Any] | None) -> str:
    if not block:
        return "– | –"
    return f"{block['hr@10']:.4f} | {block['ndcg@10']:.4f}"


def tables() -> str:
    """Markdown for every ablation JSON (latest per sweep and dataset)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(RESULTS.glob("ablation-*.json")):
        data = json.loads(path.read_text())
        data["_file"] = path.name
        latest[(data["sweep"], data["dataset"])] = data
    out: list[str] = []
    for (sweep, dataset), data in sorted(latest.items()):
        out.append(f"### {sweep} on {dataset} ({data['device']}, {data['date']}, `{data['_file']}`)\n")
        if "variants" in data:
            out.append("| variant | steps | direct T5 alone HR@10 | NDCG@10 | direct served HR@10 | NDCG@10 "
                       "| sequential T5 alone HR@10 | NDCG@10 | sequential served HR@10 | NDCG@10 | users |")
            out.append("|" + "---|" * 11)
            for row in data["variants"]:
                users = row.get("direct", {}).get("users", "")
                out.append(f"| {row['variant']} | {row['steps']} | {_cell(row.get('direct_elmrec'))} | "
                           f"{_cell(row.get('direct'))} | {_cell(row.get('sequential_elmrec'))} | "
                           f"{_cell(row.get('sequential'))} | {users} |")
        elif "rules" in data:
            out.append("| selection rule | step kept | valid direct NDCG@10 | valid sequential NDCG@10 |")
            out.append("|---|---|---|---|")
            for name, row in data["rules"].items():
                out.append(f"| {name} | {row['step']} | {row['direct']:.4f} | {row['sequential']:.4f} |")
            out.append(f"\n{data['users']} validation users; {data['note']}.")
        else:
            out.append("| N | T5 alone HR@10 | NDCG@10 | served HR@10 | NDCG@10 |")
            out.append("|---|---|---|---|---|")
            for row in data["rows"]:
                out.append(f"| {row['n']} | {_cell(row['elmrec'])} | {_cell(row['served'])} |")
            out.append(f"\n{data['users']} {data['split']} users, one beam of width {data['beam']} per user.")
        out.append(f"\n![{sweep}](../benchmarks/results/{Path(data['_file']).with_suffix('.png').name})\n")
    return "\n".join(out)


def report(_args: argparse.Namespace) -> None:
    text = DOC.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{DOC} has no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    DOC.write_text(f"{head}{BEGIN}\n{tables()}\n{END}{tail}")
    print(f"wrote {DOC}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.ablations", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("collect", help="test figures of bundles trained as variants of one setting")
    c.add_argument("--sweep", required=True)
    c.add_argument("--dataset", required=True)
    c.add_argument("variants", nargs="+", metavar="NAME=BUNDLE_DIR|NAME=ABLATION_JSON:VARIANT",
                   help="a trained bundle, or a variant recorded in an earlier ablation JSON (same "
                        "settings and seed; the row keeps `reused_from`)")
    c.set_defaults(func=collect)
    r = sub.add_parser("rerank", help="the history-filtering rerank window N, from one beam per user")
    r.add_argument("--bundle", required=True)
    r.add_argument("--ns", type=int, nargs="+", default=[0, 5, 10, 15])
    r.add_argument("--split", default="test", choices=["valid", "test"])
    r.add_argument("--users", type=int, default=2000)
    r.add_argument("--batch-users", type=int, default=64)
    r.add_argument("--threads", type=int, default=1)
    r.set_defaults(func=rerank)
    sel = sub.add_parser("selection", help="best weights per task vs the mean of both (validation curve)")
    sel.add_argument("--bundle", required=True)
    sel.set_defaults(func=selection)
    sub.add_parser("report", help="rewrite the ablations block of docs/RESULTS.md").set_defaults(func=report)
    args = p.parse_args(argv)
    if getattr(args, "ns", None) and min(args.ns) < 0:
        p.error("--ns values must be >= 0")
    args.func(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
