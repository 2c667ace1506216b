"""ONNX Runtime backend: the engine's encoder and decoder-step graphs, exported with torch's dynamo exporter.

Three graphs compute exactly what `model_store.engine.TorchRunner` computes (they are exported from it):
`encoder_direct` and `encoder_sequential` (prompt -> each decoder layer's cross-attention keys/values and
the encoder mask) and `decoder` (decoder rows + self-attention cache, possibly empty -> log-probabilities
over the output vocabulary and the extended cache). `OnnxRunner` runs them with IO binding (torch tensors
bound in place, CPU provider, or CUDA provider on a GPU), so `InferenceEngine`'s beam search and scoring
run unchanged on top. Exported graphs are cached in `<bundle>/onnx/` (else the user cache) with a stamp
naming the bundle's manifest digest, so a changed bundle is exported again, and a MANIFEST.sha256 of their
own (graphs and stamp), so a tampered or damaged cache is refused before ONNX Runtime reads it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model_store.engine import TorchRunner
from model_store.errors import BundleError, ElmrecError
from model_store.fast_decoder import CrossCache, SelfCache
from model_store.manifest import MANIFEST, verify_manifest, write_manifest
from model_store.model import ElmrecModel
from model_store.prompts import EncoderBatch

log = logging.getLogger(__name__)

EXPORT_FORMAT = 2  # bump when the graphs' inputs, outputs, maths or cache layout change: exports are redone
GRAPHS = ("encoder_direct", "encoder_sequential", "decoder")
STAMP = "stamp.json"
PACKAGES = ("onnxruntime", "onnx", "onnxscript")
CHECK_TOLERANCE = 1e-4  # exported graph vs torch, on inputs of other shapes than the export's samples
_ELEMENT = {torch.int64: np.int64, torch.float32: np.float32}


class OnnxBackendError(ElmrecError):
    """The ONNX backend cannot run here (a package or the CUDA provider missing) or an export is wrong."""


def missing_onnx(device: str | torch.device = "cpu") -> str | None:
    """Why the ONNX backend cannot run on `device` in this environment, or None when it can."""
    missing = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        return (f"{', '.join(missing)} not installed: pip install -e '.[onnx]' (CPU) "
                f"or -e '.[onnx-gpu]' (CUDA)")
    if torch.device(device).type == "cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            return ("this onnxruntime has no CUDAExecutionProvider: install onnxruntime-gpu in its place "
                    "(pip uninstall onnxruntime; pip install -e '.[onnx-gpu]')")
    return None


# -- the graphs ---------------------------------------------------------------------------------------
class EncoderGraph(nn.Module):
    """One task's prompt -> (cross mask, cross K_0, V_0, K_1, V_1, ...), as `TorchRunner.encode`."""

    def __init__(self, runner: TorchRunner, task: str) -> None:
        super().__init__()
        self.model = runner.model  # registered, so the exporter sees the weights as parameters
        self.runner = runner
        self.task = task

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, ww: torch.Tensor,
        extra_omega: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        cross = self.runner.encode(self.task, EncoderBatch(input_ids, attention_mask, ww), extra_omega)
        return (cross.mask, *_interleave(cross.keys, cross.values))


class DecoderGraph(nn.Module):
    """(tokens, cross mask, cross K/V, past K/V) -> (log-probabilities, present K/V): `TorchRunner.decode`."""

    def __init__(self, runner: TorchRunner) -> None:
        super().__init__()
        self.model = runner.model
        self.runner = runner

    def forward(
        self, tokens: torch.Tensor, cross_mask: torch.Tensor, cross: tuple[torch.Tensor, ...],
        past: tuple[torch.Tensor, ...],
    ) -> tuple[torch.Tensor, ...]:
        cache = CrossCache(list(cross[0::2]), list(cross[1::2]), cross_mask)
        logp, present = self.runner.decode(tokens, cache, list(zip(past[0::2], past[1::2], strict=True)))
        return (logp, *(t for pair in present for t in pair))


