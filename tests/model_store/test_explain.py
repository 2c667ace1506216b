"""Explanation generation: the model's own greedy decoding, trained text reproduced, bounds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from review_fixture import review_text

from model_store.bundle import Bundle, load_bundle
from model_store.explain import MAX_EXPLANATION_TOKENS, Explainer, carries_explanation
from model_store.model import EOS_ID, PAD_ID
from model_store.prompts import load_tokenizer, pad_encoder


@pytest.fixture(scope="module")
def explained(explained_bundle: Path) -> Bundle:
    return load_bundle(explained_bundle)


@pytest.fixture(scope="module")
def explainer(explained: Bundle) -> Explainer:
    return Explainer.from_engine(explained.engine("cpu"), load_tokenizer(explained.tokenizer_dir()))


def test_bundles_say_whether_they_carry_the_task(explained: Bundle, tiny_bundle: Path) -> None:
    assert carries_explanation(explained.metrics)
    assert not carries_explanation(load_bundle(tiny_bundle).metrics)
    assert not carries_explanation({})
    assert not carries_explanation({"training": {"explanation_examples": 0}})


def test_greedy_generation_is_the_models_own_argmax_decoding(explainer: Explainer, explained: Bundle) -> None:
    """transformers' generate on the encoder states = step-by-step argmax of ElmrecModel's own logits."""
    users = [0, 1, 2, 3]
    items = [explained.data.sequences[u][-1] for u in users]
    generated = explainer.generate_ids(users, items, max_tokens=12)
    model = explainer.model
    batch = pad_encoder([explainer.builder.explanation(u, i) for u, i in zip(users, items, strict=True)])
    with torch.inference_mode():
        states, mask = model.encode("explanation", batch.input_ids, batch.attention_mask, batch.ww)
        for row, expected in enumerate(generated):
            tokens = [PAD_ID]
            for _ in range(12):
                hidden = model.decoder_states(states[row : row + 1], mask[row : row + 1],
                                              torch.tensor([tokens]))
                tokens.append(int(model.logits(hidden[:, -1], restricted=False).argmax()))
                if tokens[-1] == EOS_ID:
                    break
            assert [t for t in tokens[1:] if t != EOS_ID] == expected
    assert any(generated)


def test_trained_model_writes_the_held_out_pairs_review(explainer: Explainer, explained: Bundle) -> None:
    """Test pairs' reviews were never trained on; the fixture's text is learnable from the item alone."""
    users = list(range(explained.codec.n_users))
    items = [explained.data.sequences[u][-1] for u in users]
    texts = explainer.generate(users, items)
    hits = sum(text == review_text(explained.codec.items[i]) for text, i in zip(texts, items, strict=True))
    assert hits >= 0.6 * len(users), texts[:5]
    beamed = explainer.generate(users[:3], items[:3], beams=4)
    assert len(beamed) == 3 and all(beamed)


def test_lengths_and_beams_are_bounded(explainer: Explainer) -> None:
    assert all(len(ids) <= 3 for ids in explainer.generate_ids([0, 1], [0, 1], max_tokens=3))
    assert explainer.generate([], []) == []
    for kwargs in ({"max_tokens": 0}, {"max_tokens": MAX_EXPLANATION_TOKENS + 1}, {"beams": 0}):
        with pytest.raises(ValueError):
            explainer.generate([0], [0], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="one item per user"):
        explainer.generate([0, 1], [0])
