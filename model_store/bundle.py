"""The bundle: a folder that training writes and the service reads (config, weights, Ω, ids, data, metrics).

Layout (no pickle anywhere):
    config.json          BundleConfig: preset, model and Ω settings, dataset stats, protocol
    model.safetensors    model weights (the frozen Ω table is not among them)
    model_direct.safetensors  items kind: the weights selected on direct validation (optional)
    omega.safetensors    the Ω table and what fold-in needs
    ids.json             the id codec (external <-> internal ids)
    dataset.npz          sequences and direct-task negatives (numpy, allow_pickle=False)
    tokenizer/           the t5 tokenizer files
    metrics.json         offline metrics with their protocol
    item_graph.safetensors  item co-occurrence graph of the graph prior (optional: when its mix > 0)
    curve.png            training curve (optional)
    MANIFEST.sha256      sha256 of every other file, `sha256sum -c` format
    onnx/                exported ONNX graphs (optional cache; its own MANIFEST.sha256 and stamp)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from safetensors import safe_open
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_model, save_model

from model_store import manifest
from model_store.codec import IdCodec
from model_store.config import ModelConfig, OmegaConfig
from model_store.engine import GraphPrior, InferenceEngine
from model_store.errors import BundleError
from model_store.item_engine import ItemInferenceEngine
from model_store.item_graph import ItemGraph
from model_store.item_model import ItemElmrecModel
from model_store.manifest import MANIFEST as MANIFEST  # the bundle's manifest file name
from model_store.model import ElmrecModel
from model_store.omega import Omega
from model_store.prompts import TOKENIZER_DIR, IdTokens, PromptBuilder, load_tokenizer

FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
DIRECT_MODEL_FILE = "model_direct.safetensors"  # items kind: weights selected on direct validation (optional)
M = TypeVar("M", bound=torch.nn.Module)
ITEM_GRAPH = "item_graph.safetensors"
ONNX_CACHE = "onnx"  # exported ONNX graphs (model_store.onnx_backend): derived, with a manifest of its own
_READ = ("tokenizer", ITEM_GRAPH)  # what loading reads: an unlisted file there is refused
REQUIRED = (
    "config.json", "model.safetensors", "omega.safetensors", "ids.json", "dataset.npz", "metrics.json",
)


class DatasetInfo(BaseModel):
    """What the model was trained on."""

    name: str
    source: str
    n_users: int
    n_items: int
    n_interactions: int


# Item numberings that carry nothing beyond the training graph ("graph" is derived from it alone);
# P5's consecutive numbers leak the next item.
HONEST_ID_SCHEMES = ("shuffled", "graph")


class Protocol(BaseModel):
    """How train/valid/test and the graph were made: every metric is reported with this."""

    id_scheme: str
    graph: str = "train"  # Ω graph built from training interactions only
    split: str = "leave-one-out"
    seed: int = 0

    @property
    def label(self) -> str:
        return "honest" if self.id_scheme in HONEST_ID_SCHEMES and self.graph == "train" else "reproduction"


class GraphPriorConfig(BaseModel):
    """The T5 + graph-score ensemble (beyond the paper; all zero = pure ELMRec), tuned on validation."""

    direct_weight: float = 0.0
    sequential_weight: float = 0.0
    pool: int = 0
    cooc_mix: float = Field(0.0, ge=0.0, le=1.0, description="sequential graph score: share of the item "
                            "co-occurrence score beside the Ω score (needs item_graph.safetensors)")
    cooc_decay: float = Field(1.0, gt=0.0, le=1.0, description="recency decay of the co-occurrence score")
    direct_cooc_mix: float = Field(0.0, ge=0.0, le=1.0, description="direct graph score: share of the item "
                                   "co-occurrence score of the history (needs item_graph.safetensors)")
    direct_cooc_decay: float = Field(1.0, gt=0.0, le=1.0, description="its recency decay")

    @property
    def uses_item_graph(self) -> bool:
        """Whether either task's graph score mixes in item co-occurrence."""
        return max(self.cooc_mix, self.direct_cooc_mix) > 0

    @property
    def direct_reads_history(self) -> bool:
        """Whether the served direct score reads the user's history (its co-occurrence part is on)."""
        return self.direct_weight > 0 and self.direct_cooc_mix > 0

    def prior(self, omega: Omega, item_graph: ItemGraph | None) -> GraphPrior:
        """The engine's graph prior with these settings."""
        return GraphPrior(omega, item_graph=item_graph, **self.model_dump())


