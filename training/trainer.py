"""The training run: data -> split -> train-only Ω -> ELMRec T5 -> validation/early stopping -> bundle."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from model_store.bundle import (
    BundleConfig,
    BundleData,
    DatasetInfo,
    GraphPriorConfig,
    Protocol,
    make_engine,
    new_model,
    new_model_version,
    save_bundle,
)
from model_store.codec import SCHEMES, IdCodec
from model_store.config import ModelConfig, OmegaConfig
from model_store.device import describe, resolve_device
from model_store.engine import InferenceEngine
from model_store.errors import DataError
from model_store.explain import MAX_EXPLANATION_TOKENS
from model_store.item_graph import ItemGraph
from model_store.omega import Omega, build_omega
from model_store.prompts import IdTokens, PromptBuilder, load_tokenizer, tokenize_ids
from training.baselines.harness import Harness
from training.baselines.simple import tune_decay
from training.checkpoint import load_checkpoint, recover_checkpoint, save_checkpoint
from training.data import InteractionData, load_data, subset_users
from training.evaluate import (
    evaluate_direct,
    evaluate_sequential,
    method_name,
    sample_users,
    split_cases,
    tune_graph_prior,
)
from training.explain_eval import read_reviews
from training.id_order import graph_item_numbers
from training.negatives import negatives_for
from training.objectives import Objective, PlanEntry, PromptObjective, SequenceObjective
from training.presets import PRESETS, Preset, apply_overrides, dataset_hyper
from training.records import MetricRecord, ProtocolRecord
from training.samples import Review, SampleSource
from training.split import Split, leave_one_out, train_edges
from training.train_state import TrainState

logger = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """What `python -m training train` was asked to do."""

    data: Path
    preset: str
    out: Path
    limit_users: int | None = None
    id_scheme: str = "shuffled"
    max_minutes: float | None = None
    resume: bool = False
    seed: int = 0
    device: str = "auto"
    omega_kind: str | None = None
    reviews: Path | None = None
    epochs: int | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint_dir(self) -> Path:
        return self.out.with_name(self.out.name + ".ckpt")


@dataclass
class Prepared:
    """Everything derived from the data before training starts."""

    data: InteractionData
    split: Split
    negatives: list[list[int]]
    codec: IdCodec
    omega: Omega
    id_tokens: IdTokens
    builder: PromptBuilder
    model_config: ModelConfig
    omega_config: OmegaConfig
    rerank_n: int
    popular: list[int]


def prepare(spec: RunSpec, preset: Preset) -> Prepared:
    data = load_data(spec.data, **spec.data_options)
    if spec.limit_users is not None:
        if spec.limit_users < 1:
            raise DataError(f"--limit-users must be >= 1, got {spec.limit_users}")
        data = subset_users(data, spec.limit_users)
    negatives = negatives_for(data)
    split = leave_one_out(data.sequences)
    users, items = train_edges(split)
    hyper = dataset_hyper(data.name)
    omega_config = preset.omega(spec.id_scheme, hyper.sigma_direct, spec.seed)
    if spec.omega_kind:
        omega_config = omega_config.model_copy(update={
            "kind": spec.omega_kind,
            "dim": preset.model.d_model if spec.omega_kind == "random" else preset.omega_dim,
        })
    if omega_config.kind == "spectral":
        omega_config = omega_config.model_copy(
            update={"dim": min(omega_config.dim, data.n_users, data.n_items)})
    omega = build_omega(omega_config, data.n_users, data.n_items, users, items)
    tokenizer = load_tokenizer()
    graph_numbers = (graph_item_numbers(omega.items, lambda texts: tokenize_ids(tokenizer, texts))
                     if spec.id_scheme == "graph" else None)
    codec = IdCodec.build(data.user_ids, data.item_ids, scheme=spec.id_scheme, seed=spec.seed,
                          p5_user_numbers=data.p5_user_numbers, p5_item_numbers=data.p5_item_numbers,
                          graph_item_numbers=graph_numbers)
    model_config = preset.model.model_copy(update={
        "omega_dim": omega_config.dim,
        "alpha_direct": hyper.alpha_direct if preset.alpha_direct is None else preset.alpha_direct,
        "alpha_sequential": (hyper.alpha_sequential if preset.alpha_sequential is None
                             else preset.alpha_sequential),
    })
    id_tokens = IdTokens(tokenizer, codec.user_numbers.tolist(), codec.item_numbers.tolist())
    builder = PromptBuilder(id_tokens, data.n_users, preset.max_history, model_config.max_whole_word)
    counts = np.bincount(items, minlength=data.n_items)
    popular = [int(i) for i in np.argsort(-counts, kind="stable")[:1000]]
    # items kind: N covers the longest history, so history filtering of the exact full ranking is exact
    rerank_n = (hyper.rerank_n if model_config.kind == "digits"
                else max(len(s) for s in data.sequences))
    return Prepared(data, split, negatives, codec, omega, id_tokens, builder, model_config, omega_config,
                    rerank_n, popular)


def load_reviews(path: Path, prepared: Prepared, train: Sequence[Sequence[int]]) -> list[Review]:
    """jsonl of {user, item, text} with external ids; only TRAINING pairs are kept (no test leakage)."""
    tokenizer = load_tokenizer()
    train_pairs = {(u, i) for u, seq in enumerate(train) for i in seq}
    out: list[Review] = []
    for row in read_reviews(path):
        u, i = prepared.codec.find_user(row.user), prepared.codec.find_item(row.item)
        if u is None or i is None:
            raise DataError(f"{path}, line {row.line}: unknown {'user' if u is None else 'item'} id")
        if (u, i) in train_pairs:
            tokens = tokenizer(row.text, add_special_tokens=False)["input_ids"]
            out.append(Review(u, i, list(tokens)[:MAX_EXPLANATION_TOKENS]))
    return out


def schedule(kind: str, optimizer: torch.optim.Optimizer, warmup: int, total: int) -> LambdaLR:
    """The learning-rate schedule (transformers'), stepped once per global optimizer step."""
    if kind == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    return get_linear_schedule_with_warmup(optimizer, warmup, total)


def validate(engine: InferenceEngine, prepared: Prepared, users: list[int], beam: int) -> dict[str, Any]:
    """Validation NDCG@10 of both tasks, and the selection scores (`mean` of both, and each task)."""
    case = split_cases(prepared.data.sequences, prepared.negatives, "valid", users)
    direct = evaluate_direct(engine, case)
    sequential = evaluate_sequential(engine, case, extra=prepared.rerank_n, beam=beam)
    return {"direct": direct, "sequential": sequential,
            "score": (direct["ndcg@10"] + sequential["ndcg@10"]) / 2}


def _plot_curve(curve: list[dict[str, Any]], path: Path) -> Path | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not curve:
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    steps = [c["step"] for c in curve]
    ax[0].plot(steps, [c["train_loss"] for c in curve])
    ax[0].set(xlabel="step", ylabel="train loss")
    ax[1].plot(steps, [c["valid_direct_ndcg@10"] for c in curve], label="direct")
    ax[1].plot(steps, [c["valid_sequential_ndcg@10"] for c in curve], label="sequential")
    ax[1].set(xlabel="step", ylabel="valid NDCG@10")
    ax[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        torch.distributed.init_process_group(backend)
    return rank, world


def make_objective(preset: Preset, prepared: Prepared, reviews: Sequence[Review]) -> Objective:
    """The training objective of the preset's model kind."""
    train_seqs = prepared.split.train
    if prepared.model_config.kind == "items":
        if reviews:
            raise DataError("--reviews: the explanation task needs the digit-id model (model.kind=digits)")
        return SequenceObjective(train_seqs, preset.max_history)
    source = SampleSource(train_seqs, prepared.data.n_items, prepared.builder, prepared.id_tokens.targets,
                          preset.train_negatives, reviews)
    return PromptObjective(source, preset.listwise_weight)


class Trainer:
    """One training run: steps, validation with per-key best weights, checkpoints; DDP-aware.

    Every decision that ends or shapes the run (early stopping, time box, max steps, epochs) is taken on
    rank 0 and broadcast, so all ranks stop at the same global step; each rank trains on its own share of
    every `world` consecutive batches of the plan (the plan is cut to a multiple of `world`).
    """

    def __init__(self, spec: RunSpec, preset: Preset, prepared: Prepared, reviews: Sequence[Review]) -> None:
        self.spec, self.preset, self.prepared = spec, preset, prepared
        self.rank, self.world = _distributed()
        device = resolve_device(spec.device)
        if self.world > 1 and device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        self.device = device
        self.objective = make_objective(preset, prepared, reviews)
        torch.manual_seed(spec.seed)
        self.model = new_model(prepared.model_config, prepared.omega, prepared.codec,
                               tokens=prepared.id_tokens).to(device)
        self.net: torch.nn.Module = self.model
        if self.world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=prepared.model_config.kind == "digits")
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=preset.lr,
                                           weight_decay=preset.weight_decay, betas=(0.9, preset.beta2))
        self.state = TrainState.start(preset.selection, preset.patience)
        self.best = {key: copy.deepcopy(self.model) for key in self.state.best}
        self.valid_users = sample_users(prepared.data.n_users, preset.eval_users, spec.seed)
        self.steps_per_epoch = len(self._plan(0))
        total = self.steps_per_epoch * preset.epochs  # not cut by max_steps: resumed = straight
        self.scheduler = schedule(preset.schedule, self.optimizer, preset.warmup_steps, max(total, 1))
        self.losses: list[float] = []

    def _plan(self, epoch: int) -> list[PlanEntry]:
        plan = self.objective.epoch_plan(self.spec.seed, epoch, self.preset.batch_size)
        return plan[: len(plan) - len(plan) % self.world] if self.world > 1 else plan

    def _agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank."""
        if self.world == 1:
            return flag
        value = torch.tensor([1 if flag else 0], dtype=torch.long,
                             device=self.device if self.device.type == "cuda" else "cpu")
        torch.distributed.broadcast(value, src=0)
        return bool(value.item())

    def resume(self) -> None:
        """Continue from the checkpoint folder when asked and one exists."""
        if not (self.spec.resume and recover_checkpoint(self.spec.checkpoint_dir)):
            return
        raw = load_checkpoint(self.spec.checkpoint_dir, self.model, self.optimizer, self.best)
        self.state = TrainState.from_json(raw, self.preset.patience)
        if self.state.stopped in ("time", "max-steps"):
            self.state.stopped = ""  # an interrupted run goes on; a finished or early-stopped one does not
        with warnings.catch_warnings():  # the schedule replayed to the global step
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(self.state.step):
                self.scheduler.step()
        logger.info("resumed from %s at step %d", self.spec.checkpoint_dir, self.state.step)

    def train_step(self, entry: PlanEntry) -> float:
        """One optimizer step on one batch (each rank its own batch; DDP averages the gradients)."""
        state = self.state
        rng = np.random.default_rng([self.spec.seed, state.epoch, state.batch])
        torch.manual_seed(self.spec.seed * 1_000_003 + state.step * self.world + self.rank)
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                    else torch.autocast("cpu", enabled=False))
        with autocast:
            loss = self.objective.loss(self.net, entry, rng, self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.preset.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def engine(self, model: torch.nn.Module) -> InferenceEngine:
        """The engine validation ranks with: the bundle's assembly, graph prior off."""
        return assemble(self.spec, self.preset, self.prepared, Weights(model), GraphPriorConfig(), None,
                        self.device)

    def validate(self) -> dict[str, Any]:
        """Validate the current weights (rank 0), update the best weights per selection key."""
        result = validate(self.engine(self.model), self.prepared, self.valid_users, self.preset.beam)
        self.model.train()
        state = self.state
        state.curve.append({
            "step": state.step, "epoch": state.epoch,
            "train_loss": float(np.mean(self.losses)) if self.losses else float("nan"),
            "valid_direct_ndcg@10": result["direct"]["ndcg@10"],
            "valid_sequential_ndcg@10": result["sequential"]["ndcg@10"],
        })
        self.losses.clear()
        scores = {"mean": result["score"], "direct": result["direct"]["ndcg@10"],
                  "sequential": result["sequential"]["ndcg@10"]}
        for key in state.record(scores, result):
            self.best[key].load_state_dict(self.model.state_dict())
        logger.info("step %d valid direct %.4f sequential %.4f", state.step, scores["direct"],
                    scores["sequential"])
        return result

    def checkpoint(self, seconds: float) -> None:
        self.state.train_seconds = seconds
        save_checkpoint(self.spec.checkpoint_dir, self.model, self.optimizer, self.state.to_json(), self.best)

    def fit(self, deadline: float) -> TrainState:
        """Train until epochs, max steps, the time box or early stopping; validate every `eval_every`."""
        state, preset = self.state, self.preset
        seconds_before, loop_start = state.train_seconds, time.monotonic()
        total = self.steps_per_epoch * preset.epochs
        bar = tqdm(total=total, initial=state.step, desc=f"train {preset.name}", disable=self.rank != 0,
                   mininterval=5)
        self.model.train()
        while state.epoch < preset.epochs and not state.stopped:
            plan = self._plan(state.epoch)
            while state.batch < len(plan):
                stop = ""
                if preset.max_steps is not None and state.step >= preset.max_steps:
                    stop = "max-steps"
                elif self._agree(time.monotonic() > deadline):
                    stop = "time"
                if stop:
                    state.stopped = stop
                    break
                entry = plan[state.batch + self.rank]
                state.batch += self.world
                self.losses.append(self.train_step(entry))
                state.step += 1
                bar.update(1)
                if state.step % preset.eval_every == 0:
                    early = False
                    if self.rank == 0:
                        self.validate()
                        self.checkpoint(seconds_before + time.monotonic() - loop_start)
                        early = state.should_stop
                    if self._agree(early):
                        state.stopped = "early-stopping"
                        break
            else:
                state.epoch += 1
                state.batch = 0
        bar.close()
        if not state.stopped:
            state.stopped = "epochs"
        if self.rank == 0 and (not state.curve or state.curve[-1]["step"] != state.step):
            self.validate()
        state.train_seconds = seconds_before + time.monotonic() - loop_start
        if self.rank == 0:
            self.checkpoint(state.train_seconds)
        return state


