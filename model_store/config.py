"""Typed configuration of an ELMRec model and its Ω table, as written to a bundle's config.json."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TASKS: tuple[str, ...] = ("direct", "sequential", "explanation")
OmegaKind = Literal["random", "spectral"]


class OmegaConfig(BaseModel):
    """How the graph-aware Ω table was built (always from training interactions only)."""

    model_config = ConfigDict(extra="forbid")

    kind: OmegaKind = "spectral"
    dim: int = Field(64, ge=1, description="random: feature width; spectral: number of eigenvectors k")
    sigma: float = Field(6.0, gt=0, description="std of E0 (random) / of the rescaled table (spectral)")
    layers: int = Field(4, ge=0, le=16, description="propagation depth L")
    include_e0: bool = Field(True, description="average layers 0..L (True) or 1..L (False)")
    solver: Literal["svds", "randomized"] = Field(
        "svds", description="spectral: exact svds, or randomized SVD for graphs too large for it")
    seed: int = 0


class ModelConfig(BaseModel):
    """Shape of the T5 and of the ELMRec additions (prompt vectors, whole-word embeddings)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["digits", "items"] = Field(
        "digits", description="digits: the paper's formulation (item ids as digit tokens, prompts, beam "
        "search); items: one graph-aware whole-word token per item, sequence-level training, full softmax "
        "(model_store/item_model.py)")
    init_std: float = Field(0.05, gt=0, description="items: std of the item vectors at initialisation")
    d_model: int = Field(512, ge=8)
    d_ff: int = Field(2048, ge=8)
    d_kv: int = Field(64, ge=4)
    num_layers: int = Field(6, ge=1)
    num_decoder_layers: int = Field(6, ge=1)
    num_heads: int = Field(8, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    vocab_size: int = 32100
    n_prompts: int = Field(3, ge=0, description="continuous prompt vectors per task")
    max_whole_word: int = Field(128, ge=2, description="incremental whole-word ids #0..#max-1")
    omega_dim: int = Field(64, ge=1, description="width of the Ω rows fed to the model")
    alpha_direct: float = 9.0
    alpha_sequential: float = 6.0
    alpha_explanation: float = 1.0
    balanced_init: bool = Field(
        True, description="initialise whole-word paths so α·whole-word starts at the token embeddings' scale"
    )
    use_omega: bool = Field(
        True, description="ablation: False = direct/explanation ids get the general whole-word vector"
    )
    incremental_ids: bool = Field(
        True, description="ablation: False = sequential ids get the general whole-word vector"
    )
    restrict_vocab: bool = Field(
        True, description="recommendation outputs scored over the tokens of item ids (+ EOS) only"
    )

    def alpha(self, task: str) -> float:
        return {"direct": self.alpha_direct, "sequential": self.alpha_sequential}.get(
            task, self.alpha_explanation
        )
