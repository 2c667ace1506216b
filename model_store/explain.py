"""Explanation generation: review-like text for a (user, item) pair, decoded over the whole T5 vocabulary.

The encoder input is the explanation prompt the model was trained on (`PromptBuilder.explanation`: the
task's prompt vectors, then `user_u item_i` with their Ω whole-word rows, `ElmrecModel.encode`); the
decoding is transformers' `generate` on the bundle's T5 given those encoder states (greedy, or beam
search with `beams` > 1), so the decoder, its output scaling and the tied output embedding are the ones
the training loss used.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from model_store.engine import InferenceEngine
from model_store.model import ElmrecModel
from model_store.prompts import PromptBuilder, pad_encoder

# Training keeps the first 64 tokens of a review (`training.trainer.load_reviews`), then EOS.
MAX_EXPLANATION_TOKENS = 64
MAX_BEAMS = 8


def carries_explanation(metrics: Mapping[str, Any]) -> bool:
    """Whether a bundle's model was trained on the explanation task (metrics.json records its examples)."""
    training = metrics.get("training")
    return isinstance(training, Mapping) and int(training.get("explanation_examples") or 0) > 0


class Explainer:
    """Generates explanations with an `ElmrecModel`; stateless apart from the model (not thread-safe)."""

    def __init__(
        self, model: ElmrecModel, builder: PromptBuilder, tokenizer: PreTrainedTokenizerBase,
        device: torch.device | str = "cpu",
    ) -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.builder = builder
        self.tokenizer = tokenizer

    @classmethod
    def from_engine(cls, engine: InferenceEngine, tokenizer: PreTrainedTokenizerBase) -> Explainer:
        """An explainer sharing the engine's model (same weights, same device) and prompt builder."""
        return cls(engine.model, engine.builder, tokenizer, engine.device)

    @contextlib.contextmanager
    def _mode(self) -> Iterator[None]:
        autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                    else contextlib.nullcontext())
        with torch.inference_mode(), autocast:
            yield

    def generate_ids(
        self, users: Sequence[int], items: Sequence[int], max_tokens: int = MAX_EXPLANATION_TOKENS,
        beams: int = 1,
    ) -> list[list[int]]:
        """Generated token ids per (user, item) pair (dense indices), without the start token and EOS.

        At most `max_tokens` tokens each (1..MAX_EXPLANATION_TOKENS); `beams` 1 = greedy decoding.
        """
        if len(users) != len(items):
            raise ValueError(f"{len(users)} users but {len(items)} items: one item per user is needed")
        if not 1 <= max_tokens <= MAX_EXPLANATION_TOKENS:
            raise ValueError(f"max_tokens must be in 1..{MAX_EXPLANATION_TOKENS}, got {max_tokens}")
        if not 1 <= beams <= MAX_BEAMS:
            raise ValueError(f"beams must be in 1..{MAX_BEAMS}, got {beams}")
        if not users:
            return []
        batch = pad_encoder([self.builder.explanation(u, i) for u, i in zip(users, items, strict=True)])
        batch = batch.to(self.device)
        t5 = self.model.t5
        with self._mode():
            states, mask = self.model.encode("explanation", batch.input_ids, batch.attention_mask, batch.ww)
            out = t5.generate(
                encoder_outputs=BaseModelOutput(last_hidden_state=states),
                attention_mask=mask,
                max_new_tokens=max_tokens,
                num_beams=beams,
                do_sample=False,
                use_cache=True,
                decoder_start_token_id=t5.config.decoder_start_token_id,
                eos_token_id=t5.config.eos_token_id,
                pad_token_id=t5.config.pad_token_id,
            )
        special = {t5.config.pad_token_id, t5.config.eos_token_id}
        rows: list[list[int]] = []
        for row in out[:, 1:].tolist():  # drop the decoder start token
            end = row.index(t5.config.eos_token_id) if t5.config.eos_token_id in row else len(row)
            rows.append([t for t in row[:end] if t not in special])
        return rows

    def generate(
        self, users: Sequence[int], items: Sequence[int], max_tokens: int = MAX_EXPLANATION_TOKENS,
        beams: int = 1,
    ) -> list[str]:
        """The explanation text of each (user, item) pair (see `generate_ids`)."""
        ids = self.generate_ids(users, items, max_tokens, beams)
        return [text.strip() for text in self.tokenizer.batch_decode(ids, skip_special_tokens=True)]