def train(spec: RunSpec) -> Path | None:
    """Train and write a bundle (rank 0; other ranks return None); resumable with `spec.resume`."""
    if spec.preset not in PRESETS:
        raise DataError(f"unknown preset {spec.preset!r}; choose one of {', '.join(PRESETS)}")
    if spec.id_scheme not in SCHEMES:
        raise DataError(f"--id-scheme must be one of {', '.join(SCHEMES)}, got {spec.id_scheme!r}")
    preset = apply_overrides(PRESETS[spec.preset], spec.overrides)
    if spec.epochs is not None:
        preset = preset.model_copy(update={"epochs": spec.epochs})
    max_minutes = spec.max_minutes if spec.max_minutes is not None else preset.max_minutes
    started = time.monotonic()
    prepared = prepare(spec, preset)
    reviews = load_reviews(spec.reviews, prepared, prepared.split.train) if spec.reviews else []
    trainer = Trainer(spec, preset, prepared, reviews)
    trainer.resume()
    state = trainer.fit(started + 60 * max_minutes if max_minutes else math.inf)
    if state.stopped == "time" and preset.max_steps is not None and state.step < preset.max_steps:
        logger.warning("the %.0f-minute cap stopped training at step %d, before max_steps=%d: this model "
                       "differs from the preset's reference model (recorded in metrics.json)",
                       max_minutes or 0, state.step, preset.max_steps)
    rank, device, best = trainer.rank, trainer.device, trainer.best
    del trainer  # the DDP wrapper goes before its process group, on every rank alike
    _finish_distributed()
    if rank != 0:
        return None
    return finish(spec, preset, prepared, best, state, device, started, len(reviews))


