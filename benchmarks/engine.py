"""Engine vs transformers `generate` (20 beams, same model, same inputs): per-user latency and agreement."""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
import transformers
from transformers import LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import PrefixConstrainedLogitsProcessor
from transformers.modeling_outputs import BaseModelOutput

from model_store.device import describe
from model_store.engine import InferenceEngine, Scored
from model_store.model import EOS_ID, PAD_ID
from model_store.prompts import pad_encoder
from model_store.topk import top_k_items
from model_store.trie import ItemTrie

DESCRIPTION = (__doc__ or "") + """

    python -m benchmarks.engine --bundle bundles/beauty-small --device cpu --users 20 --json

Direct: our exact likelihood of every candidate (`InferenceEngine.score_direct`) against the P5/POD
way, `generate` with 20 beams constrained to the user's candidates. Sequential: our constrained beam
(`InferenceEngine.beam_sequential`) against `generate` with 20 beams constrained to every real item.
Both sides run the T5 alone (`pure=True`): a bundle's graph-score ensemble is left out. The baseline
computes the model's distribution (log-softmax over the item-id tokens only) with a logits processor
that renormalises `generate`'s full-vocabulary log-probabilities over those tokens before the prefix
constraint, and ranks by the raw sum of log-probabilities (`length_penalty=0`).

`--backend onnx` also times the same engine on ONNX Runtime (`model_store/onnx_backend.py`, CPU provider
on a CPU, as many threads as torch) beside the torch engine and `generate`, user by user, and checks it
returns the torch engine's top-k lists; the JSON is then written as `engine-onnx-<device>-<date>.json`.
"""

RESULTS = Path(__file__).parent / "results"
TOP_K = 10  # agreement is measured on the top-10 items, the cut-off of the reported metrics
UNREACHABLE = -1e8  # generate marks impossible beams with about -1e9 (or -inf)


# -- the transformers `generate` baseline -----------------------------------------------------------
class RestrictedVocabulary(LogitsProcessor):
    """Log-softmax over the item-id tokens only (the model's output distribution); -inf elsewhere.

    `generate` hands processors log_softmax over the full vocabulary; a log-softmax of those values over
    a subset equals the log-softmax of the raw logits over that subset, so this reproduces
    `log_softmax(ElmrecModel.logits(hidden, restricted=True))` exactly.
    """

    def __init__(self, output_tokens: torch.Tensor) -> None:
        self.tokens = output_tokens

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:  # noqa: ARG002
        out = torch.full_like(scores, -torch.inf)
        out[:, self.tokens] = torch.log_softmax(scores[:, self.tokens].float(), dim=-1).to(scores.dtype)
        return out  # type: ignore[return-value]


@dataclass
class TokenTrie:
    """Item token sequences (full-vocabulary ids, EOS last) as nested dicts, the P5 way; leaves name items."""

    edges: list[dict[int, int]] = field(default_factory=lambda: [{}])
    leaf: dict[int, int] = field(default_factory=dict)

    @classmethod
    def of(cls, sequences: Sequence[Sequence[int]], items: Sequence[int]) -> TokenTrie:
        trie = cls()
        for seq, item in zip(sequences, items, strict=True):
            node = 0
            for token in seq:
                child = trie.edges[node].get(token)
                if child is None:
                    child = len(trie.edges)
                    trie.edges[node][token] = child
                    trie.edges.append({})
                node = child
            trie.leaf[node] = item
        return trie

    @classmethod
    def from_item_trie(cls, trie: ItemTrie, label_to_token: np.ndarray) -> TokenTrie:
        """The engine's own trie (restricted-vocabulary labels) with its labels mapped to token ids."""
        csr = trie.children.tocsr()
        edges: list[dict[int, int]] = []
        for node in range(trie.n_nodes):
            lo, hi = csr.indptr[node], csr.indptr[node + 1]
            edges.append({int(label_to_token[lab]): int(child) - 1
                          for lab, child in zip(csr.indices[lo:hi], csr.data[lo:hi], strict=True)})
        leaf = {int(n): int(i) for n, i in enumerate(trie.leaf_item) if i >= 0}
        return cls(edges, leaf)

    def walk(self, tokens: Sequence[int]) -> int | None:
        """The node a token prefix reaches, or None when it is not a prefix of an item."""
        node = 0
        for token in tokens:
            child = self.edges[node].get(token)
            if child is None:
                return None
            node = child
        return node

    def allowed(self, tokens: Sequence[int]) -> list[int]:
        node = self.walk(tokens)
        # an impossible (-inf) beam may hold a non-prefix; any token keeps `generate` going
        return list(self.edges[node]) if node is not None and self.edges[node] else [EOS_ID]

    def item(self, tokens: Sequence[int]) -> int | None:
        """The item a generated sequence (up to and including EOS) names, if it is complete."""
        node = self.walk(tokens)
        return None if node is None else self.leaf.get(node)