def _interleave(keys: Sequence[torch.Tensor], values: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [t for pair in zip(keys, values, strict=True) for t in pair]


def _kv_names(prefix: str, layers: int) -> list[str]:
    return [f"{prefix}_{kind}_{i}" for i in range(layers) for kind in "kv"]


def encoder_names(task: str, layers: int) -> tuple[list[str], list[str]]:
    inputs = ["input_ids", "attention_mask", "ww"] + (["extra_omega"] if task == "direct" else [])
    return inputs, ["cross_mask", *_kv_names("cross", layers)]


def decoder_names(layers: int) -> tuple[list[str], list[str]]:
    return (["tokens", "cross_mask", *_kv_names("cross", layers), *_kv_names("past", layers)],
            ["logp", *_kv_names("present", layers)])


def _encoder_sample(model: ElmrecModel, task: str, batch: int, length: int, seed: int) -> tuple[Any, ...]:
    """Encoder inputs with whole-word ids of the task (and, for direct, one cold-start slot)."""
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, cfg.vocab_size, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, length - 2 :] = 0
    top = model.omega.shape[0] if task == "direct" else cfg.max_whole_word
    ww = torch.randint(0, top + 1, (batch, length), generator=gen)
    if task != "direct":
        return ids, mask, ww
    ww[-1, 1] = top + 1  # a cold-start user: row 0 of extra_omega
    return ids, mask, ww, torch.randn(2, cfg.omega_dim, generator=gen)


def _decoder_sample(
    model: ElmrecModel, batch: int, rows: int, steps: int, memory: int, past: int, seed: int
) -> tuple[Any, ...]:
    cfg = model.config
    gen = torch.Generator().manual_seed(seed)
    pairs = range(2 * cfg.num_decoder_layers)
    picks = torch.randint(0, len(model.output_tokens), (batch, rows, steps), generator=gen)
    tokens = model.output_tokens[picks]
    mask = torch.zeros(batch, 1, 1, 1, memory)
    mask[0, ..., memory - 2 :] = torch.finfo(torch.float32).min
    cross = tuple(torch.randn(batch, cfg.num_heads, memory, cfg.d_kv, generator=gen) for _ in pairs)
    cache = tuple(torch.randn(batch, rows, cfg.num_heads, past, cfg.d_kv, generator=gen) for _ in pairs)
    return tokens, mask, cross, cache


