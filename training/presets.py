"""Training presets (tiny / small / paper) and the paper's per-dataset α, σ, N (Table 9)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from model_store.config import ModelConfig, OmegaConfig, OmegaKind
from model_store.errors import DataError


class TaskHyper(BaseModel):
    """α (whole-word weight), σ (Ω scale) and N (rerank extra) of one dataset."""

    alpha_direct: float
    sigma_direct: float
    alpha_sequential: float
    sigma_sequential: float
    rerank_n: int


# Table 9 of the paper (the prose of A.1.1 swaps some of these; the table is used).
PAPER_TABLE9: dict[str, TaskHyper] = {
    "sports": TaskHyper(alpha_direct=5, sigma_direct=5, alpha_sequential=1, sigma_sequential=5, rerank_n=10),
    "beauty": TaskHyper(alpha_direct=9, sigma_direct=6, alpha_sequential=6, sigma_sequential=6, rerank_n=15),
    "toys": TaskHyper(alpha_direct=11, sigma_direct=5, alpha_sequential=9, sigma_sequential=5, rerank_n=10),
}
# Any other dataset: the middle of the table (documented in docs/TRAINING.md).
GENERIC_HYPER = TaskHyper(alpha_direct=9, sigma_direct=5, alpha_sequential=6, sigma_sequential=5, rerank_n=10)


def dataset_hyper(name: str) -> TaskHyper:
    return PAPER_TABLE9.get(name.lower(), GENERIC_HYPER)


class Preset(BaseModel):
    """Everything a training run needs besides the data."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    name: str
    model: ModelConfig
    omega_kind: OmegaKind | Literal["auto"] = "auto"  # auto: spectral (honest), random (p5 reproduction)
    omega_dim: int = 64  # spectral k; random Ω always has d_model features
    omega_include_e0: bool = True
    omega_layers: int = Field(4, ge=0, le=16, description="propagation depth L of Ω")
    alpha_direct: float | None = Field(None, description="α of direct prompts; None = Table 9")
    alpha_sequential: float | None = Field(None, description="α of sequential prompts; None = Table 9")
    sigma: float | None = Field(None, gt=0, description="σ of Ω; None = the dataset's direct σ (Table 9)")
    lr: float = 1e-3
    schedule: Literal["linear", "constant"] = Field(
        "linear", description="after warm-up: linear decay to 0 over the run, or constant (transformers')")
    beta2: float = Field(0.999, gt=0, lt=1, description="AdamW's second-moment decay")
    selection: Literal["mean", "per_task"] = Field(
        "mean", description="best weights by the mean of both tasks' validation NDCG@10, or one set per "
        "task (items kind: direct is served by its own weights)")
    weight_decay: float = 0.01
    warmup_steps: int = 100
    grad_clip: float = 1.0
    batch_size: int = 64
    epochs: int = 10
    train_negatives: int = Field(19, ge=1, description="negatives beside the positive in a direct prompt")
    max_history: int = 20
    eval_every: int = 500  # optimizer steps between validations
    eval_users: int = 500  # validation users (a fixed random subset) used for early stopping
    patience: int = 5
    test_users: int | None = None  # users scored for the bundle's test metrics (None = all)
    beam: int = 20
    max_minutes: float | None = None
    max_steps: int | None = None  # stop (resumably) after this many optimizer steps
    graph_prior: bool = Field(
        False, description="tune an ensemble of the T5 score with the Ω graph score on validation "
        "(beyond the paper; weight 0 = pure ELMRec stays in the grid; both are reported)",
    )
    graph_pool: int = Field(50, ge=0, description="sequential: graph-retrieved items added to the beam's")
    graph_cooc: bool = Field(
        False, description="sequential: mix the TRAIN item co-occurrence score (ItemKNN's, same decay) into "
        "the graph score, share λ tuned on validation with λ = 0 in the grid (beyond the paper)",
    )
    listwise_weight: float = Field(
        0.0, ge=0.0, description="direct: + weight x cross-entropy of the positive among the prompt's "
        "candidates by sequence likelihood (the score evaluation ranks by); 0 = the paper's loss only",
    )

    @model_validator(mode="after")
    def _per_task_needs_items(self) -> Preset:
        if self.selection == "per_task" and self.model.kind != "items":
            raise ValueError("selection=per_task needs model.kind=items (a digit-id bundle serves one model)")
        return self

    def omega(self, id_scheme: str, sigma: float, seed: int) -> OmegaConfig:
        kind: OmegaKind
        if self.omega_kind == "auto":
            kind = "random" if id_scheme == "p5" else "spectral"
        else:
            kind = self.omega_kind
        dim = self.model.d_model if kind == "random" else self.omega_dim
        return OmegaConfig(kind=kind, dim=dim, sigma=self.sigma or sigma, layers=self.omega_layers,
                           include_e0=self.omega_include_e0, seed=seed)