class GenerateBaseline:
    """The same `ElmrecModel` decoded with transformers `generate` (beam search, KV cache on)."""

    def __init__(self, engine: InferenceEngine) -> None:
        self.engine = engine
        self.model = engine.model
        self.items = TokenTrie.from_item_trie(engine.trie, engine.label_to_token)
        self.vocabulary = RestrictedVocabulary(self.model.output_tokens)
        self.max_new_tokens = engine.trie.max_depth

    def _autocast(self) -> Any:
        if self.engine.device.type == "cuda":  # the engine's own numerics on GPU
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return torch.autocast("cpu", enabled=False)

    def generate(
        self, task: str, rows: list[tuple[list[int], list[int]]], tries: list[TokenTrie], beams: int
    ) -> list[list[Scored]]:
        """Top `beams` items per prompt row, best first, with generate's sequence scores."""
        batch = pad_encoder(rows).to(self.engine.device)

        def prefix(batch_id: int, sent: torch.Tensor) -> list[int]:
            return tries[batch_id].allowed(sent.tolist()[1:])

        processors = LogitsProcessorList([self.vocabulary, PrefixConstrainedLogitsProcessor(prefix, beams)])
        with torch.inference_mode(), self._autocast():
            states, mask = self.model.encode(task, batch.input_ids, batch.attention_mask, batch.ww)
            out = self.model.t5.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                attention_mask=mask,
                num_beams=beams,
                num_return_sequences=beams,
                max_new_tokens=self.max_new_tokens,
                length_penalty=0.0,
                early_stopping=False,
                do_sample=False,
                use_cache=True,
                decoder_start_token_id=PAD_ID,
                pad_token_id=PAD_ID,
                eos_token_id=EOS_ID,
                logits_processor=processors,
                output_scores=True,
                return_dict_in_generate=True,
            )
        sequences = out.sequences.cpu().numpy()
        scores = out.sequences_scores.float().cpu().numpy()
        results: list[list[Scored]] = []
        for r, trie in enumerate(tries):
            found: dict[int, float] = {}
            for j in range(r * beams, (r + 1) * beams):
                if not scores[j] > UNREACHABLE:
                    continue
                tokens = sequences[j, 1:].tolist()
                end = tokens.index(EOS_ID) + 1 if EOS_ID in tokens else len(tokens)
                item = trie.item(tokens[:end])
                if item is not None and item not in found:
                    found[item] = float(scores[j])
            results.append(ranked(found))
        return results

    def direct(
        self, users: Sequence[int], candidates: Sequence[Sequence[int]], beams: int
    ) -> list[list[Scored]]:
        """P5/POD direct recommendation: beams constrained to each user's candidates (a trie per user)."""
        orders = [self.engine.candidate_order(u, c) for u, c in zip(users, candidates, strict=True)]
        rows = [self.engine.builder.direct(u, o) for u, o in zip(users, orders, strict=True)]
        tries = [TokenTrie.of([self.engine.item_tokens[i] for i in o], o) for o in orders]
        return self.generate("direct", rows, tries, min(beams, min(len(o) for o in orders)))

    def sequential(
        self, users: Sequence[int], histories: Sequence[Sequence[int]], beams: int
    ) -> list[list[Scored]]:
        """Sequential recommendation: beams constrained to every real item (the engine's trie)."""
        rows = [self.engine.builder.sequential(u, h) for u, h in zip(users, histories, strict=True)]
        beams = min(beams, len(self.engine.item_tokens))
        return self.generate("sequential", rows, [self.items] * len(rows), beams)