def _finish_distributed() -> None:
    """All ranks meet once more after training, then leave the process group (only rank 0 goes on)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()


COOC_MIXES = (0.0, 0.5, 0.8, 1.0)  # shares of the co-occurrence score tried in the sequential graph score


def cooc_graph(prepared: Prepared) -> tuple[ItemGraph, dict[str, float]]:
    """The TRAIN item co-occurrence graph and its recency decay per task, chosen on validation exactly
    as the ItemKNN baseline chooses its own (same similarity, same validation users)."""
    users, items = train_edges(prepared.split)
    harness = Harness(prepared.data.n_users, prepared.data.n_items, users, items)
    decays = {task: tune_decay(harness, prepared.data.sequences, prepared.negatives, task)
              for task in ("direct", "sequential")}
    return ItemGraph(harness.item_similarity().astype(np.float32).tocsr()), decays


def bundle_config(spec: RunSpec, preset: Preset, prepared: Prepared, prior: GraphPriorConfig,
                  model_version: str) -> BundleConfig:
    """config.json of the run's bundle (also the config the trainer's own engines are assembled from)."""
    data = prepared.data
    return BundleConfig(
        model_version=model_version,
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        preset=preset.name,
        preset_settings=preset.model_dump(mode="json", exclude={"model"}),
        model=prepared.model_config,
        omega=prepared.omega_config,
        dataset=DatasetInfo(name=data.name, source=str(spec.data), n_users=data.n_users,
                            n_items=data.n_items, n_interactions=data.n_interactions),
        protocol=Protocol(id_scheme=spec.id_scheme, graph="train", split="leave-one-out", seed=spec.seed),
        max_history=preset.max_history,
        rerank_n=prepared.rerank_n,
        beam=preset.beam,
        popular_items=prepared.popular,
        graph_prior=prior,
    )


@dataclass
class Weights:
    """The weights a bundle serves: `model` (sequential, or both tasks) and optionally direct's own."""

    model: torch.nn.Module
    direct: torch.nn.Module | None = None

    @classmethod
    def chosen(cls, best: Mapping[str, torch.nn.Module]) -> Weights:
        if "mean" in best:
            return cls(best["mean"])
        return cls(best["sequential"], best["direct"])