class BundleConfig(BaseModel):
    """config.json."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    format_version: int = FORMAT_VERSION
    model_version: str
    created: str
    preset: str
    preset_settings: dict[str, Any]
    model: ModelConfig
    omega: OmegaConfig
    dataset: DatasetInfo
    protocol: Protocol
    max_history: int
    rerank_n: int
    beam: int
    popular_items: list[int]  # dense item indices by training popularity, for the popularity fallback
    graph_prior: GraphPriorConfig = GraphPriorConfig()

    @property
    def direct_reads_history(self) -> bool:
        """Whether direct scores read the user's history (the items model always does; digits: the prior)."""
        return self.model.kind == "items" or self.graph_prior.direct_reads_history


@dataclass
class BundleData:
    """The dataset as the bundle records it: full sequences (train + valid + test) and negatives."""

    sequences: list[list[int]]
    negatives: list[list[int]]


@dataclass
class Bundle:
    """A verified bundle in memory."""

    path: Path
    config: BundleConfig
    codec: IdCodec
    omega: Omega
    data: BundleData
    metrics: dict[str, Any]
    item_graph: ItemGraph | None = None

    def tokenizer_dir(self) -> Path:
        return self.path / "tokenizer"

    def build_model(self) -> ElmrecModel:
        """The digit-id model with its weights loaded (on CPU)."""
        model = self.load_weights(MODEL_FILE)
        if not isinstance(model, ElmrecModel):
            raise BundleError(f"{self.path}: a {self.config.model.kind!r} bundle has no digit-id model")
        return model

    def load_weights(self, name: str, tokens: IdTokens | None = None) -> ElmrecModel | ItemElmrecModel:
        """One of the bundle's weight files loaded into the model its config describes (on CPU)."""
        model = new_model(self.config.model, self.omega, self.codec, self.tokenizer_dir(), tokens)
        return load_weights(model, self.path / name)

    def engine(self, device: str | torch.device = "cpu", backend: str = "torch") -> InferenceEngine:
        """The inference engine; backend "onnx" runs the digit-id model with `model_store.onnx_backend`."""
        tokens = id_tokens(self.codec, self.tokenizer_dir()) if self.config.model.kind == "digits" else None
        direct = (self.load_weights(DIRECT_MODEL_FILE, tokens) if (self.path / DIRECT_MODEL_FILE).is_file()
                  else None)
        return make_engine(self.config, self.load_weights(MODEL_FILE, tokens), self.omega, self.codec,
                           self.item_graph, device, backend, direct_model=direct, tokens=tokens,
                           bundle_path=self.path)


def omega_matrix(omega: Omega) -> torch.Tensor:
    """Ω rows of users then items, as the model indexes them."""
    return torch.from_numpy(np.concatenate([omega.users, omega.items]).astype(np.float32))


def id_tokens(codec: IdCodec, tokenizer_dir: Path | None = None) -> IdTokens:
    """The digit-id kind's tokens of every user and item id (tokenizing the catalogue: made once)."""
    return IdTokens(load_tokenizer(tokenizer_dir), codec.user_numbers.tolist(), codec.item_numbers.tolist())


def new_model(
    config: ModelConfig, omega: Omega, codec: IdCodec, tokenizer_dir: Path | None = None,
    tokens: IdTokens | None = None,
) -> ElmrecModel | ItemElmrecModel:
    """A freshly initialised model of the config's kind (the one constructor trainer and bundle share);
    the digit-id kind uses `tokens` when given, else tokenizes the codec's ids."""
    if config.kind == "items":
        return ItemElmrecModel(config, torch.from_numpy(omega.items.astype(np.float32)))
    tokens = tokens or id_tokens(codec, tokenizer_dir)
    return ElmrecModel(config, omega_matrix(omega), tokens.output_tokens)