# -- measuring ----------------------------------------------------------------------------------------
def ranked(scores: dict[int, float]) -> list[Scored]:
    """Items by score, best first (ties: lower index first, as the engine ranks)."""
    return [Scored(i, s) for i, s in top_k_items(scores)]


def same_answers(
    direct: Sequence[Scored], other_direct: Sequence[Scored], seq: Sequence[Scored],
    other_seq: Sequence[Scored],
) -> tuple[bool, float]:
    """Same top-k direct items and same whole sequential lists from two engines? And the max |score diff|."""
    same = ([s.item for s in direct[:TOP_K]] == [s.item for s in other_direct[:TOP_K]]
            and [s.item for s in seq] == [s.item for s in other_seq])
    theirs = {s.item: s.score for s in other_direct}
    diffs = [abs(s.score - theirs[s.item]) for s in direct if s.item in theirs]
    diffs += [abs(a.score - b.score) for a, b in zip(seq, other_seq, strict=False) if a.item == b.item]
    return same, max(diffs, default=0.0)


def overlap(a: Sequence[Scored], b: Sequence[Scored], k: int = TOP_K) -> float:
    """|top-k(a) ∩ top-k(b)| / k (k capped at the shorter list; 1.0 when both are empty)."""
    k = min(k, len(a), len(b)) if a and b else 0
    if k == 0:
        return 1.0 if not a and not b else 0.0
    return len({s.item for s in a[:k]} & {s.item for s in b[:k]}) / k


class Clock:
    """Accumulated wall time per name, synchronising CUDA around each timed call."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        self._sync()
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        self._sync()
        self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
        self.calls[name] = self.calls.get(name, 0) + 1
        return out

    def ms_per(self, name: str, users: int) -> float:
        return round(1000.0 * self.seconds.get(name, 0.0) / max(users, 1), 3)


def _chunks(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(n, start + size))


def package_version(name: str) -> str | None:
    """An installed distribution's version, or None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(command: str) -> dict[str, Any]:
    """Versions, threads, command and date that every benchmark JSON carries."""
    return {
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": package_version("onnxruntime") or package_version("onnxruntime-gpu"),
        "torch_threads": torch.get_num_threads(),
        "command": command,
        "date": stamp(),
    }


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def write_json(result: dict[str, Any], out_dir: Path, device: str, variant: str = "") -> Path:
    """`<benchmark>[-<variant>]-<device>-<date>.json` in out_dir (the CLI prints the same object last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "-".join(x for x in (result["benchmark"], variant, device, result["date"]) if x)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def _mean(values: Sequence[float]) -> float:
    return round(float(np.mean(values)), 4) if len(values) else 1.0


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run with `threads` intra-op threads (None: torch's default), restored afterwards."""
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(saved)


def run(
    bundle_dir: Path, device: str, users: int, beams: int = 20, batch_users: int = 32,
    batched_users: int = 128, warmup: int = 2, seed: int = 0, threads: int | None = 1, command: str = "",
    backend: str = "torch",
) -> dict[str, Any]:
    """Time both tasks on `users` users, one user per call, engine and generate interleaved per user."""
    with torch_threads(threads if device == "cpu" else None):
        return _run(bundle_dir, device, users, beams, batch_users, batched_users, warmup, seed, command,
                    backend)


