"""The one inference engine: exact candidate scoring (direct) and trie-constrained beam search (sequential).

Both the offline evaluator (`training/evaluate.py`) and the API (`service/`) call this, so served
rankings equal the offline ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from model_store.fast_decoder import CrossCache, GroupedT5Decoder, SelfCache
from model_store.item_graph import ItemGraph
from model_store.model import PAD_ID, ElmrecModel
from model_store.omega import Omega
from model_store.prompts import EncoderBatch, IdTokens, PromptBuilder, pad_encoder
from model_store.topk import top_k_items
from model_store.trie import ItemTrie


@dataclass(frozen=True)
class GraphPrior:
    """Ensemble of the T5 score with a graph score: an option beyond the paper, off when weights are 0.

    direct: + w · z(graph score) over the candidates, the graph score being Ω_user · Ω_item, or with an
    item co-occurrence graph and `direct_cooc_mix` = μ > 0: (1 - μ) · z(Ω score) + μ · z(Σ_t decay^age ·
    sim(h_t, candidate)) over the history. Sequential: the beam's items and the `pool` items with the best
    history graph score are rescored by exact likelihood + w · z(graph score); that graph score is
    (Σ Ω_history) · Ω_item, or with `cooc_mix` = λ > 0: (1 - λ) · z(Ω score) + λ · z(co-occurrence score)
    over all items.
    """

    omega: Omega
    direct_weight: float = 0.0
    sequential_weight: float = 0.0
    pool: int = 0
    item_graph: ItemGraph | None = None
    cooc_mix: float = 0.0
    cooc_decay: float = 1.0
    direct_cooc_mix: float = 0.0
    direct_cooc_decay: float = 1.0

    def direct_scores(
        self, items: Sequence[int], row: np.ndarray, history: Sequence[int] | None, mix: float | None = None
    ) -> np.ndarray:
        """Standardised direct graph score of the candidates (`mix` None = the prior's own μ)."""
        index = np.asarray(items, dtype=np.int64)
        omega = self.standardised(self.omega.items[index] @ row)
        mu = self.direct_cooc_mix if mix is None else mix
        cooc = self._cooccurrence(history, mu, self.direct_cooc_decay)
        return omega if cooc is None else (1 - mu) * omega + mu * self.standardised(cooc[index])

    def _cooccurrence(self, history: Sequence[int] | None, mix: float, decay: float) -> np.ndarray | None:
        """The item co-occurrence score of every item for this history; None when that part is off."""
        if self.item_graph is None or mix <= 0 or history is None or not len(history):
            return None
        return self.item_graph.history_scores(history, decay)

    @staticmethod
    def standardised(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        std = values.std()
        return (values - values.mean()) / std if std > 0 else np.zeros_like(values)

    def history_scores(self, history: Sequence[int]) -> np.ndarray:
        """The sequential graph score of every item for this history."""
        profile = np.zeros(self.omega.items.shape[1], dtype=np.float32)
        if len(history):
            profile = self.omega.items[np.asarray(list(history), dtype=np.int64)].sum(axis=0)
        scores = self.omega.items @ profile
        cooc = self._cooccurrence(history, self.cooc_mix, self.cooc_decay)
        if cooc is None:
            return scores
        return (1 - self.cooc_mix) * self.standardised(scores) + self.cooc_mix * self.standardised(cooc)

    def sequential_pool(
        self, history: Sequence[int], beam_items: Sequence[int]
    ) -> tuple[list[int], np.ndarray]:
        """Beam items + the top-`pool` items by history graph score, and their graph scores."""
        scores = self.history_scores(history)
        items = list(dict.fromkeys(beam_items))
        if self.pool > 0:
            seen = set(items)
            top = np.argpartition(-scores, min(self.pool, len(scores) - 1))[: self.pool]
            items += [int(i) for i in top if int(i) not in seen]
        return items, scores[np.asarray(items, dtype=np.int64)]


class ModelRunner(Protocol):
    """The engine's two model calls: `TorchRunner` (torch) or `model_store.onnx_backend` (ONNX Runtime)."""

    def encode(self, task: str, batch: EncoderBatch, extra_omega: torch.Tensor | None) -> CrossCache:
        """Prompts -> each decoder layer's cross-attention keys/values and the encoder mask."""
        ...

    def decode(
        self, tokens: torch.Tensor, cross: CrossCache, past: SelfCache | None
    ) -> tuple[torch.Tensor, SelfCache]:
        """Decoder rows (B, G, t) -> log-probabilities (B, G, t, V) of the output vocabulary, new cache."""
        ...


class TorchRunner:
    """`ModelRunner` in torch: `ElmrecModel.encode` and the grouped decoder with its KV caches."""

    def __init__(self, model: ElmrecModel, restricted: bool) -> None:
        self.model = model
        self.restricted = restricted
        self.decoder = GroupedT5Decoder(model.t5.get_decoder())

    def encode(self, task: str, batch: EncoderBatch, extra_omega: torch.Tensor | None) -> CrossCache:
        states, mask = self.model.encode(task, batch.input_ids, batch.attention_mask, batch.ww, extra_omega)
        return self.decoder.cross_cache(states, mask)

    def decode(
        self, tokens: torch.Tensor, cross: CrossCache, past: SelfCache | None
    ) -> tuple[torch.Tensor, SelfCache]:
        hidden, new_past = self.decoder(tokens, cross, past)
        logits = self.model.logits(hidden * self.model.output_scale, self.restricted)
        return torch.log_softmax(logits.float(), dim=-1), new_past


@dataclass(frozen=True)
class Scored:
    """An item (dense index) with its log-likelihood under the model."""

    item: int
    score: float


class InferenceEngine:
    """Ranks items for users with an `ElmrecModel`; stateless apart from the model."""

    def __init__(
        self,
        model: ElmrecModel,
        builder: PromptBuilder,
        id_tokens: IdTokens,
        device: torch.device | str = "cpu",
        seed: int = 0,
        max_rows: int = 4096,
        prior: GraphPrior | None = None,
        runner: ModelRunner | None = None,
    ) -> None:
        self.model = model.to(device).eval()
        self.builder = builder
        self.device = torch.device(device)
        self.seed = seed
        self.max_rows = max_rows
        self.prior = prior
        self.restricted = model.config.restrict_vocab
        vocab = len(model.output_tokens) if self.restricted else model.config.vocab_size
        targets = id_tokens.targets
        self.item_tokens = targets
        lookup = model.output_lookup.cpu().numpy()
        self.item_labels = [[int(lookup[t]) for t in tokens] if self.restricted else list(tokens)
                            for tokens in targets]
        self.trie = ItemTrie(self.item_labels, vocab)
        self.label_to_token = (
            model.output_tokens.cpu().numpy() if self.restricted else np.arange(vocab, dtype=np.int64)
        )
        self.runner: ModelRunner = runner or TorchRunner(self.model, self.restricted)

    @contextlib.contextmanager
    def _mode(self) -> Iterator[None]:
        autocast = (
            torch.autocast("cuda", dtype=torch.bfloat16)
            if self.device.type == "cuda"
            else contextlib.nullcontext()
        )
        with torch.inference_mode(), autocast:
            yield

    def candidate_order(self, user: int, candidates: Sequence[int]) -> list[int]:
        """The order candidates take in the prompt: a shuffle that depends only on (seed, user, set)."""
        unique = sorted(set(int(c) for c in candidates))
        rng = np.random.default_rng([self.seed, int(user), len(unique)])
        return [unique[i] for i in rng.permutation(len(unique))]

    # -- direct recommendation ----------------------------------------------------------------
    def score_direct(
        self,
        users: Sequence[int | None],
        candidates: Sequence[Sequence[int]],
        user_rows: Sequence[np.ndarray | None] | None = None,
        pure: bool = False,
        histories: Sequence[Sequence[int] | None] | None = None,
    ) -> list[dict[int, float]]:
        """Ranking score of every candidate of every user: {item: score}, higher is better.

        The score is the exact log-likelihood log p(item | prompt); with a graph prior of weight w > 0
        (and not `pure`) it is log p + w · z(graph score), z standardised over the user's candidates
        (`GraphPrior`; its co-occurrence part reads `histories`). A user given as None is a cold-start
        user; its folded-in Ω row comes from `user_rows`.
        """
        rows_in = list(user_rows) if user_rows is not None else [None] * len(users)
        # a cold user is keyed n_users (no known user has it): numpy seeds must be non-negative
        orders = [self.candidate_order(self.builder.n_users if u is None else u, c)
                  for u, c in zip(users, candidates, strict=True)]
        prompts: list[tuple[list[int], list[int]]] = []
        extra: list[np.ndarray] = []
        for u, o, r in zip(users, orders, rows_in, strict=True):
            if u is None:
                if r is None:
                    raise ValueError("a cold-start user needs its folded-in Ω row")
                extra.append(np.asarray(r, dtype=np.float32))
            prompts.append(self.builder.direct(u, o, cold_slot=max(len(extra) - 1, 0)))
        out = self._likelihoods("direct", prompts, orders, extra)
        if pure:
            return out
        hists = list(histories) if histories is not None else [None] * len(users)
        return [self.with_graph(u, s, None, r, h)
                for u, s, r, h in zip(users, out, rows_in, hists, strict=True)]

    def with_graph(
        self, user: int | None, t5_scores: dict[int, float], weight: float | None = None,
        user_row: np.ndarray | None = None, history: Sequence[int] | None = None, mix: float | None = None,
    ) -> dict[int, float]:
        """Direct ranking scores: log p + w · z(graph score) (w, mix None = the prior's own)."""
        prior = self.prior
        w = (prior.direct_weight if prior is not None else 0.0) if weight is None else weight
        if not w or prior is None:
            return dict(t5_scores)
        items = list(t5_scores)
        row = prior.omega.users[user] if user is not None else np.asarray(user_row, dtype=np.float32)
        z = prior.direct_scores(items, row, history, mix)
        return {item: t5_scores[item] + w * float(b) for item, b in zip(items, z, strict=True)}

    def score_items(
        self, users: Sequence[int | None], histories: Sequence[Sequence[int]], items: Sequence[Sequence[int]]
    ) -> list[dict[int, float]]:
        """Exact log p(item | sequential prompt) for given items of each user (teacher forcing)."""
        prompts = [self.builder.sequential(u, h) for u, h in zip(users, histories, strict=True)]
        return self._likelihoods("sequential", prompts, [list(i) for i in items], [])

    def _likelihoods(
        self, task: str, prompts: list[tuple[list[int], list[int]]], targets: list[list[int]],
        extra: list[np.ndarray],
    ) -> list[dict[int, float]]:
        out: list[dict[int, float]] = []
        widest = max((len(t) for t in targets), default=1)
        per_chunk = max(1, self.max_rows // max(widest, 1))
        for start in range(0, len(prompts), per_chunk):
            end = start + per_chunk
            out.extend(self._score_chunk(task, prompts[start:end], targets[start:end], extra))
        return out

    def _score_chunk(
        self, task: str, prompts: list[tuple[list[int], list[int]]], orders: list[list[int]],
        extra: list[np.ndarray],
    ) -> list[dict[int, float]]:
        extra_omega = torch.from_numpy(np.stack(extra)).to(self.device) if extra else None
        batch = pad_encoder(prompts).to(self.device)
        g = max(max(len(o) for o in orders), 1)
        t = max((len(self.item_labels[i]) for o in orders for i in o), default=1)
        labels = np.zeros((len(orders), g, t), dtype=np.int64)
        valid = np.zeros((len(orders), g, t), dtype=bool)
        dec_in = np.full((len(orders), g, t), PAD_ID, dtype=np.int64)
        for b, order in enumerate(orders):
            for j, item in enumerate(order):
                lab, tok = self.item_labels[item], self.item_tokens[item]
                labels[b, j, : len(lab)] = lab
                valid[b, j, : len(lab)] = True
                dec_in[b, j, 1 : len(tok)] = tok[:-1]
        with self._mode():
            cross = self.runner.encode(task, batch, extra_omega)
            logp, _ = self.runner.decode(torch.from_numpy(dec_in).to(self.device), cross, None)
            lab_t = torch.from_numpy(labels).to(self.device)
            picked = logp.gather(-1, lab_t.unsqueeze(-1)).squeeze(-1)
            picked = picked * torch.from_numpy(valid).to(self.device)
            totals = picked.sum(-1).cpu().numpy()
        return [
            {item: float(totals[b, j]) for j, item in enumerate(order)} for b, order in enumerate(orders)
        ]

    def rank_direct(
        self, user: int | None, candidates: Sequence[int], k: int, user_row: np.ndarray | None = None,
        history: Sequence[int] | None = None,
    ) -> list[Scored]:
        """Top-k candidates by ranking score (ties: lower dense index first, deterministic)."""
        scores = self.score_direct([user], [candidates], [user_row], histories=[history])[0]
        return [Scored(i, s) for i, s in top_k_items(scores, k)]

    # -- sequential recommendation ------------------------------------------------------------
    def beam_sequential(
        self, users: Sequence[int | None], histories: Sequence[Sequence[int]], beam: int, pure: bool = False
    ) -> list[list[Scored]]:
        """Beam search constrained to real items; per user up to `beam` items, best first.

        With a graph prior (and not `pure`), the beam's items plus the `pool` items with the best graph
        score are rescored: exact log p(item | prompt) + w · z(graph score), best first.
        """
        generated = self._beam_all(users, histories, beam)
        prior = self.prior
        if pure or prior is None or not (prior.sequential_weight or prior.pool):
            return generated
        pools = [prior.sequential_pool(h, [s.item for s in g]) for h, g in zip(histories, generated,
                                                                                 strict=True)]
        exact = self.score_items(users, histories, [p for p, _ in pools])
        out: list[list[Scored]] = []
        for scores, (items, graph) in zip(exact, pools, strict=True):
            combined = {i: scores[i] + prior.sequential_weight * float(z)
                        for i, z in zip(items, prior.standardised(graph), strict=True)}
            out.append([Scored(i, s) for i, s in top_k_items(combined)])
        return out

    def _beam_all(
        self, users: Sequence[int | None], histories: Sequence[Sequence[int]], beam: int
    ) -> list[list[Scored]]:
        out: list[list[Scored]] = []
        per_chunk = max(1, self.max_rows // max(beam, 1))
        for start in range(0, len(users), per_chunk):
            out.extend(
                self._beam_chunk(users[start : start + per_chunk], histories[start : start + per_chunk], beam)
            )
        return out

    def _beam_chunk(
        self, users: Sequence[int | None], histories: Sequence[Sequence[int]], beam: int
    ) -> list[list[Scored]]:
        rows = [self.builder.sequential(u, h) for u, h in zip(users, histories, strict=True)]
        batch = pad_encoder(rows).to(self.device)
        b = len(rows)
        vocab = self.trie.children.shape[1]
        nodes = np.zeros((b, 1), dtype=np.int64)
        scores = torch.zeros((b, 1), device=self.device)
        tokens = torch.full((b, 1, 1), PAD_ID, dtype=torch.long, device=self.device)
        past: SelfCache | None = None
        label_to_token = torch.from_numpy(self.label_to_token).to(self.device)
        with self._mode():
            cross = self.runner.encode("sequential", batch, None)
            done: list[list[tuple[float, int]]] = [[] for _ in range(b)]  # finished (score, item)
            for _ in range(self.trie.max_depth):
                alive = torch.isfinite(scores).cpu().numpy()
                if not alive.any() or all(
                    len(done[r]) >= beam and (not alive[r].any() or float(scores[r].max()) <= done[r][-1][0])
                    for r in range(b)
                ):
                    break  # scores only fall: no running beam can beat a full finished list
                g = nodes.shape[1]
                step, past = self.runner.decode(tokens, cross, past)
                logp = step[:, :, -1]  # (B, G, V)
                children = self.trie.allowed(nodes.reshape(-1)).reshape(b, g, vocab)
                allowed = torch.from_numpy(children > 0).to(self.device)
                cand = torch.where(allowed, scores.unsqueeze(-1) + logp, torch.tensor(-torch.inf))
                top = torch.topk(cand.reshape(b, -1), k=min(2 * beam, g * vocab), dim=-1)
                top_scores = top.values.float().cpu().numpy()
                top_index = top.indices.cpu().numpy()
                src = np.zeros((b, beam), dtype=np.int64)
                tok = np.zeros((b, beam), dtype=np.int64)
                new_nodes = np.zeros((b, beam), dtype=np.int64)
                new_scores = np.full((b, beam), -np.inf, dtype=np.float32)
                flat_children = children.reshape(b, g * vocab)
                for r in range(b):
                    kept = 0
                    for score, index in zip(top_scores[r], top_index[r], strict=True):
                        if not np.isfinite(score) or kept == beam:
                            break
                        node = int(flat_children[r, index]) - 1
                        item = int(self.trie.leaf_item[node])
                        if item >= 0:  # EOS taken: a finished item, kept apart from the running beams
                            done[r].append((float(score), item))
                            done[r].sort(key=lambda x: -x[0])
                            del done[r][beam:]
                            continue
                        src[r, kept], tok[r, kept] = index // vocab, index % vocab
                        new_nodes[r, kept], new_scores[r, kept] = node, score
                        kept += 1
                nodes = new_nodes
                scores = torch.from_numpy(new_scores).to(self.device)
                index_t = torch.from_numpy(src).to(self.device)
                past = [(_pick(k, index_t), _pick(v, index_t)) for k, v in past]
                tokens = label_to_token[torch.from_numpy(tok).to(self.device)].unsqueeze(-1)
        return [[Scored(item, score) for score, item in finished_items] for finished_items in done]

    def recommend_sequential(
        self,
        users: Sequence[int | None],
        histories: Sequence[Sequence[int]],
        k: int,
        extra: int,
        filter_history: bool = True,
        beam: int | None = None,
    ) -> list[list[Scored]]:
        """History-filtering reranking: generate k+N with a beam >= max(20, k+N), drop history, keep k."""
        width = max(beam or 20, k + extra)
        generated = self.beam_sequential(users, histories, width)
        return [
            filter_rerank(items, hist, k, extra, filter_history)
            for hist, items in zip(histories, generated, strict=True)
        ]


def filter_rerank(
    generated: Sequence[Scored], history: Sequence[int], k: int, extra: int, filter_history: bool
) -> list[Scored]:
    """The paper's reranking (Eq. 12): keep the first k+N generated, drop history items, return k."""
    pool = list(generated[: k + extra])
    if filter_history:
        seen = set(history)
        pool = [s for s in pool if s.item not in seen]
    return pool[:k]


def _pick(cache: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Select beams (B, K) from a per-beam tensor (B, G, ...)."""
    shape = index.shape + (1,) * (cache.dim() - 2)
    return torch.gather(cache, 1, index.view(shape).expand(*index.shape, *cache.shape[2:]))