def tune_prior(spec: RunSpec, preset: Preset, prepared: Prepared, weights: Weights,
               device: torch.device) -> tuple[GraphPriorConfig, ItemGraph | None, dict[str, Any]]:
    """The graph-score ensemble's settings chosen on validation (all zero when the preset has no prior)."""
    if not preset.graph_prior:
        return GraphPriorConfig(), None, {}
    item_graph, decays = (cooc_graph(prepared) if preset.graph_cooc
                          else (None, {"direct": 1.0, "sequential": 1.0}))
    prior = GraphPriorConfig(cooc_decay=decays["sequential"], direct_cooc_decay=decays["direct"])
    engine = assemble(spec, preset, prepared, weights, prior, item_graph, device)
    valid_users = sample_users(prepared.data.n_users, preset.eval_users, spec.seed)
    valid = split_cases(prepared.data.sequences, prepared.negatives, "valid", valid_users)
    chosen, report = tune_graph_prior(engine, valid, prepared.rerank_n, preset.beam, preset.graph_pool,
                                      mixes=COOC_MIXES if item_graph is not None else (0.0,))
    prior = GraphPriorConfig.model_validate({**prior.model_dump(), **chosen})
    logger.info("graph prior chosen on validation: %s", prior.model_dump())
    return prior, item_graph if prior.uses_item_graph else None, report