# -- export -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence the exporter's progress lines, warnings and its torchvision notices."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")
    loggers = [logging.getLogger(name) for name in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_graphs(model: ElmrecModel, folder: Path) -> None:
    """Export the three graphs into `folder` with the dynamo exporter; each one is checked against torch.

    The export runs on a float32 CPU copy of the model with eager attention in the T5 encoder (the SDPA
    path reshapes a transposed view, which the exporter's decompositions refuse); the maths is the same.
    """
    folder.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(model).cpu().float().eval()
    if hasattr(model.t5, "set_attn_implementation"):
        model.t5.set_attn_implementation("eager")
    else:  # older transformers
        model.t5.config._attn_implementation = "eager"
    runner = TorchRunner(model, model.config.restrict_vocab)
    layers = model.config.num_decoder_layers
    dim = torch.export.Dim
    batch, tokens, extra = dim("batch"), dim("tokens"), dim("extra", min=1)
    rows, steps, memory, past = dim("rows"), dim("steps"), dim("memory"), dim("past")
    text = {0: batch, 1: tokens}
    for task in ("direct", "sequential"):
        inputs, outputs = encoder_names(task, layers)
        shapes: tuple[Any, ...] = (text, text, text) + (({0: extra},) if task == "direct" else ())
        _export_one(EncoderGraph(runner, task), folder / f"encoder_{task}.onnx", inputs, outputs, shapes,
                    _encoder_sample(model, task, 2, 7, seed=0), _encoder_sample(model, task, 3, 11, seed=1))
    inputs, outputs = decoder_names(layers)
    kv_cross = tuple({0: batch, 2: memory} for _ in range(2 * layers))
    kv_past = tuple({0: batch, 1: rows, 3: past} for _ in range(2 * layers))
    _export_one(DecoderGraph(runner), folder / "decoder.onnx", inputs, outputs,
                ({0: batch, 1: rows, 2: steps}, {0: batch, 4: memory}, kv_cross, kv_past),
                _decoder_sample(model, 2, 3, 4, 9, 5, seed=0), _decoder_sample(model, 3, 5, 1, 12, 0, seed=1))


def _export_one(
    module: nn.Module, path: Path, inputs: list[str], outputs: list[str], shapes: tuple[Any, ...],
    sample: tuple[Any, ...], check: tuple[Any, ...],
) -> None:
    with _quiet(), torch.no_grad():
        program = torch.onnx.export(module, sample, dynamo=True, input_names=inputs, output_names=outputs,
                                    dynamic_shapes=shapes, external_data=False, verbose=False)
        if program is None:  # only the legacy exporter returns None
            raise OnnxBackendError(f"{path.name}: the dynamo exporter returned no program")
        program.save(str(path), external_data=False)
        want = [t.numpy() for t in module(*check)]
    got = _session(path, torch.device("cpu"), 1).run(None, dict(zip(inputs, _flatten(check), strict=True)))
    for name, w, g in zip(outputs, want, got, strict=True):
        if w.shape != g.shape or not np.allclose(w, g, rtol=CHECK_TOLERANCE, atol=CHECK_TOLERANCE):
            diff = float(np.abs(w - g).max()) if w.shape == g.shape else float("nan")
            raise OnnxBackendError(f"{path.name}: output {name} differs from torch ({w.shape} vs {g.shape}, "
                                   f"max |diff| {diff:.3g}); the export is wrong")


def _flatten(args: Sequence[Any]) -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for arg in args:
        out.extend(_flatten(arg) if isinstance(arg, tuple) else [arg.numpy()])
    return out


# -- the cache of exported graphs ---------------------------------------------------------------------
def fingerprint(bundle_path: Path) -> dict[str, Any]:
    """What the exported graphs depend on: the bundle's files (its manifest's digest), the exporter."""
    manifest = Path(bundle_path) / MANIFEST
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return {"bundle_manifest_sha256": digest, "export_format": EXPORT_FORMAT, "torch": torch.__version__}


def is_current(folder: Path, stamp: dict[str, Any]) -> bool:
    """Every graph is there and the stamp matches (a changed bundle or exporter means export again)."""
    try:
        found = json.loads((folder / STAMP).read_text())
    except (OSError, ValueError):
        return False
    return found == stamp and all((folder / f"{name}.onnx").is_file() for name in GRAPHS)


def cache_folders(bundle_path: Path, stamp: dict[str, Any]) -> list[Path]:
    """Where exported graphs live, in order: `<bundle>/onnx`, then the user cache (read-only bundles)."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return [Path(bundle_path) / "onnx", root / "elmrec" / "onnx" / stamp["bundle_manifest_sha256"][:16]]


def verify_cache(folder: Path) -> Path:
    """`folder`, once its MANIFEST.sha256 vouches for every graph and the stamp; else OnnxBackendError."""
    try:
        verify_manifest(folder, required=[*(f"{name}.onnx" for name in GRAPHS), STAMP], skip=(),
                        what="verified ONNX graph cache")
    except BundleError as exc:
        raise OnnxBackendError(f"refusing the ONNX graph cache: {exc}; delete {folder} to export the graphs "
                               "again") from exc
    return folder


def graph_folder(bundle_path: Path, model: ElmrecModel, cache_dir: Path | None = None) -> Path:
    """A folder with current, verified exported graphs of this bundle: found in a cache, else exported now."""
    stamp = fingerprint(bundle_path)
    folders = [Path(cache_dir)] if cache_dir is not None else cache_folders(bundle_path, stamp)
    for folder in folders:
        if is_current(folder, stamp):
            return verify_cache(folder)
    problems: list[str] = []
    for folder in folders:
        try:
            scratch = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=_made(folder.parent)))
        except OSError as exc:  # a read-only bundle: try the next place
            problems.append(f"{folder.parent}: {exc.strerror or exc}")
            continue
        try:
            log.info("exporting ONNX graphs of %s into %s", bundle_path, folder)
            export_graphs(model, scratch)
            (scratch / STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
            write_manifest(scratch, skip=())
            return verify_cache(_install(scratch, folder, stamp))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    raise OnnxBackendError("no writable folder for the exported ONNX graphs: " + "; ".join(problems))


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _install(scratch: Path, folder: Path, stamp: dict[str, Any]) -> Path:
    """Move a finished export into place (replacing a stale one; another process's current one wins)."""
    if is_current(folder, stamp):
        return folder
    for entry in [scratch, *scratch.iterdir()]:
        entry.chmod(0o755 if entry.is_dir() else 0o644)  # mkdtemp made it private
    if folder.exists():
        shutil.rmtree(folder)
    os.replace(scratch, folder)
    return folder


# -- running ------------------------------------------------------------------------------------------
def _session(path: Path, device: torch.device, threads: int) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    chosen = providers(device)
    try:
        return ort.InferenceSession(str(path), options, providers=chosen)
    except Exception as exc:  # onnxruntime's own error types: a truncated or foreign file
        raise OnnxBackendError(f"{path}: ONNX Runtime cannot load it ({exc}); delete {path.parent} to "
                               "export the graphs again") from exc


def providers(device: torch.device) -> list[Any]:
    """ONNX Runtime execution providers for a torch device: CUDA (then CPU) on a GPU, else CPU."""
    if device.type != "cuda":
        return ["CPUExecutionProvider"]
    if (why := missing_onnx(device)) is not None:
        raise OnnxBackendError(f"device {device}: {why}")
    return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]


class OnnxRunner:
    """`ModelRunner` on ONNX Runtime: inputs and outputs are torch tensors on `device`, bound in place."""

    def __init__(self, folder: Path, model: ElmrecModel, device: torch.device | str = "cpu",
                 threads: int | None = None) -> None:
        self.device = torch.device(device)
        cfg = model.config
        self.layers, self.heads, self.d_kv = cfg.num_decoder_layers, cfg.num_heads, cfg.d_kv
        self.n_prompts, self.omega_dim = cfg.n_prompts, cfg.omega_dim
        self.vocab = len(model.output_tokens) if cfg.restrict_vocab else cfg.vocab_size
        self.threads = threads or torch.get_num_threads()
        self.sessions = {name: _session(folder / f"{name}.onnx", self.device, self.threads)
                         for name in GRAPHS}
        declared = self.sessions["decoder"].get_outputs()[0].shape[-1]
        if declared != self.vocab:
            raise OnnxBackendError(f"{folder}/decoder.onnx scores {declared} tokens, the model {self.vocab}; "
                                   f"delete {folder} to export it again")
        self._empty = torch.zeros(1, device=self.device)  # a valid pointer for zero-size inputs

    def _run(
        self, graph: str, inputs: dict[str, torch.Tensor], outputs: dict[str, tuple[int, ...]]
    ) -> list[torch.Tensor]:
        session = self.sessions[graph]
        binding = session.io_binding()
        kind, index = self.device.type, self.device.index or 0
        held: list[torch.Tensor] = []  # the bound memory must outlive the run
        for name, tensor in inputs.items():
            value = tensor.to(self.device).contiguous()
            held.append(value)
            pointer = value.data_ptr() if value.numel() else self._empty.data_ptr()
            binding.bind_input(name, kind, index, _ELEMENT[value.dtype], tuple(value.shape), pointer)
        results = []
        for name, shape in outputs.items():
            out = torch.empty(shape, dtype=torch.float32, device=self.device)
            binding.bind_output(name, kind, index, np.float32, shape, out.data_ptr())
            results.append(out)
        if kind == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # inputs written by torch's stream
        session.run_with_iobinding(binding)
        if kind == "cuda":
            binding.synchronize_outputs()
        return results

    def encode(self, task: str, batch: EncoderBatch, extra_omega: torch.Tensor | None) -> CrossCache:
        b, t = batch.input_ids.shape
        inputs = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask, "ww": batch.ww}
        if task == "direct":  # without cold-start users one zero row, never indexed (ww ids stay in Ω)
            inputs["extra_omega"] = (extra_omega.float() if extra_omega is not None and len(extra_omega)
                                     else torch.zeros(1, self.omega_dim))
        m = self.n_prompts + t
        names = encoder_names(task, self.layers)[1]
        shapes = [(b, 1, 1, 1, m)] + [(b, self.heads, m, self.d_kv)] * (2 * self.layers)
        mask, *kv = self._run(f"encoder_{task}", inputs, dict(zip(names, shapes, strict=True)))
        return CrossCache(kv[0::2], kv[1::2], mask)

    def decode(
        self, tokens: torch.Tensor, cross: CrossCache, past: SelfCache | None
    ) -> tuple[torch.Tensor, SelfCache]:
        b, g, t = tokens.shape
        if past is None:
            empty = torch.zeros(b, g, self.heads, 0, self.d_kv, device=self.device)
            past = [(empty, empty)] * self.layers
        start = past[0][0].shape[3]
        in_names, out_names = decoder_names(self.layers)
        values = [tokens, cross.mask, *_interleave(cross.keys, cross.values),
                  *(t for pair in past for t in pair)]
        shapes = [(b, g, t, self.vocab)] + [(b, g, self.heads, start + t, self.d_kv)] * (2 * self.layers)
        logp, *kv = self._run("decoder", dict(zip(in_names, values, strict=True)),
                              dict(zip(out_names, shapes, strict=True)))
        return logp, list(zip(kv[0::2], kv[1::2], strict=True))


def onnx_runner(
    bundle_path: Path, model: ElmrecModel, device: torch.device | str = "cpu", cache_dir: Path | None = None,
    threads: int | None = None,
) -> OnnxRunner:
    """The ONNX runner of a bundle's model: cached graphs, else exported now (seconds to minutes)."""
    why = missing_onnx(device)
    if why is not None:
        raise OnnxBackendError(f"the ONNX backend cannot run: {why}")
    return OnnxRunner(graph_folder(bundle_path, model, cache_dir), model, device, threads)