def _run(
    bundle_dir: Path, device: str, users: int, beams: int, batch_users: int, batched_users: int,
    warmup: int, seed: int, command: str, backend: str,
) -> dict[str, Any]:
    from model_store.bundle import load_bundle
    from training.evaluate import sample_users, split_cases

    bundle = load_bundle(bundle_dir)
    if bundle.config.model.kind != "digits":
        raise SystemExit(f"{bundle_dir}: engine-vs-generate measures the digit-id kind's beam search; this "
                         f"bundle's model kind is {bundle.config.model.kind!r} (one exact decoder pass per "
                         "history: measure it with python -m benchmarks.serve or benchmarks.eval_speed)")
    engine = bundle.engine(device)
    other = bundle.engine(device, backend="onnx") if backend == "onnx" else None
    onnx_same: list[float] = []
    onnx_diff = 0.0
    baseline = GenerateBaseline(engine)
    n_users = bundle.codec.n_users
    chosen = sample_users(n_users, min(users + warmup, n_users), seed)
    case = split_cases(bundle.data.sequences, bundle.data.negatives, "test", chosen)
    cands = [[t, *n] for t, n in zip(case.targets, case.negatives, strict=True)]
    clock = Clock(engine.device)
    direct_agree: list[float] = []
    seq_agree: list[float] = []
    seq_identical: list[float] = []
    seq_top1: list[float] = []
    seq_beam: list[float] = []
    direct_diff = 0.0
    seq_diff = 0.0
    for i, user in enumerate(case.users):
        prefix = "" if i >= warmup else "warmup-"
        hist = case.histories[i]
        ours_d = clock.time(prefix + "direct", engine.score_direct, [user], [cands[i]], pure=True)[0]
        gen_d = clock.time(prefix + "generate_direct", baseline.direct, [user], [cands[i]], beams)[0]
        ours_s = clock.time(prefix + "sequential", engine.beam_sequential, [user], [hist], beams,
                            pure=True)[0]
        gen_s = clock.time(prefix + "generate_sequential", baseline.sequential, [user], [hist], beams)[0]
        if other is not None:
            onnx_d = clock.time(prefix + "onnx_direct", other.score_direct, [user], [cands[i]], pure=True)[0]
            onnx_s = clock.time(prefix + "onnx_sequential", other.beam_sequential, [user], [hist], beams,
                                pure=True)[0]
            if not prefix:
                same, diff = same_answers(ranked(ours_d), ranked(onnx_d), ours_s, onnx_s)
                onnx_same.append(float(same))
                onnx_diff = max(onnx_diff, diff)
        if prefix:
            continue
        direct_agree.append(overlap(ranked(ours_d), gen_d))
        seq_agree.append(overlap(ours_s, gen_s))
        seq_identical.append(float([s.item for s in ours_s[:TOP_K]] == [s.item for s in gen_s[:TOP_K]]))
        seq_top1.append(float(bool(ours_s) and bool(gen_s) and ours_s[0].item == gen_s[0].item))
        seq_beam.append(overlap(ours_s, gen_s, beams))
        # generate's sequence scores against the engine's exact likelihoods of the same items
        direct_diff = max([direct_diff, *(abs(s.score - ours_d[s.item]) for s in gen_d)])
        exact = engine.score_items([user], [hist], [[s.item for s in gen_s]])[0]
        seq_diff = max([seq_diff, *(abs(s.score - exact[s.item]) for s in gen_s)])
    n = len(case.users[warmup:])

    # batched throughput of the engine alone (batches of `batch_users`, at least one full batch)
    pool = sample_users(n_users, min(max(batched_users, batch_users), n_users), seed + 1)
    bcase = split_cases(bundle.data.sequences, bundle.data.negatives, "test", pool)
    bcands = [[t, *neg] for t, neg in zip(bcase.targets, bcase.negatives, strict=True)]
    first = range(min(batch_users, len(pool)))
    engine.score_direct([pool[j] for j in first], [bcands[j] for j in first], pure=True)  # warm-up
    engine.beam_sequential([pool[j] for j in first], [bcase.histories[j] for j in first], beams, pure=True)
    for chunk in _chunks(len(pool), batch_users):
        chunk_users = [pool[j] for j in chunk]
        clock.time("batched_direct", engine.score_direct, chunk_users, [bcands[j] for j in chunk], pure=True)
        clock.time("batched_sequential", engine.beam_sequential, chunk_users,
                   [bcase.histories[j] for j in chunk], beams, pure=True)
        if other is not None:
            if chunk.start == 0:  # the ONNX engine's own warm-up batch
                other.score_direct(chunk_users, [bcands[j] for j in chunk], pure=True)
                other.beam_sequential(chunk_users, [bcase.histories[j] for j in chunk], beams, pure=True)
            clock.time("batched_onnx_direct", other.score_direct, chunk_users, [bcands[j] for j in chunk],
                       pure=True)
            clock.time("batched_onnx_sequential", other.beam_sequential, chunk_users,
                       [bcase.histories[j] for j in chunk], beams, pure=True)

    ms = {k: clock.ms_per(k, n) for k in ("direct", "sequential", "generate_direct", "generate_sequential")}
    direct_top, seq_top = _mean(direct_agree), _mean(seq_agree)
    onnx: dict[str, Any] = {}
    if other is not None:
        od, osq = clock.ms_per("onnx_direct", n), clock.ms_per("onnx_sequential", n)
        onnx = {
            "onnx_direct_ms_per_user": od,
            "onnx_sequential_ms_per_user": osq,
            "onnx_direct_speedup_vs_torch": round(ms["direct"] / max(od, 1e-9), 2),
            "onnx_sequential_speedup_vs_torch": round(ms["sequential"] / max(osq, 1e-9), 2),
            "onnx_direct_speedup_vs_generate": round(ms["generate_direct"] / max(od, 1e-9), 2),
            "onnx_sequential_speedup_vs_generate": round(ms["generate_sequential"] / max(osq, 1e-9), 2),
            "onnx_identical_to_torch_fraction": _mean(onnx_same),
            "onnx_max_score_diff_vs_torch": float(f"{onnx_diff:.3g}"),
            "batched_onnx_direct_ms_per_user": clock.ms_per("batched_onnx_direct", len(pool)),
            "batched_onnx_sequential_ms_per_user": clock.ms_per("batched_onnx_sequential", len(pool)),
            **onnx_setup(other),
        }
    return {
        "benchmark": "engine",
        "device": describe(engine.device),
        "preset": bundle.config.preset,
        "dataset": bundle.config.dataset.name,
        "users": n,
        "beams": beams,
        "direct_ms_per_user": ms["direct"],
        "sequential_ms_per_user": ms["sequential"],
        "generate_direct_ms_per_user": ms["generate_direct"],
        "generate_sequential_ms_per_user": ms["generate_sequential"],
        "direct_speedup": round(ms["generate_direct"] / max(ms["direct"], 1e-9), 2),
        "sequential_speedup": round(ms["generate_sequential"] / max(ms["sequential"], 1e-9), 2),
        "top_k_agreement": min(direct_top, seq_top),
        "top_k": TOP_K,
        "direct_top_k_agreement": direct_top,
        "sequential_top_k_agreement": seq_top,
        "sequential_identical_top_k_fraction": _mean(seq_identical),
        "sequential_top1_agreement": _mean(seq_top1),
        "sequential_full_beam_agreement": _mean(seq_beam),
        "direct_max_score_diff": float(f"{direct_diff:.3g}"),
        "sequential_max_score_diff": float(f"{seq_diff:.3g}"),
        "batch_users": batch_users,
        "batched_users": len(pool),
        "batched_direct_ms_per_user": clock.ms_per("batched_direct", len(pool)),
        "batched_sequential_ms_per_user": clock.ms_per("batched_sequential", len(pool)),
        "graph_ensemble": "left out (pure=True on both sides)",
        "backend": backend,
        **onnx,
        **environment(command),
    }