def assemble(spec: RunSpec, preset: Preset, prepared: Prepared, weights: Weights, prior: GraphPriorConfig,
             item_graph: ItemGraph | None, device: torch.device) -> InferenceEngine:
    """The engine the bundle will serve, built by the service's own assembly function."""
    config = bundle_config(spec, preset, prepared, prior, "")
    return make_engine(config, weights.model, prepared.omega, prepared.codec, item_graph,  # type: ignore[arg-type]
                       device, direct_model=weights.direct, tokens=prepared.id_tokens)  # type: ignore[arg-type]


def test_metrics(spec: RunSpec, preset: Preset, prepared: Prepared, engine: InferenceEngine,
                 prior: GraphPriorConfig, device: torch.device) -> dict[str, Any]:
    """Test figures (one MetricRecord each) of the served ranking, and of the model alone beside it when
    the prior is on."""
    test_users = sample_users(prepared.data.n_users, preset.test_users, spec.seed)
    case = split_cases(prepared.data.sequences, prepared.negatives, "test", test_users)
    protocol = ProtocolRecord.of(
        Protocol(id_scheme=spec.id_scheme, graph="train", split="leave-one-out", seed=spec.seed),
        prepared.omega_config.kind)

    def record(task: str, figures: dict[str, Any], method: str) -> dict[str, Any]:
        return MetricRecord.model_validate({
            **figures, "method": method, "preset": preset.name, "dataset": prepared.data.name, "task": task,
            "split": "test", "seed": spec.seed, "device": describe(device), "protocol": protocol,
            "model_kind": prepared.model_config.kind}).dump()

    direct = evaluate_direct(engine, case, weights=(0.0,))
    direct_pure = direct.pop("by_weight")["0.0"]
    sequential = evaluate_sequential(engine, case, extra=prepared.rerank_n, beam=preset.beam)
    served = prior.model_dump()
    metrics = {"direct": record("direct", direct, method_name(served, "direct", False)),
               "sequential": record("sequential", sequential, method_name(served, "sequential", False))}
    for task in ("direct", "sequential"):
        if metrics[task]["method"] != "elmrec":  # the model alone, beside the served ensemble
            pure = ({**direct_pure, "users": direct["users"]} if task == "direct" else
                    evaluate_sequential(engine, case, extra=prepared.rerank_n, beam=preset.beam, pure=True))
            metrics[f"{task}_elmrec"] = record(task, pure, "elmrec")
    return metrics


