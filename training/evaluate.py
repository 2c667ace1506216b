"""Offline evaluation: one `evaluate(ranker, case, task)` for every method (HR@5/10, NDCG@5/10, one tie
rule), the bundle's own evaluation, and the validation tuning of the graph prior."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from tqdm import tqdm

from model_store.bundle import Bundle
from model_store.device import describe, resolve_device
from model_store.engine import InferenceEngine, Scored, filter_rerank
from model_store.errors import DataError
from model_store.topk import top_k_items
from training.metrics import CUTOFFS, rank_if_present, rank_with_ties_against, summarize
from training.ranking import EngineRanker, Ranker
from training.records import MetricRecord, ProtocolRecord, Task
from training.split import held_out

BATCH_USERS = {"direct": 32, "sequential": 64}  # users per ranker call (the engine's batch shapes)


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
    chosen = list(range(len(sequences))) if users is None else list(users)
    cuts = [held_out(sequences[u], split) for u in chosen]
    negs = [[n for n in negatives[u] if n != target] for u, (_, target) in zip(chosen, cuts, strict=True)]
    return EvalCase(chosen, [h for h, _ in cuts], [t for _, t in cuts], negs)


def _batches(n: int, size: int) -> list[range]:
    return [range(s, min(n, s + size)) for s in range(0, n, size)]


def evaluate(
    ranker: Ranker, case: EvalCase, task: Task, batch_users: int | None = None, progress: bool = False,
) -> dict[str, Any]:
    """HR/NDCG@5/10 of `ranker` on `case`, ties counted against the held-out item for every method.

    direct: the held-out item among its candidates by `score_candidates`; sequential: its place in
    `recommend(k=10)` (absent = a miss), history-filtered as the headline and `unfiltered` beside.
    A rank is the number of other items scoring strictly higher plus those scoring equal.
    """
    if task not in BATCH_USERS:
        raise ValueError(f"task must be 'direct' or 'sequential', got {task!r}")
    k = max(CUTOFFS)
    ranks: dict[bool, list[int | None]] = {True: [], False: []}
    start = time.perf_counter()
    for chunk in tqdm(_batches(len(case.users), batch_users or BATCH_USERS[task]), disable=not progress,
                      desc=task):
        users = [case.users[i] for i in chunk]
        hists = [case.histories[i] for i in chunk]
        targets = [case.targets[i] for i in chunk]
        if task == "direct":
            cands = [[case.targets[i], *case.negatives[i]] for i in chunk]
            scores = ranker.score_candidates(users, hists, cands)
            ranks[True].extend(rank_with_ties_against(s, t) for s, t in zip(scores, targets, strict=True))
            continue
        for filtered in (True, False):
            lists = ranker.recommend(users, hists, k, filtered)
            ranks[filtered].extend(_listed_rank(items, t) for items, t in zip(lists, targets, strict=True))
    out: dict[str, Any] = summarize(ranks[True])
    if task == "sequential":
        out["unfiltered"] = summarize(ranks[False])
    out.update(users=len(case.users), seconds=round(time.perf_counter() - start, 2))
    return out


@dataclass
class GraphWeighted(EngineRanker):
    """Direct ranking with the engine's T5 scores + w · z(graph score) at a chosen weight (None = the
    prior's own); the T5 pass is kept per (user, candidates) in `cache`, shared between weights."""

    weight: float | None = None
    cache: dict[tuple[int, tuple[int, ...]], dict[int, float]] = field(default_factory=dict)

    def score_candidates(
        self, users: Sequence[int], histories: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]]
    ) -> list[dict[int, float]]:
        keys = [(int(u), tuple(c)) for u, c in zip(users, candidates, strict=True)]
        missing = [n for n, key in enumerate(keys) if key not in self.cache]
        if missing:
            t5 = self.engine.score_direct([users[n] for n in missing], [list(candidates[n]) for n in missing],
                                          pure=True, histories=[histories[n] for n in missing])
            self.cache.update((keys[n], s) for n, s in zip(missing, t5, strict=True))
        return [self.engine.with_graph(u, self.cache[key], self.weight, history=h)
                for u, key, h in zip(users, keys, histories, strict=True)]