def load_weights(model: M, path: Path) -> M:
    """Load a safetensors weight file into `model`; a file that does not fit raises BundleError."""
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except Exception as exc:  # shape mismatch, corrupt header
        raise BundleError(f"{path.parent}: {path.name} does not fit config.json: {exc}") from exc
    if missing or unexpected:
        raise BundleError(f"{path.parent}: {path.name} does not fit config.json "
                          f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return model


def make_engine(
    config: BundleConfig,
    model: ElmrecModel | ItemElmrecModel,
    omega: Omega,
    codec: IdCodec,
    item_graph: ItemGraph | None,
    device: str | torch.device = "cpu",
    backend: str = "torch",
    direct_model: ElmrecModel | ItemElmrecModel | None = None,
    tokens: IdTokens | None = None,
    bundle_path: Path | None = None,
) -> InferenceEngine:
    """The one assembly of an engine from a bundle's parts (the trainer's evaluation and the service)."""
    if backend not in ("torch", "onnx"):
        raise ValueError(f"backend {backend!r}: expected 'torch' or 'onnx'")
    prior = config.graph_prior.prior(omega, item_graph)
    if isinstance(model, ItemElmrecModel):
        if backend != "torch":
            raise BundleError("the onnx backend serves digit-id bundles only; this bundle's model kind is "
                              "'items' (one decoder pass already ranks every item): use ELMREC_BACKEND=torch")
        if direct_model is not None and not isinstance(direct_model, ItemElmrecModel):
            raise BundleError("the direct weights are not of the bundle's model kind")
        return ItemInferenceEngine(model, config.max_history, device=device, seed=config.protocol.seed,
                                   prior=prior, direct_model=direct_model)
    tokens = tokens or id_tokens(codec)
    runner = None
    if backend == "onnx":
        if bundle_path is None:
            raise ValueError("the onnx backend caches its graphs in the bundle folder: give bundle_path")
        from model_store.onnx_backend import onnx_runner  # optional dependency: imported on demand

        runner = onnx_runner(bundle_path, model, device)
    builder = PromptBuilder(tokens, codec.n_users, config.max_history, config.model.max_whole_word)
    return InferenceEngine(model, builder, tokens, device=device, seed=config.protocol.seed,
                           prior=prior, runner=runner)


def _ragged(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    flat = np.fromiter((x for r in rows for x in r), dtype=np.int32, count=int(offsets[-1]))
    return flat, offsets


def _unragged(flat: np.ndarray, offsets: np.ndarray) -> list[list[int]]:
    values = flat.tolist()
    bounds = offsets.tolist()
    return [values[bounds[i] : bounds[i + 1]] for i in range(len(bounds) - 1)]


def new_model_version(state: dict[str, torch.Tensor]) -> str:
    """A version string: UTC time + a short hash of the weights."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().float().numpy().tobytes()[:4096])
    return datetime.now(UTC).strftime("%Y%m%d-%H%M%S") + "-" + digest.hexdigest()[:8]


def save_bundle(
    path: Path,
    config: BundleConfig,
    model: ElmrecModel | ItemElmrecModel,
    omega: Omega,
    codec: IdCodec,
    data: BundleData,
    metrics: dict[str, Any],
    curve_png: Path | None = None,
    tokenizer_dir: Path = TOKENIZER_DIR,
    item_graph: ItemGraph | None = None,
    direct_model: ElmrecModel | ItemElmrecModel | None = None,
) -> Path:
    """Write a bundle atomically: into a temporary folder beside `path`, then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        (tmp / "config.json").write_text(config.model_dump_json(indent=2))
        save_model(model, str(tmp / MODEL_FILE))
        if direct_model is not None:
            save_model(direct_model, str(tmp / DIRECT_MODEL_FILE))
        save_numpy(omega.to_tensors(), str(tmp / "omega.safetensors"),
                   metadata={"kind": omega.kind, "params": json.dumps(omega.params)})
        (tmp / "ids.json").write_text(json.dumps(codec.to_json()))
        seq_flat, seq_off = _ragged(data.sequences)
        neg_flat, neg_off = _ragged(data.negatives)
        np.savez_compressed(tmp / "dataset.npz", seq_items=seq_flat, seq_offsets=seq_off,
                            neg_items=neg_flat, neg_offsets=neg_off)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2))
        if item_graph is not None:
            save_numpy(item_graph.to_tensors(), str(tmp / ITEM_GRAPH))
        shutil.copytree(tokenizer_dir, tmp / "tokenizer")
        if curve_png is not None and curve_png.exists():
            shutil.copy(curve_png, tmp / "curve.png")
        write_manifest(tmp)
        for entry in [tmp, *tmp.rglob("*")]:
            entry.chmod(0o755 if entry.is_dir() else 0o644)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def write_manifest(folder: Path, skip: Sequence[str] = (ONNX_CACHE,)) -> None:
    """Write the bundle's MANIFEST.sha256 (the ONNX graph cache has a manifest of its own)."""
    manifest.write_manifest(folder, skip)