def finish(spec: RunSpec, preset: Preset, prepared: Prepared, best: Mapping[str, torch.nn.Module],
           state: TrainState, device: torch.device, started: float, explanation_examples: int = 0) -> Path:
    """Tune the graph-score ensemble on validation, test metrics with the best weights, then the bundle."""
    weights = Weights.chosen(best)
    prior, item_graph, prior_report = tune_prior(spec, preset, prepared, weights, device)
    engine = assemble(spec, preset, prepared, weights, prior, item_graph, device)
    metrics = test_metrics(spec, preset, prepared, engine, prior, device)
    metrics["graph_prior"] = {"chosen": prior.model_dump(), "validation": prior_report}
    capped = state.stopped == "time" and preset.max_steps is not None and state.step < preset.max_steps
    metrics["training"] = {
        "step": state.step, "epoch": state.epoch, "stopped": state.stopped,
        "stopped_by_cap_before_max_steps": capped,
        "best_step": {key: b.step for key, b in state.best.items()},
        "best_score": {key: b.score for key, b in state.best.items()},
        "best_valid": {key: b.valid for key, b in state.best.items()},
        "minutes": round((time.monotonic() - started) / 60, 2),
        "train_minutes": round(state.train_seconds / 60, 2),
        "peak_rss_mb": peak_rss_mb(),
        "explanation_examples": explanation_examples, "curve": state.curve,
    }
    config = bundle_config(spec, preset, prepared, prior, new_model_version(weights.model.state_dict()))
    curve = _plot_curve(state.curve, spec.checkpoint_dir / "curve.png")
    bundle_data = BundleData(prepared.data.sequences, prepared.negatives)
    return save_bundle(spec.out, config, weights.model.cpu(), prepared.omega, prepared.codec,  # type: ignore[arg-type]
                       bundle_data, metrics, curve, item_graph=item_graph,
                       direct_model=weights.direct.cpu() if weights.direct is not None else None)  # type: ignore[arg-type]


def peak_rss_mb() -> float:
    """Peak resident memory of this process (MB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
