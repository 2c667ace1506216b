"""Offline evaluation through the shared inference engine: HR@5/10, NDCG@5/10, honest protocol."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from model_store.engine import InferenceEngine, Scored, filter_rerank
from model_store.errors import DataError
from training.metrics import rank_in_list, rank_with_ties_against, summarize


@dataclass
class EvalCase:
    """Users of one split with their history, held-out item and direct candidates (positive + negatives)."""

    users: list[int]
    histories: list[list[int]]
    targets: list[int]
    negatives: list[list[int]]


def split_cases(
    sequences: Sequence[Sequence[int]], negatives: Sequence[Sequence[int]], split: str,
    users: Sequence[int] | None = None,
) -> EvalCase:
    """valid: history = train part, target = second-last; test: history = all but last, target = last."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    chosen = list(range(len(sequences))) if users is None else list(users)
    cut = 2 if split == "valid" else 1
    histories = [list(sequences[u][:-cut]) for u in chosen]
    targets = [int(sequences[u][-cut]) for u in chosen]
    negs = [[n for n in negatives[u] if n != targets[i]] for i, u in enumerate(chosen)]
    return EvalCase(chosen, histories, targets, negs)


def _batches(n: int, size: int) -> list[range]:
    return [range(s, min(n, s + size)) for s in range(0, n, size)]


def evaluate_direct(
    engine: InferenceEngine, case: EvalCase, batch_users: int = 32, progress: bool = False,
    pure: bool = False, weights: Sequence[float] = (),
) -> dict[str, Any]:
    """Rank the positive among its candidates by exact likelihood; ties count against the positive.

    `weights`: also report, from the same T5 pass, the ranking with each graph-score weight
    (`by_weight`, weight 0 = the T5 alone).
    """
    ranks: list[int | None] = []
    extra: dict[float, list[int | None]] = {w: [] for w in weights}
    start = time.perf_counter()
    for chunk in tqdm(_batches(len(case.users), batch_users), disable=not progress, desc="direct"):
        users = [case.users[i] for i in chunk]
        cands = [[case.targets[i], *case.negatives[i]] for i in chunk]
        hists = [case.histories[i] for i in chunk]
        t5 = engine.score_direct(users, cands, pure=True, histories=hists)
        scores = [engine.with_graph(u, s, 0.0 if pure else None, history=h)
                  for u, s, h in zip(users, t5, hists, strict=True)]
        ranks.extend(rank_with_ties_against(s, case.targets[i]) for s, i in zip(scores, chunk, strict=True))
        for w in weights:
            extra[w].extend(rank_with_ties_against(engine.with_graph(u, s, w, history=h), case.targets[i])
                            for u, s, h, i in zip(users, t5, hists, chunk, strict=True))
    out: dict[str, Any] = summarize(ranks)
    if weights:
        out["by_weight"] = {str(w): summarize(r) for w, r in extra.items()}
    out.update(users=len(case.users), seconds=round(time.perf_counter() - start, 2))
    return out


def evaluate_sequential(
    engine: InferenceEngine, case: EvalCase, extra: int, beam: int = 20, batch_users: int = 64,
    progress: bool = False, pure: bool = False,
) -> dict[str, Any]:
    """Constrained beam over all items; top-level figures are history-filtered, `unfiltered` beside."""
    filtered: list[int | None] = []
    unfiltered: list[int | None] = []
    k = 10
    width = max(beam, k + extra)
    start = time.perf_counter()
    for chunk in tqdm(_batches(len(case.users), batch_users), disable=not progress, desc="sequential"):
        users = [case.users[i] for i in chunk]
        hists = [case.histories[i] for i in chunk]
        generated = engine.beam_sequential(users, hists, width, pure=pure)
        for i, items in zip(chunk, generated, strict=True):
            target = case.targets[i]
            keep = filter_rerank(items, case.histories[i], k, extra, True)
            plain = filter_rerank(items, case.histories[i], k, extra, False)
            filtered.append(rank_in_list([s.item for s in keep], target))
            unfiltered.append(rank_in_list([s.item for s in plain], target))
    out: dict[str, Any] = summarize(filtered)
    out["unfiltered"] = summarize(unfiltered)
    out.update(users=len(case.users), seconds=round(time.perf_counter() - start, 2),
               rerank_n=extra, beam=width)
    return out


def sample_users(n_users: int, n: int | None, seed: int) -> list[int]:
    """A fixed random subset of users (all when n is None or >= n_users), sorted."""
    if n is None or n >= n_users:
        return list(range(n_users))
    rng = np.random.default_rng([seed, 7])
    return sorted(int(u) for u in rng.choice(n_users, size=n, replace=False))