def verify_manifest(folder: Path) -> set[str]:
    """Verify the bundle's manifest: every listed file matches, every required file is listed, and an
    unlisted file that loading would read (under `tokenizer/`, the item graph) is refused."""
    return manifest.verify_manifest(folder, REQUIRED, skip=(ONNX_CACHE,), read=_READ, what="bundle")


def load_bundle(path: str | Path) -> Bundle:
    """Load and verify a bundle; a corrupt or incompatible one raises BundleError naming the problem."""
    path = Path(path)
    if not path.is_dir():
        raise BundleError(f"{path}: bundle folder not found")
    listed = verify_manifest(path)
    try:
        raw = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}/config.json: not valid JSON ({exc})") from exc
    version = raw.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"{path}: bundle format {version!r} is not supported (this code reads "
                          f"format {FORMAT_VERSION})")
    try:
        config = BundleConfig.model_validate(raw)
    except ValidationError as exc:
        raise BundleError(f"{path}/config.json: {exc}") from exc
    codec = IdCodec.from_json(json.loads((path / "ids.json").read_text()))
    tensors = load_numpy(str(path / "omega.safetensors"))
    with safe_open(str(path / "omega.safetensors"), framework="numpy") as fh:
        meta = fh.metadata() or {}
    omega = Omega.from_tensors(tensors, kind=meta.get("kind", config.omega.kind),
                               params=json.loads(meta.get("params", "{}")))
    with np.load(path / "dataset.npz", allow_pickle=False) as npz:
        sequences = _unragged(npz["seq_items"], npz["seq_offsets"])
        negatives = _unragged(npz["neg_items"], npz["neg_offsets"])
    if codec.n_users != config.dataset.n_users or codec.n_items != config.dataset.n_items:
        raise BundleError(f"{path}: ids.json and config.json disagree on the number of users/items")
    if omega.users.shape[0] != codec.n_users or omega.items.shape[0] != codec.n_items:
        raise BundleError(f"{path}: omega.safetensors does not match the number of users/items")
    if omega.users.shape[1] != config.model.omega_dim:
        raise BundleError(f"{path}: Ω width {omega.users.shape[1]} != model omega_dim "
                          f"{config.model.omega_dim}")
    if len(sequences) != codec.n_users:
        raise BundleError(f"{path}: dataset.npz holds {len(sequences)} users, expected {codec.n_users}")
    metrics = json.loads((path / "metrics.json").read_text())
    item_graph = None
    if (path / ITEM_GRAPH).is_file():
        if ITEM_GRAPH not in listed:
            raise BundleError(f"{path}: {ITEM_GRAPH} is not in the manifest")
        item_graph = ItemGraph.from_tensors(load_numpy(str(path / ITEM_GRAPH)), codec.n_items)
    if config.graph_prior.uses_item_graph and item_graph is None:
        raise BundleError(f"{path}: the graph prior mixes in item co-occurrence but {ITEM_GRAPH} is missing")
    return Bundle(path, config, codec, omega, BundleData(sequences, negatives), metrics, item_graph)