PRESETS: dict[str, Preset] = {
    "tiny": Preset(
        name="tiny",
        model=ModelConfig(d_model=32, d_ff=64, d_kv=8, num_layers=1, num_decoder_layers=1, num_heads=4,
                          dropout=0.0, max_whole_word=32),
        omega_dim=8,
        lr=3e-3,
        warmup_steps=5,
        batch_size=16,
        epochs=2,
        train_negatives=4,
        max_history=8,
        eval_every=20,
        eval_users=20,
        patience=3,
        beam=20,
    ),
    "tiny-items": Preset(
        name="tiny-items",
        model=ModelConfig(kind="items", d_model=32, d_ff=64, d_kv=8, num_layers=1, num_decoder_layers=1,
                          num_heads=4, dropout=0.0, n_prompts=1),
        omega_dim=8,
        lr=5e-3,
        schedule="constant",
        beta2=0.98,
        selection="per_task",
        warmup_steps=5,
        batch_size=16,
        epochs=3,
        max_history=8,
        eval_every=5,
        eval_users=20,
        patience=3,
        beam=20,
        graph_prior=True,
        graph_cooc=True,
    ),
    # The CPU default: ELMRec with one graph-aware whole-word token per item, trained on whole sequences
    # with a full softmax (../shared/notes/t5-learning.md), a best checkpoint per task.
    "small": Preset(
        name="small",
        model=ModelConfig(kind="items", d_model=128, d_ff=256, d_kv=32, num_layers=2, num_decoder_layers=2,
                          num_heads=4, dropout=0.1, n_prompts=3, alpha_sequential=1.0),
        alpha_sequential=1.0,
        omega_dim=64,
        lr=2e-3,
        schedule="constant",
        beta2=0.98,
        selection="per_task",
        warmup_steps=200,
        batch_size=128,
        epochs=25,  # about 17 minutes of training on 2 idle cores (40 s an epoch on Beauty)
        max_history=50,
        eval_every=175,  # about one epoch on Beauty
        eval_users=2000,
        patience=6,
        test_users=None,
        max_minutes=30,  # a safety cap (logged and recorded when it cuts training short)
        graph_prior=True,
        graph_cooc=True,
    ),
    "small-digits": Preset(
        name="small-digits",
        model=ModelConfig(d_model=128, d_ff=256, d_kv=32, num_layers=2, num_decoder_layers=2, num_heads=4,
                          dropout=0.0, max_whole_word=32),
        omega_dim=64,
        lr=2e-3,
        warmup_steps=200,
        batch_size=64,
        epochs=3,
        train_negatives=9,
        max_history=10,
        eval_every=1000,
        eval_users=300,
        patience=4,
        test_users=2000,
        max_steps=1500,  # deterministic: the same model on any machine (about 6.5 minutes on 2 idle cores)
        max_minutes=30,  # a safety cap for slow machines (a wall-clock stop makes the model load-dependent)
        graph_prior=True,
        graph_cooc=True,
    ),
    "paper": Preset(
        name="paper",
        model=ModelConfig(d_model=512, d_ff=2048, d_kv=64, num_layers=6, num_decoder_layers=6, num_heads=8,
                          dropout=0.1, max_whole_word=128),
        omega_dim=64,
        lr=1e-3,
        warmup_steps=500,
        batch_size=64,
        epochs=20,
        train_negatives=99,
        max_history=50,
        eval_every=2000,
        eval_users=2000,
        patience=5,
        graph_prior=True,
        graph_cooc=True,
    ),
}


def apply_overrides(preset: Preset, overrides: dict[str, Any]) -> Preset:
    """The preset with `field` / `model.field` values replaced and validated; bad ones raise DataError."""
    values = preset.model_dump()
    for key, value in overrides.items():
        section, _, name = key.rpartition(".")
        target = values.get(section) if section else values
        if not isinstance(target, dict) or name not in target:
            raise DataError(f"unknown preset setting {key!r}; settings: {', '.join(sorted(values))} "
                            f"and model.<field>")
        target[name] = value
    try:
        return Preset.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(map(str, first["loc"]))
        raise DataError(f"invalid preset override {where}: {first['msg']}") from exc