def evaluate_direct(
    engine: InferenceEngine, case: EvalCase, batch_users: int = 32, progress: bool = False,
    pure: bool = False, weights: Sequence[float] = (),
) -> dict[str, Any]:
    """`evaluate` of the engine on direct; `weights`: also the ranking with each graph-score weight from
    the same T5 pass (`by_weight`, weight 0 = the T5 alone)."""
    if not weights:
        return evaluate(EngineRanker(engine, 0, pure=pure), case, "direct", batch_users, progress)
    cache: dict[tuple[int, tuple[int, ...]], dict[int, float]] = {}
    out = evaluate(GraphWeighted(engine, 0, weight=0.0 if pure else None, cache=cache), case, "direct",
                   batch_users, progress)
    out["by_weight"] = {}
    for w in weights:
        result = evaluate(GraphWeighted(engine, 0, weight=w, cache=cache), case, "direct", batch_users)
        out["by_weight"][str(w)] = {key: result[key] for key in summarize([])}
    return out


def evaluate_sequential(
    engine: InferenceEngine, case: EvalCase, extra: int, beam: int = 20, batch_users: int = 64,
    progress: bool = False, pure: bool = False,
) -> dict[str, Any]:
    """`evaluate` of the engine on sequential (constrained beam, rerank of `extra`), with its settings."""
    out = evaluate(EngineRanker(engine, extra, beam, pure), case, "sequential", batch_users, progress)
    out.update(rerank_n=extra, beam=max(beam, max(CUTOFFS) + extra))
    return out


def sample_users(n_users: int, n: int | None, seed: int) -> list[int]:
    """A fixed random subset of users (all when n is None or >= n_users), sorted."""
    if n is None or n >= n_users:
        return list(range(n_users))
    rng = np.random.default_rng([seed, 7])
    return sorted(int(u) for u in rng.choice(n_users, size=n, replace=False))


def bundle_users(bundle: Bundle, limit_users: int | None = None) -> list[int]:
    """The users a bundle's test metrics were computed on (its preset's `test_users`, sampled with its
    seed), or the first `limit_users` in file order."""
    n_users = bundle.codec.n_users
    if limit_users is not None:
        if limit_users < 1:
            raise DataError(f"--limit-users must be >= 1, got {limit_users}")
        return list(range(min(limit_users, n_users)))
    test_users = bundle.config.preset_settings.get("test_users")
    return sample_users(n_users, None if test_users is None else int(test_users), bundle.config.protocol.seed)


def evaluate_bundle(
    bundle: Bundle, task: Task, split: str, limit_users: int | None, filter_history: bool = True,
    device: str = "auto", progress: bool = False, pure: bool = False,
) -> dict[str, Any]:
    """Evaluate a loaded bundle on its recorded data (by default the users of its metrics.json, so the
    figures reproduce); the JSON result names its protocol and device."""
    dev = resolve_device(device)
    ranker = EngineRanker(bundle.engine(dev), bundle.config.rerank_n, bundle.config.beam, pure)
    case = split_cases(bundle.data.sequences, bundle.data.negatives, split, bundle_users(bundle, limit_users))
    result = evaluate(ranker, case, task, progress=progress)
    if task == "sequential":
        result.update(rerank_n=ranker.extra, beam=max(ranker.beam, max(CUTOFFS) + ranker.extra))
        if not filter_history:
            unfiltered = result.pop("unfiltered")
            result["filtered"] = {k: result[k] for k in unfiltered}
            result.update(unfiltered)
    config = bundle.config
    record = MetricRecord.model_validate({
        **result, "task": task, "split": split, "dataset": config.dataset.name, "preset": config.preset,
        "method": method_name(config.graph_prior.model_dump(), task, pure), "seed": config.protocol.seed,
        "device": describe(dev), "model_version": config.model_version, "filter_history": filter_history,
        "protocol": ProtocolRecord.of(config.protocol, config.omega.kind),
    })
    return record.dump()


def _listed_rank(items: Sequence[Scored], target: int) -> int | None:
    """The rank of `target` in a recommendation list by the one tie rule (absent = None)."""
    return rank_if_present({s.item: s.score for s in items}, target)


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
    pure_ranks = [_listed_rank(filter_rerank(g, h, 10, extra, True), t)
                  for g, h, t in zip(generated, case.histories, case.targets, strict=True)]
    seq_report: dict[str, float] = {"beam-only": summarize(pure_ranks)["ndcg@10"]}
    pools: dict[float, list[tuple[list[int], np.ndarray]]] = {}
    for mix in mixes:
        trial = dataclasses.replace(prior, pool=pool, cooc_mix=mix)
        pools[mix] = [trial.sequential_pool(h, [s.item for s in g])
                      for h, g in zip(case.histories, generated, strict=True)]
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
                combined = {i: scores[i] + w * float(z)
                            for i, z in zip(items, prior.standardised(graph), strict=True)}
                ranked = [Scored(i, s) for i, s in top_k_items(combined)]
                ranks.append(_listed_rank(filter_rerank(ranked, h, 10, extra, True), t))
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
