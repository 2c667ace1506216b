"""The items model kind: nothing it predicts is visible to it, and its engine ranks exactly."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model_store.bundle import DIRECT_MODEL_FILE, load_bundle
from model_store.config import ModelConfig
from model_store.item_engine import ItemInferenceEngine
from model_store.item_model import BOS, OFFSET, ItemElmrecModel, decoder_tokens, sequence_batch

N_ITEMS = 40


def _model(dropout: float = 0.0, use_omega: bool = True) -> ItemElmrecModel:
    torch.manual_seed(0)
    config = ModelConfig(kind="items", d_model=16, d_ff=32, d_kv=4, num_layers=1, num_decoder_layers=2,
                         num_heads=4, dropout=dropout, omega_dim=6, n_prompts=2, use_omega=use_omega)
    omega = torch.randn(N_ITEMS, 6)
    return ItemElmrecModel(config, omega).eval()


def test_changing_item_t_plus_1_leaves_every_score_up_to_t_unchanged() -> None:
    """The leak test of sequence-level training: position t's logits (which predict item t+1) do not
    move when the decoder input at t+1 (the item it predicts) changes; position t+1's do."""
    model = _model()
    seq = [3, 17, 5, 22, 9, 30]
    tokens, _ = sequence_batch([seq], max_len=50)
    changed = tokens.clone()
    t = 3  # decoder position t reads items up to seq[t-1] and is trained to predict seq[t]
    changed[0, t + 1] = 11 + OFFSET  # the input that follows position t (item seq[t], its target)
    with torch.no_grad():
        before, table = model.states(tokens)
        after, _ = model.states(changed)
    logits_before, logits_after = before @ table.T, after @ table.T
    torch.testing.assert_close(logits_before[0, : t + 1], logits_after[0, : t + 1], rtol=0, atol=0)
    assert not torch.allclose(logits_before[0, t + 1], logits_after[0, t + 1])


def test_training_inputs_hold_only_items_before_each_target() -> None:
    """Teacher forcing over a whole sequence: the input at position p is BOS or the target of p-1."""
    seqs = [[4, 8, 15, 16, 23, 42 % N_ITEMS], [7, 1], [9]]
    tokens, targets = sequence_batch(seqs, max_len=4)
    for n, seq in enumerate(seqs):
        kept = seq[-4:]
        assert targets[n, : len(kept)].tolist() == kept
        assert (targets[n, len(kept):] == -100).all()
        assert tokens[n, 0] == BOS
        assert (tokens[n, 1 : len(kept)] - OFFSET).tolist() == kept[:-1]


def test_the_encoder_sees_no_history() -> None:
    """The decoder's cross-attention context is the same for every history (prompt vectors only)."""
    model = _model()
    with torch.no_grad():
        context = model.context(3)
    assert torch.equal(context[0], context[1]) and torch.equal(context[1], context[2])


def test_graph_words_enter_the_item_table_only_when_omega_is_on() -> None:
    with_omega, without = _model(), _model(use_omega=False)
    assert with_omega.graph_words().abs().sum() > 0
    assert without.graph_words().abs().sum() == 0
    torch.testing.assert_close(without.item_table(), without.tokens.weight[OFFSET:])


def test_engine_scores_are_the_exact_next_item_distribution() -> None:
    model = _model()
    engine = ItemInferenceEngine(model, max_history=5)
    histories = [[1, 2, 3], [], list(range(10, 20))]
    tokens, lengths = decoder_tokens(histories, 5)
    with torch.no_grad():
        logp = torch.log_softmax(model.next_item_logits(tokens, lengths), -1).numpy()
    assert lengths.tolist() == [4, 1, 6]  # BOS + at most max_history items
    candidates = [[5, 6, 7], [0, 39], [1, 2, 3, 4]]
    scores = engine.score_direct([0, None, 2], candidates, pure=True, histories=histories)
    for n, cands in enumerate(candidates):
        assert scores[n] == pytest.approx({c: float(logp[n, c]) for c in cands}, abs=1e-5)
    top = engine.beam_sequential([0, None, 2], histories, beam=7, pure=True)
    for n, row in enumerate(top):
        expected = sorted(range(N_ITEMS), key=lambda i: (-logp[n, i], i))[:7]
        assert [s.item for s in row] == expected
    with pytest.raises(ValueError, match="history"):
        engine.score_direct([0], [[1, 2]], pure=True)


def test_filtered_recommendations_drop_the_whole_history() -> None:
    """With N >= the history's length (the bundle's rerank_n for this kind), filtering is exact."""
    engine = ItemInferenceEngine(_model(), max_history=50)
    history = list(range(25))
    kept = engine.recommend_sequential([None], [history], k=10, extra=len(history))[0]
    assert len(kept) == 10 and not {s.item for s in kept} & set(history)
    full = engine.beam_sequential([None], [history], beam=N_ITEMS, pure=True)[0]
    assert [s.item for s in kept] == [s.item for s in full if s.item not in history][:10]


def test_items_bundle_serves_direct_from_its_direct_weights(tiny_items_bundle: Path) -> None:
    """Per-task selection: the bundle carries direct's own weights and the engine scores direct with them."""
    bundle = load_bundle(tiny_items_bundle)
    assert bundle.config.model.kind == "items"
    assert (tiny_items_bundle / DIRECT_MODEL_FILE).is_file()
    engine = bundle.engine("cpu")
    assert isinstance(engine, ItemInferenceEngine)
    history = bundle.data.sequences[0][:-1]
    direct = engine.score_direct([0], [list(range(10))], pure=True, histories=[history])[0]
    sequential = engine.score_items([0], [history], [list(range(10))])[0]
    direct_model = bundle.load_weights(DIRECT_MODEL_FILE)
    same = all(torch.equal(a, b) for a, b in zip(direct_model.state_dict().values(),
                                                 engine.net.state_dict().values(), strict=True))
    assert (direct == pytest.approx(sequential)) == same
    assert np.isfinite(list(direct.values())).all()


def test_the_prior_rescoring_reuses_the_ranking_pass() -> None:
    """beam_sequential with a graph prior asks for the same histories twice: one decoder pass."""
    engine = ItemInferenceEngine(_model(), max_history=5)
    first = engine.log_probs([[1, 2], [3]])
    assert engine.log_probs([[1, 2], [3]]) is first
    other = engine.log_probs([[1, 2], [4]])
    assert other is not first and not np.array_equal(other[1], first[1])
    np.testing.assert_array_equal(other[0], first[0])