def onnx_setup(engine: InferenceEngine) -> dict[str, Any]:
    """The ONNX Runtime providers and threads an engine runs with (empty for a torch engine)."""
    from model_store.onnx_backend import OnnxRunner

    runner = engine.runner
    if not isinstance(runner, OnnxRunner):
        return {}
    return {"onnx_providers": runner.sessions["decoder"].get_providers(), "onnx_threads": runner.threads}


def summary(result: dict[str, Any]) -> str:
    r = result
    onnx = [] if r.get("backend") != "onnx" else [
        f"  onnx runtime engine ({', '.join(r['onnx_providers'])}, {r['onnx_threads']} threads): direct "
        f"{r['onnx_direct_ms_per_user']:.2f} ms/user ({r['onnx_direct_speedup_vs_torch']:.2f}x torch), "
        f"sequential {r['onnx_sequential_ms_per_user']:.2f} ms/user "
        f"({r['onnx_sequential_speedup_vs_torch']:.2f}x torch); batched direct "
        f"{r['batched_onnx_direct_ms_per_user']:.2f}, sequential "
        f"{r['batched_onnx_sequential_ms_per_user']:.2f} ms/user",
        f"  onnx vs torch engine: same lists for {r['onnx_identical_to_torch_fraction']:.3f} of users, "
        f"max |score diff| {r['onnx_max_score_diff_vs_torch']:.2g}",
    ]
    return "\n".join([
        f"engine vs transformers generate ({r['beams']} beams) on {r['dataset']} / {r['preset']}, "
        f"{r['users']} users, {r['device']}",
        f"  direct      engine {r['direct_ms_per_user']:9.2f} ms/user   generate "
        f"{r['generate_direct_ms_per_user']:9.2f} ms/user   speedup {r['direct_speedup']:.1f}x   "
        f"top-{r['top_k']} agreement {r['direct_top_k_agreement']:.3f}",
        f"  sequential  engine {r['sequential_ms_per_user']:9.2f} ms/user   generate "
        f"{r['generate_sequential_ms_per_user']:9.2f} ms/user   speedup {r['sequential_speedup']:.1f}x   "
        f"top-{r['top_k']} agreement {r['sequential_top_k_agreement']:.3f}",
        f"  batched engine ({r['batch_users']} users per call, {r['batched_users']} users): direct "
        f"{r['batched_direct_ms_per_user']:.2f} ms/user, "
        f"sequential {r['batched_sequential_ms_per_user']:.2f} ms/user",
        f"  sequential whole {r['beams']}-item lists: agreement {r['sequential_full_beam_agreement']:.3f}",
        f"  max |generate score - engine exact log p|: direct {r['direct_max_score_diff']:.2g}, "
        f"sequential {r['sequential_max_score_diff']:.2g}",
        *onnx,
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--users", type=int, default=20, help="timed users (after the warm-up users)")
    p.add_argument("--beams", type=int, default=20)
    p.add_argument("--batch-users", type=int, default=32, help="users per call for the batched figures")
    p.add_argument("--batched-users", type=int, default=128, help="users timed for the batched figures")
    p.add_argument("--warmup", type=int, default=2, help="untimed users first")
    p.add_argument("--seed", type=int, default=0, help="which users (a fixed random sample)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads on CPU (0: torch's default); see docs/PERFORMANCE.md")
    p.add_argument("--backend", default="torch", choices=["torch", "onnx"],
                   help="onnx: also time the engine on ONNX Runtime, beside torch and generate")
    p.add_argument("--json", action="store_true", help="print one JSON object last and write it to --out-dir")
    p.add_argument("--out-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.users < 1:
        p.error("--users must be >= 1")
    if args.backend == "onnx":
        from model_store.onnx_backend import missing_onnx

        if (why := missing_onnx()) is not None:
            p.error(f"--backend onnx: {why}")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: no CUDA device is available")
    command = " ".join(["python -m benchmarks.engine", *(sys.argv[1:] if argv is None else argv)])
    result = run(args.bundle, args.device, args.users, args.beams, args.batch_users, args.batched_users,
                 args.warmup, args.seed, args.threads or None, command, args.backend)
    print(summary(result))
    if args.json:
        path = write_json(result, args.out_dir, args.device, "onnx" if args.backend == "onnx" else "")
        print(f"wrote {path}")
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
