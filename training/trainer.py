"""The training run: data -> split -> train-only Ω -> ELMRec T5 -> validation/early stopping -> bundle."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from model_store.bundle import (
    BundleConfig,
    BundleData,
    DatasetInfo,
    GraphPriorConfig,
    Protocol,
    new_model_version,
    omega_matrix,
    save_bundle,
)
from model_store.codec import SCHEMES, IdCodec
from model_store.config import ModelConfig, OmegaConfig
from model_store.engine import InferenceEngine
from model_store.errors import DataError
from model_store.item_graph import ItemGraph
from model_store.model import ElmrecModel
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
from training.id_order import graph_item_numbers
from training.negatives import negatives_for
from training.presets import PRESETS, Preset, apply_overrides, dataset_hyper
from training.samples import Review, SampleSource
from training.split import Split, leave_one_out, train_edges

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


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
    return Prepared(data, split, negatives, codec, omega, id_tokens, builder, model_config, omega_config,
                    hyper.rerank_n, popular)


def load_reviews(path: Path, prepared: Prepared, train: Sequence[Sequence[int]]) -> list[Review]:
    """jsonl of {user, item, text} with external ids; only TRAINING pairs are kept (no test leakage)."""
    tokenizer = load_tokenizer()
    train_pairs = {(u, i) for u, seq in enumerate(train) for i in seq}
    out: list[Review] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            user, item, text = str(row["user"]), str(row["item"]), str(row["text"])
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(
                f"{path}, line {number}: expected a JSON object with user, item, text ({exc})"
            ) from exc
        u, i = prepared.codec.find_user(user), prepared.codec.find_item(item)
        if u is None or i is None:
            raise DataError(f"{path}, line {number}: unknown {'user' if u is None else 'item'} id")
        if (u, i) in train_pairs:
            out.append(Review(u, i, list(tokenizer(text, add_special_tokens=False)["input_ids"])[:64]))
    return out


def _lr(preset: Preset, step: int, total: int) -> float:
    warm = min(1.0, (step + 1) / max(preset.warmup_steps, 1))
    decay = max(0.05, 1.0 - step / max(total, 1))
    return preset.lr * warm * decay


def validate(engine: InferenceEngine, prepared: Prepared, users: list[int], beam: int) -> dict[str, Any]:
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


def train(spec: RunSpec) -> Path:
    """Train and write a bundle; resumable from `spec.checkpoint_dir` with `spec.resume`."""
    if spec.preset not in PRESETS:
        raise DataError(f"unknown preset {spec.preset!r}; choose one of {', '.join(PRESETS)}")
    if spec.id_scheme not in SCHEMES:
        raise DataError(f"--id-scheme must be one of {', '.join(SCHEMES)}, got {spec.id_scheme!r}")
    preset = apply_overrides(PRESETS[spec.preset], spec.overrides)
    if spec.epochs is not None:
        preset = preset.model_copy(update={"epochs": spec.epochs})
    max_minutes = spec.max_minutes if spec.max_minutes is not None else preset.max_minutes
    rank, world = _distributed()
    device = pick_device(spec.device)
    if world > 1 and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    started = time.monotonic()
    prepared = prepare(spec, preset)
    split = prepared.split
    reviews = load_reviews(spec.reviews, prepared, split.train) if spec.reviews else []
    source = SampleSource(split.train, prepared.data.n_items, prepared.builder, prepared.id_tokens.targets,
                          preset.train_negatives, reviews)
    torch.manual_seed(spec.seed)
    model = ElmrecModel(prepared.model_config, omega_matrix(prepared.omega),
                        prepared.id_tokens.output_tokens).to(device)
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=preset.lr, weight_decay=preset.weight_decay)
    best = copy.deepcopy(model)
    valid_users = sample_users(prepared.data.n_users, preset.eval_users, spec.seed)
    steps_per_epoch = len(source.epoch_plan(spec.seed, 0, preset.batch_size))
    total_steps = steps_per_epoch * preset.epochs
    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "best_score": -1.0, "best_step": 0,
                             "bad_evals": 0, "curve": [], "stopped": "", "train_seconds": 0.0}
    if spec.resume and recover_checkpoint(spec.checkpoint_dir):
        state = load_checkpoint(spec.checkpoint_dir, model, optimizer, best)
        if state["stopped"] in ("time", "max-steps"):
            state["stopped"] = ""  # an interrupted run goes on; a finished or early-stopped one does not
        logger.info("resumed from %s at step %d", spec.checkpoint_dir, state["step"])
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda"
                else torch.autocast("cpu", enabled=False))
    deadline = started + 60 * max_minutes if max_minutes else math.inf
    seconds_before = float(state["train_seconds"])
    loop_start = time.monotonic()
    losses: list[float] = []
    bar = tqdm(total=total_steps, initial=state["step"], desc=f"train {spec.preset}",
               disable=rank != 0, mininterval=5)

    def checkpoint_and_validate() -> bool:
        """Validate, track the best model, checkpoint; True when early stopping triggers."""
        engine = InferenceEngine(model, prepared.builder, prepared.id_tokens, device, seed=spec.seed)
        result = validate(engine, prepared, valid_users, preset.beam)
        model.train()
        state["curve"].append({
            "step": state["step"], "epoch": state["epoch"],
            "train_loss": float(np.mean(losses)) if losses else float("nan"),
            "valid_direct_ndcg@10": result["direct"]["ndcg@10"],
            "valid_sequential_ndcg@10": result["sequential"]["ndcg@10"],
        })
        losses.clear()
        if result["score"] > state["best_score"]:
            state.update(best_score=result["score"], best_step=state["step"], bad_evals=0,
                         best_valid=result)
            best.load_state_dict(model.state_dict())
        else:
            state["bad_evals"] += 1
        state["train_seconds"] = seconds_before + time.monotonic() - loop_start
        save_checkpoint(spec.checkpoint_dir, model, optimizer, state, best)
        logger.info("step %d valid direct %.4f sequential %.4f", state["step"],
                    result["direct"]["ndcg@10"], result["sequential"]["ndcg@10"])
        return bool(state["bad_evals"] >= preset.patience)

    model.train()
    while state["epoch"] < preset.epochs and not state["stopped"]:
        plan = source.epoch_plan(spec.seed, state["epoch"], preset.batch_size)
        while state["batch"] < len(plan):
            if time.monotonic() > deadline:
                state["stopped"] = "time"
                break
            if preset.max_steps is not None and state["step"] >= preset.max_steps:
                state["stopped"] = "max-steps"
                break
            task, index = plan[state["batch"]]
            state["batch"] += 1
            if world > 1 and (state["batch"] - 1) % world != rank:
                continue
            rng = np.random.default_rng([spec.seed, state["epoch"], state["batch"]])
            batch = source.batch(task, index, rng)
            torch.manual_seed(spec.seed * 1_000_003 + state["step"])
            for group in optimizer.param_groups:
                group["lr"] = _lr(preset, state["step"], total_steps)
            enc = batch.encoder.to(device)
            cands = batch.candidates
            extra = None
            if cands is not None and preset.listwise_weight > 0:
                extra = (cands.decoder_input.to(device), cands.labels.to(device), cands.positive.to(device))
            with autocast:
                loss = net(task, enc.input_ids, enc.attention_mask, enc.ww, batch.labels.to(device), extra,
                           preset.listwise_weight)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), preset.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
            state["step"] += 1
            bar.update(1)
            if state["step"] % preset.eval_every == 0 and rank == 0 and checkpoint_and_validate():
                state["stopped"] = "early-stopping"
                break
        else:
            state["epoch"] += 1
            state["batch"] = 0
    bar.close()
    if not state["stopped"]:
        state["stopped"] = "epochs"
    if rank != 0:
        return spec.out
    if not state["curve"] or state["curve"][-1]["step"] != state["step"]:
        checkpoint_and_validate()
    return finish(spec, preset, prepared, best, state, device, started, len(reviews))


COOC_MIXES = (0.0, 0.5, 0.8, 1.0)  # shares of the co-occurrence score tried in the sequential graph score


def cooc_graph(prepared: Prepared) -> tuple[ItemGraph, dict[str, float]]:
    """The TRAIN item co-occurrence graph and its recency decay per task, chosen on validation exactly
    as the ItemKNN baseline chooses its own (same similarity, same validation users)."""
    users, items = train_edges(prepared.split)
    harness = Harness(prepared.data.n_users, prepared.data.n_items, users, items)
    decays = {task: tune_decay(harness, prepared.data.sequences, prepared.negatives, task)
              for task in ("direct", "sequential")}
    return ItemGraph(harness.item_similarity().astype(np.float32).tocsr()), decays


def finish(spec: RunSpec, preset: Preset, prepared: Prepared, best: ElmrecModel, state: dict[str, Any],
           device: torch.device, started: float, explanation_examples: int = 0) -> Path:
    """Tune the graph-score ensemble on validation, test metrics with the best weights, then the bundle."""
    item_graph, decays = (cooc_graph(prepared) if preset.graph_prior and preset.graph_cooc
                          else (None, {"direct": 1.0, "sequential": 1.0}))
    prior_config = GraphPriorConfig(cooc_decay=decays["sequential"], direct_cooc_decay=decays["direct"])
    engine = InferenceEngine(best, prepared.builder, prepared.id_tokens, device, seed=spec.seed,
                             prior=prior_config.prior(prepared.omega, item_graph))
    prior_report: dict[str, Any] = {}
    if preset.graph_prior:
        valid_users = sample_users(prepared.data.n_users, preset.eval_users, spec.seed)
        valid = split_cases(prepared.data.sequences, prepared.negatives, "valid", valid_users)
        chosen, prior_report = tune_graph_prior(engine, valid, prepared.rerank_n, preset.beam,
                                                preset.graph_pool,
                                                mixes=COOC_MIXES if item_graph is not None else (0.0,))
        prior_config = GraphPriorConfig.model_validate({**prior_config.model_dump(), **chosen})
        engine.prior = prior_config.prior(prepared.omega, item_graph)
        logger.info("graph prior chosen on validation: %s", prior_config.model_dump())
    if not prior_config.uses_item_graph:
        item_graph = None  # not used by the served ranking: not written to the bundle
    test_users = sample_users(prepared.data.n_users, preset.test_users, spec.seed)
    case = split_cases(prepared.data.sequences, prepared.negatives, "test", test_users)
    protocol = Protocol(id_scheme=spec.id_scheme, graph="train", split="leave-one-out", seed=spec.seed)
    common = {"dataset": prepared.data.name, "split": "test", "preset": preset.name, "method": "elmrec",
              "seed": spec.seed, "device": device_name(device),
              "protocol": {**protocol.model_dump(), "label": protocol.label,
                           "omega": prepared.omega_config.kind}}
    direct = evaluate_direct(engine, case, weights=(0.0,))
    direct_pure = direct.pop("by_weight")["0.0"]
    sequential = evaluate_sequential(engine, case, extra=prepared.rerank_n, beam=preset.beam)
    served = prior_config.model_dump()
    metrics: dict[str, Any] = {
        "direct": {**common, "task": "direct", **direct, "method": method_name(served, "direct", False)},
        "sequential": {**common, "task": "sequential", **sequential,
                       "method": method_name(served, "sequential", False)},
        "graph_prior": {"chosen": served, "validation": prior_report},
    }
    for task in ("direct", "sequential"):
        if metrics[task]["method"] != "elmrec":  # the T5 alone, beside the served ensemble
            pure = ({**direct_pure, "users": direct["users"]} if task == "direct" else
                    evaluate_sequential(engine, case, extra=prepared.rerank_n, beam=preset.beam, pure=True))
            metrics[f"{task}_elmrec"] = {**common, "task": task, **pure, "method": "elmrec"}
    minutes = round((time.monotonic() - started) / 60, 2)
    metrics.update({
        "training": {k: state[k] for k in ("step", "epoch", "best_step", "best_score", "stopped")}
        | {"minutes": minutes, "explanation_examples": explanation_examples,
           "train_minutes": round(state["train_seconds"] / 60, 2),
           "best_valid": state.get("best_valid"), "curve": state["curve"]},
    })
    data = prepared.data
    config = BundleConfig(
        model_version=new_model_version(best.state_dict()),
        created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        preset=preset.name,
        preset_settings=preset.model_dump(mode="json", exclude={"model"}),
        model=prepared.model_config,
        omega=prepared.omega_config,
        dataset=DatasetInfo(name=data.name, source=str(spec.data), n_users=data.n_users,
                            n_items=data.n_items, n_interactions=data.n_interactions),
        protocol=protocol,
        max_history=preset.max_history,
        rerank_n=prepared.rerank_n,
        beam=preset.beam,
        popular_items=prepared.popular,
        graph_prior=prior_config,
    )
    curve = _plot_curve(state["curve"], spec.checkpoint_dir / "curve.png")
    bundle_data = BundleData(data.sequences, prepared.negatives)
    return save_bundle(spec.out, config, best.cpu(), prepared.omega, prepared.codec, bundle_data, metrics,
                       curve, item_graph=item_graph)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores)"