def evaluate_bundle(
    bundle: Any, task: str, split: str, limit_users: int | None, filter_history: bool = True,
    device: str = "auto", progress: bool = False, pure: bool = False,
) -> dict[str, Any]:
    """Evaluate a loaded bundle on its recorded data; the JSON result names its protocol and device."""
    import os

    import torch

    if limit_users is not None and limit_users < 1:
        raise DataError(f"--limit-users must be >= 1, got {limit_users}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                       ("cpu" if device == "auto" else device))
    engine = bundle.engine(dev)
    n = bundle.codec.n_users if limit_users is None else min(limit_users, bundle.codec.n_users)
    case = split_cases(bundle.data.sequences, bundle.data.negatives, split, list(range(n)))
    if task == "direct":
        result = evaluate_direct(engine, case, progress=progress, pure=pure)
    else:
        result = evaluate_sequential(engine, case, extra=bundle.config.rerank_n, beam=bundle.config.beam,
                                     progress=progress, pure=pure)
        if not filter_history:
            unfiltered = result.pop("unfiltered")
            filtered = {k: result[k] for k in unfiltered}
            result.update(unfiltered)
            result["filtered"] = filtered
    protocol = bundle.config.protocol
    dev_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({os.cpu_count()} cores)"
    result.update(
        task=task, split=split, dataset=bundle.config.dataset.name, preset=bundle.config.preset,
        method=method_name(bundle.config.graph_prior.model_dump(), task, pure), seed=protocol.seed,
        device=dev_name, model_version=bundle.config.model_version,
        filter_history=filter_history,
        protocol={**protocol.model_dump(), "label": protocol.label, "omega": bundle.config.omega.kind},
    )
    return result


def method_name(prior: dict[str, float], task: str, pure: bool) -> str:
    """`elmrec` for the T5 alone, `elmrec+graph` when the graph-score ensemble is on for this task."""
    key = "direct_weight" if task == "direct" else "sequential_weight"
    on = not pure and (prior.get(key, 0.0) > 0 or (task == "sequential" and prior.get("pool", 0) > 0))
    return "elmrec+graph" if on else "elmrec"


WEIGHT_GRID: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def tune_graph_prior(
    engine: InferenceEngine, case: EvalCase, extra: int, beam: int, pool: int,
    grid: Sequence[float] = WEIGHT_GRID, mixes: Sequence[float] = (0.0,),
) -> tuple[dict[str, float], dict[str, Any]]:
    """Pick the T5 + graph-score weights with the best validation NDCG@10 (weight 0 = pure ELMRec).

    T5 scores are computed once; each weight only re-sorts them. `mixes` are the shares of the item
    co-occurrence score in the graph score tried (needs the prior's item graph), for direct (μ) and
    sequential (λ); a sequential mix changes the pool, so the union of every mix's pool is scored once.
    Returns the chosen settings and the validation NDCG@10 of every setting tried (keys `w` when only
    mix 0 is tried, else `μ=<mix>,w=<weight>` / `λ=<mix>,w=<weight>`).
    """
    prior = engine.prior
    if prior is None:
        raise ValueError("the engine has no graph prior to tune")
    if any(m > 0 for m in mixes) and prior.item_graph is None:
        raise ValueError("a co-occurrence mix > 0 needs the prior's item graph")
    t5 = engine.score_direct(case.users, [[t, *n] for t, n in zip(case.targets, case.negatives, strict=True)],
                             pure=True, histories=case.histories)
    only_omega = tuple(mixes) == (0.0,)

    def key(symbol: str, mix: float, w: float) -> str:
        return str(w) if only_omega else f"{symbol}={mix},w={w}"

    direct_report: dict[str, float] = {}
    direct_settings: dict[str, tuple[float, float]] = {}
    for mix in mixes:
        for w in grid:
            direct_settings[key("μ", mix, w)] = (mix, w)
            ranks: list[int | None] = []
            for scores, user, h, target in zip(t5, case.users, case.histories, case.targets, strict=True):
                ranks.append(rank_with_ties_against(engine.with_graph(user, scores, w, history=h, mix=mix),
                                                    target))
            direct_report[key("μ", mix, w)] = summarize(ranks)["ndcg@10"]
    width = max(beam, 10 + extra)
    generated = engine.beam_sequential(case.users, case.histories, width, pure=True)
    pure_ranks = [rank_in_list([s.item for s in filter_rerank(g, h, 10, extra, True)], t)
                  for g, h, t in zip(generated, case.histories, case.targets, strict=True)]
    seq_report: dict[str, float] = {"beam-only": summarize(pure_ranks)["ndcg@10"]}
    saved = prior.pool, prior.cooc_mix
    pools: dict[float, list[tuple[list[int], np.ndarray]]] = {}
    for mix in mixes:
        prior.pool, prior.cooc_mix = pool, mix
        pools[mix] = [prior.sequential_pool(h, [s.item for s in g])
                      for h, g in zip(case.histories, generated, strict=True)]
    prior.pool, prior.cooc_mix = saved
    union = [list(dict.fromkeys(i for mix in mixes for i in pools[mix][u][0]))
             for u in range(len(case.users))]
    exact = engine.score_items(case.users, case.histories, union)
    settings: dict[str, tuple[float, float]] = {}
    for mix in mixes:
        for w in grid:
            settings[key("λ", mix, w)] = (mix, w)
            ranks = []
            for scores, (items, graph), h, t in zip(exact, pools[mix], case.histories, case.targets,
                                                    strict=True):
                ranked = sorted((Scored(i, scores[i] + w * float(z))
                                 for i, z in zip(items, prior.standardised(graph), strict=True)),
                                key=lambda s: (-s.score, s.item))
                ranks.append(rank_in_list([s.item for s in filter_rerank(ranked, h, 10, extra, True)], t))
            seq_report[key("λ", mix, w)] = summarize(ranks)["ndcg@10"]
    direct_mix, direct_weight = direct_settings[max(direct_report, key=lambda k: direct_report[k])]
    best_seq = max(seq_report, key=lambda k: seq_report[k])
    mix, weight = settings.get(best_seq, (0.0, 0.0))
    on = best_seq != "beam-only"
    chosen = {
        "direct_weight": float(direct_weight),
        "direct_cooc_mix": float(direct_mix) if direct_weight else 0.0,
        "sequential_weight": float(weight) if on else 0.0,
        "pool": pool if on else 0,
        "cooc_mix": float(mix) if on else 0.0,
    }
    return chosen, {"direct_valid_ndcg@10": direct_report, "sequential_valid_ndcg@10": seq_report}
