"""The inference engine: exact direct scores, exact beam search when the beam covers all items, reranking."""

from __future__ import annotations

from pathlib import Path

import torch

from model_store.bundle import load_bundle
from model_store.engine import Scored, filter_rerank
from model_store.model import PAD_ID
from model_store.prompts import pad_encoder


def _reference_logp(engine, task: str, user: int, rows, item: int) -> float:
    """log p(item) by the plain transformers decoder, teacher forced, full recomputation."""
    model = engine.model
    batch = pad_encoder([rows])
    tokens = engine.item_tokens[item]
    labels = torch.tensor([engine.item_labels[item]])
    dec_in = torch.tensor([[PAD_ID, *tokens[:-1]]])
    with torch.no_grad():
        states, mask = model.encode(task, batch.input_ids, batch.attention_mask, batch.ww)
        hidden = model.decoder_states(states, mask, dec_in)
        logp = torch.log_softmax(model.logits(hidden, model.config.restrict_vocab), -1)
    return float(logp.gather(-1, labels.unsqueeze(-1)).sum())


def test_direct_scores_equal_teacher_forced_likelihood(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    engine = bundle.engine("cpu")
    user, candidates = 3, [0, 5, 7, 11, 2]
    scores = engine.score_direct([user], [candidates])[0]
    order = engine.candidate_order(user, candidates)
    rows = engine.builder.direct(user, order)
    for item in candidates:
        assert abs(scores[item] - _reference_logp(engine, "direct", user, rows, item)) < 1e-4


def test_direct_scores_do_not_depend_on_batching(tiny_bundle: Path) -> None:
    engine = load_bundle(tiny_bundle).engine("cpu")
    users = [0, 1, 2, 3]
    cands = [[1, 2, 3], [4, 5, 6, 7, 8], [9], [10, 11]]
    together = engine.score_direct(users, cands)
    alone = [engine.score_direct([u], [c])[0] for u, c in zip(users, cands, strict=True)]
    for a, b in zip(together, alone, strict=True):
        assert a.keys() == b.keys()
        assert all(abs(a[i] - b[i]) < 1e-5 for i in a)


def test_candidate_order_ignores_request_order(tiny_bundle: Path) -> None:
    engine = load_bundle(tiny_bundle).engine("cpu")
    a = engine.score_direct([2], [[1, 5, 9, 12]])[0]
    b = engine.score_direct([2], [[12, 9, 5, 1]])[0]
    assert a == b


def test_beam_covering_all_items_is_exact(tiny_bundle: Path) -> None:
    """With a beam as wide as the catalogue, beam search returns every item with its exact likelihood."""
    bundle = load_bundle(tiny_bundle)
    engine = bundle.engine("cpu")
    n_items = bundle.codec.n_items
    user, history = 4, bundle.data.sequences[4][:-1]
    got = engine.beam_sequential([user], [history], beam=n_items)[0]
    rows = engine.builder.sequential(user, history)
    want = {i: _reference_logp(engine, "sequential", user, rows, i) for i in range(n_items)}
    assert sorted(s.item for s in got) == list(range(n_items))
    for s in got:
        assert abs(s.score - want[s.item]) < 1e-4
    assert [s.score for s in got] == sorted((s.score for s in got), reverse=True)


def test_beam_results_do_not_depend_on_batching(tiny_bundle: Path) -> None:
    bundle = load_bundle(tiny_bundle)
    engine = bundle.engine("cpu")
    users = [0, 1, 2]
    hists = [bundle.data.sequences[u][:-1] for u in users]
    batched = engine.beam_sequential(users, hists, beam=5)
    for u, h, b in zip(users, hists, batched, strict=True):
        assert len(b) == 5 and len({s.item for s in b}) == 5
        alone = engine.beam_sequential([u], [h], beam=5)[0]
        assert [s.item for s in alone] == [s.item for s in b]
        assert all(abs(x.score - y.score) < 1e-5 for x, y in zip(alone, b, strict=True))


def test_filter_rerank_drops_history_and_keeps_order() -> None:
    generated = [Scored(i, -float(n)) for n, i in enumerate([4, 1, 7, 3, 9, 2])]
    assert [s.item for s in filter_rerank(generated, [1, 3], k=3, extra=2, filter_history=True)] == [4, 7, 9]
    assert [s.item for s in filter_rerank(generated, [1, 3], k=3, extra=2, filter_history=False)] == [4, 1, 7]
    # only the first k+N generated items are eligible (Eq. 12)
    assert [s.item for s in filter_rerank(generated, [4, 1, 7], k=3, extra=1, filter_history=True)] == [3]


def test_cold_start_user_scores_with_a_folded_in_row(tiny_bundle: Path) -> None:
    import numpy as np

    from model_store.omega import fold_in

    bundle = load_bundle(tiny_bundle)
    engine = bundle.engine("cpu")
    row = fold_in(bundle.omega, np.array([4, 5]), side="user")
    scores = engine.score_direct([None], [[1, 2, 3]], [row])[0]
    assert sorted(scores) == [1, 2, 3] and all(np.isfinite(list(scores.values())))
    other = engine.score_direct([None], [[1, 2, 3]], [row * 0 + 1.0])[0]
    assert other != scores  # the folded-in row is what the prompt carries


def test_graph_prior_adds_weighted_standardised_graph_scores(tiny_bundle: Path) -> None:
    import numpy as np

    from model_store.engine import GraphPrior

    bundle = load_bundle(tiny_bundle)
    engine = bundle.engine("cpu")
    engine.prior = GraphPrior(bundle.omega, direct_weight=2.0)
    user, cands = 5, [0, 3, 6, 9, 12]
    pure = engine.score_direct([user], [cands], pure=True)[0]
    served = engine.score_direct([user], [cands])[0]
    graph = bundle.omega.items[cands] @ bundle.omega.users[user]
    z = (graph - graph.mean()) / graph.std()
    for item, bonus in zip(cands, z, strict=True):
        assert abs(served[item] - (pure[item] + 2.0 * bonus)) < 1e-6
    engine.prior = GraphPrior(bundle.omega)  # weights 0: the T5 alone
    assert engine.score_direct([user], [cands])[0] == pure
    assert np.isfinite(list(served.values())).all()


def test_sequential_prior_rescores_beam_and_graph_pool_exactly(tiny_bundle: Path) -> None:
    from model_store.engine import GraphPrior

    bundle = load_bundle(tiny_bundle)
    engine = bundle.engine("cpu")
    user, history = 2, bundle.data.sequences[2][:-1]
    engine.prior = GraphPrior(bundle.omega, sequential_weight=0.0, pool=6)
    pooled = engine.beam_sequential([user], [history], beam=4)[0]
    beam = engine.beam_sequential([user], [history], beam=4, pure=True)[0]
    assert {s.item for s in beam} <= {s.item for s in pooled} and len(pooled) > len(beam)
    exact = engine.score_items([user], [history], [[s.item for s in pooled]])[0]
    for s in pooled:  # weight 0: the pool is ranked by the exact likelihood
        assert abs(s.score - exact[s.item]) < 1e-5
    for s in beam:
        assert abs(s.score - exact[s.item]) < 1e-4
