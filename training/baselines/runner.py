"""Run baselines by name from one registry: same split, same candidates, one `evaluate`, one metric record."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_store.bundle import Protocol
from model_store.codec import IdCodec
from model_store.device import describe
from model_store.errors import DataError
from training.baselines import lightgcn, mf, sasrec
from training.baselines.fitting import Fitter, fit_learned
from training.baselines.harness import Harness
from training.baselines.omega import SYNTAX, OmegaVariant, omega_table, parse_omega, variant_omega
from training.baselines.simple import itemknn_table, leak_table, popularity_table, tune_decay
from training.data import InteractionData, load_data, subset_users
from training.evaluate import EvalCase, evaluate, sample_users, split_cases
from training.negatives import negatives_for
from training.ranking import ScoreTable, TableRanker
from training.records import MetricRecord, ProtocolRecord, Task
from training.split import leave_one_out, train_edges


@dataclass
class Context:
    """One dataset in the harness: data, negatives, train statistics, the cases scored, the run's options."""

    data: InteractionData
    negatives: list[list[int]]
    harness: Harness
    case: EvalCase
    codec: IdCodec
    task: Task
    seed: int
    max_minutes: float | None


Build = Callable[[Context], tuple[ScoreTable, dict[str, Any]]]


def _popularity(ctx: Context) -> tuple[ScoreTable, dict[str, Any]]:
    return popularity_table(ctx.harness), {}


def _itemknn(ctx: Context) -> tuple[ScoreTable, dict[str, Any]]:
    decay = tune_decay(ctx.harness, ctx.data.sequences, ctx.negatives, ctx.task)
    return itemknn_table(ctx.harness, decay), {"decay": decay}


def _leak(ctx: Context) -> tuple[ScoreTable, dict[str, Any]]:
    if ctx.codec.scheme != "p5":
        raise DataError("the p5-leak rule only means something under --id-scheme p5")
    return leak_table(ctx.codec), {}


def _learned(name: str, fitter: Fitter, described: str) -> Build:
    def build(ctx: Context) -> tuple[ScoreTable, dict[str, Any]]:
        table, extra = fit_learned(name, fitter, ctx.harness, ctx.data.sequences, ctx.negatives, ctx.task,
                                   ctx.seed, ctx.max_minutes)
        return table, {"input": described, **extra}

    return build


def _omega(variant: OmegaVariant) -> Build:
    def build(ctx: Context) -> tuple[ScoreTable, dict[str, Any]]:
        h = ctx.harness
        omega = variant_omega(variant, h.n_users, h.n_items, h.users, h.items, ctx.seed)
        return omega_table(omega, ctx.task), {"omega": omega.params}

    return build


@dataclass(frozen=True)
class Method:
    """A registered baseline: how it is built; `learned` ones (minutes each) run only when named."""

    build: Build
    learned: bool = False


REGISTRY: dict[str, Method] = {
    "popularity": Method(_popularity),
    "itemknn": Method(_itemknn),
    "omega-spectral": Method(_omega(OmegaVariant("spectral", 64, include_e0=True))),
    "omega-random": Method(_omega(OmegaVariant("random", 512, include_e0=True))),
    "p5-leak": Method(_leak),
    "als": Method(_learned("als", mf.fit_als, mf.INPUTS["als"]), learned=True),
    "bpr": Method(_learned("bpr", mf.fit_bpr, mf.INPUTS["bpr"]), learned=True),
    "lightgcn": Method(_learned("lightgcn", lightgcn.fit_lightgcn, lightgcn.INPUT), learned=True),
    "sasrec": Method(_learned("sasrec", sasrec.fit_sasrec, sasrec.INPUT), learned=True),
}
METHODS = tuple(REGISTRY)
LEARNED = tuple(name for name, m in REGISTRY.items() if m.learned)


def resolve(name: str) -> Method:
    """The registered method, or an Ω variant name (omega-spectral-k128, ...); else a DataError."""
    if name in REGISTRY:
        return REGISTRY[name]
    variant = parse_omega(name)
    if variant is None:
        raise DataError(f"unknown baseline {name!r}; choose from {', '.join(METHODS)} or {SYNTAX}")
    return Method(_omega(variant))


def default_methods(id_scheme: str) -> list[str]:
    """The quick ones: every registered method but the learned ones (and the leak rule unless p5 ids)."""
    return [name for name, m in REGISTRY.items()
            if not m.learned and (name != "p5-leak" or id_scheme == "p5")]


def run_baselines(
    data_path: Path, task: Task, split: str = "test", id_scheme: str = "shuffled",
    limit_users: int | None = None, seed: int = 0, methods: Sequence[str] | None = None,
    max_minutes: float | None = None, test_users: int | None = None,
) -> list[dict[str, Any]]:
    """Every chosen baseline on one dataset/task/split, as metric records (JSON objects).

    Settings are tuned on validation users only (ItemKNN's decay, the learned ones' grid or stopping
    epoch); the neural ones are time-boxed at `max_minutes` each. `test_users`: evaluate on the fixed
    random sample of users that a bundle trained with that many test users is evaluated on.
    """
    chosen = list(methods or default_methods(id_scheme))
    resolved = {name: resolve(name) for name in chosen}
    data = load_data(data_path)
    if limit_users is not None:
        data = subset_users(data, limit_users)
    negatives = negatives_for(data)
    harness = Harness(data.n_users, data.n_items, *train_edges(leave_one_out(data.sequences)))
    case = split_cases(data.sequences, negatives, split,
                       sample_users(data.n_users, test_users, seed) if test_users else None)
    codec = IdCodec.build(data.user_ids, data.item_ids, scheme=id_scheme, seed=seed,
                          p5_user_numbers=data.p5_user_numbers, p5_item_numbers=data.p5_item_numbers)
    ctx = Context(data, negatives, harness, case, codec, task, seed, max_minutes)
    protocol = ProtocolRecord.of(Protocol(id_scheme=id_scheme, seed=seed))
    results: list[dict[str, Any]] = []
    for name, method in resolved.items():
        start = time.perf_counter()
        table, extra = method.build(ctx)
        figures = evaluate(TableRanker(table), case, task)
        record = MetricRecord.model_validate({
            **figures, **extra, "method": name, "preset": None, "dataset": data.name, "task": task,
            "split": split, "seed": seed, "device": describe("cpu"),
            "seconds": round(time.perf_counter() - start, 2), "protocol": protocol,
        })
        results.append(record.dump())
    return results

