"""The inference engine for the item-vocabulary model: exact scores of every item in one decoder pass.

Same interface and graph-prior logic as `InferenceEngine` (it subclasses it), so the evaluator and the
service run it unchanged: direct scores are log p(candidate | history); sequential "generation" is the exact
top of the full distribution (no beam approximation). A bundle may carry a second set of weights selected
on direct validation (`direct_model`); direct scores then come from it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from typing_extensions import override

from model_store.engine import GraphPrior, InferenceEngine, Scored
from model_store.item_model import ItemElmrecModel, decoder_tokens
from model_store.topk import top_k_indices


class ItemInferenceEngine(InferenceEngine):
    """Ranks with an `ItemElmrecModel` (histories in, log-probabilities over all items out)."""

    def __init__(
        self,
        model: ItemElmrecModel,
        max_history: int,
        device: torch.device | str = "cpu",
        seed: int = 0,
        max_rows: int = 512,
        prior: GraphPrior | None = None,
        direct_model: ItemElmrecModel | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.net = model.to(self.device).eval()
        self.direct_net = direct_model.to(self.device).eval() if direct_model is not None else self.net
        self.max_history = max_history
        self.seed = seed
        self.max_rows = max_rows
        self.prior = prior
        self._last: tuple[object, np.ndarray] | None = None  # the previous call's key and result

    def log_probs(
        self, histories: Sequence[Sequence[int]], model: ItemElmrecModel | None = None
    ) -> np.ndarray:
        """log p(next item | history) of every item (B, n_items), in chunks of `max_rows` histories.

        The previous call's result is reused for the same model and histories (the graph prior's
        rescoring asks again for the histories it just ranked)."""
        net = model or self.net
        key = (id(net), tuple(tuple(int(i) for i in h[-self.max_history :]) for h in histories))
        if self._last is not None and self._last[0] == key:
            return self._last[1]
        out: list[np.ndarray] = []
        with self._mode():
            for start in range(0, len(histories), self.max_rows):
                tokens, lengths = decoder_tokens(histories[start : start + self.max_rows], self.max_history)
                logits = net.next_item_logits(tokens.to(self.device), lengths.to(self.device))
                out.append(torch.log_softmax(logits, dim=-1).cpu().numpy())
        result = np.concatenate(out) if out else np.zeros((0, net.n_items), dtype=np.float32)
        self._last = (key, result)
        return result

    # -- direct -----------------------------------------------------------------------------
    @override
    def score_direct(
        self,
        users: Sequence[int | None],
        candidates: Sequence[Sequence[int]],
        user_rows: Sequence[np.ndarray | None] | None = None,
        pure: bool = False,
        histories: Sequence[Sequence[int] | None] | None = None,
    ) -> list[dict[int, float]]:
        """log p(candidate | history), + w · z(graph score) with a prior unless `pure`; needs histories."""
        if histories is None or any(h is None for h in histories):
            raise ValueError("the item-vocabulary model scores candidates from the user's history")
        hists = [list(h or ()) for h in histories]
        logp = self.log_probs(hists, self.direct_net)
        out = [{int(c): float(logp[n, int(c)]) for c in cands} for n, cands in enumerate(candidates)]
        if pure:
            return out
        rows = list(user_rows) if user_rows is not None else [None] * len(users)
        return [self.with_graph(u, s, None, r, h)
                for u, s, r, h in zip(users, out, rows, hists, strict=True)]

    # -- sequential -------------------------------------------------------------------------
    @override
    def score_items(
        self, users: Sequence[int | None], histories: Sequence[Sequence[int]], items: Sequence[Sequence[int]]
    ) -> list[dict[int, float]]:
        """Exact log p(item | history) of the given items."""
        logp = self.log_probs(histories)
        return [{int(i): float(logp[n, int(i)]) for i in row} for n, row in enumerate(items)]

    @override
    def _beam_all(
        self, users: Sequence[int | None], histories: Sequence[Sequence[int]], beam: int
    ) -> list[list[Scored]]:
        """The exact `beam` most likely items of each history (ties: lower dense index first)."""
        return [[Scored(int(i), float(row[i])) for i in top_k_indices(row, beam)]
                for row in self.log_probs(histories)]
