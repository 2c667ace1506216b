"""Turn users, histories and candidates into encoder inputs (token ids + whole-word ids) and targets."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from model_store.model import EOS_ID, PAD_ID

TOKENIZER_DIR = Path(__file__).parent / "assets" / "t5_tokenizer"


def load_tokenizer(path: Path | None = None) -> PreTrainedTokenizerBase:
    """The real t5-small tokenizer shipped with the project (or the copy inside a bundle)."""
    return AutoTokenizer.from_pretrained(str(path or TOKENIZER_DIR))


@dataclass
class EncoderBatch:
    """Padded encoder inputs for one task."""

    input_ids: torch.Tensor  # (B, T)
    attention_mask: torch.Tensor  # (B, T)
    ww: torch.Tensor  # (B, T) whole-word ids, see ElmrecModel

    def to(self, device: torch.device | str) -> EncoderBatch:
        return EncoderBatch(self.input_ids.to(device), self.attention_mask.to(device), self.ww.to(device))


class IdTokens:
    """Token ids of every `user_<n>` / `item_<n>` string, tokenized once (ids tokenize independently)."""

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, user_numbers: Sequence[int], item_numbers: Sequence[int]
    ) -> None:
        self.users = tokenize_ids(tokenizer, [f"user_{n}" for n in user_numbers])
        # Users the bundle never saw share one id string, one past the largest known number.
        self.cold_user = tokenize_ids(tokenizer, [f"user_{max(user_numbers, default=0) + 1}"])[0]
        self.items = tokenize_ids(tokenizer, [f"item_{n}" for n in item_numbers])
        prefix = self.items[0][:2] if self.items else []
        if any(tokens[:2] != prefix or len(tokens) < 3 for tokens in self.items):
            raise ValueError("item ids do not share the `item_` token prefix; the tokenizer is not T5's")
        self.item_prefix = prefix
        # Target of an item: the tokens after `item_`, then EOS (the shared prefix carries no information).
        self.targets = [[*tokens[2:], EOS_ID] for tokens in self.items]

    @property
    def output_tokens(self) -> list[int]:
        """Every token that can appear in an item target."""
        return sorted({t for target in self.targets for t in target})


def tokenize_ids(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens."""
    if not texts:
        return []
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


class PromptBuilder:
    """Builds the encoder inputs of the three tasks, as in POD/ELMRec (Eq. 9-11 of the paper)."""

    def __init__(self, id_tokens: IdTokens, n_users: int, max_history: int, max_whole_word: int) -> None:
        self.tokens = id_tokens
        self.n_users = n_users
        self.max_history = max_history
        self.max_whole_word = max_whole_word

    def user_tokens(self, user: int | None) -> list[int]:
        return list(self.tokens.cold_user if user is None else self.tokens.users[user])

    def direct(
        self, user: int | None, candidates: Sequence[int], cold_slot: int = 0
    ) -> tuple[list[int], list[int]]:
        """`user_u item_a item_b ...`; whole-word ids point at the Ω rows of the user and each item.

        A cold user (None) points at row `cold_slot` of the extra Ω rows passed to the model.
        """
        n_items = len(self.tokens.items)
        ids = self.user_tokens(user)
        row = self.n_users + n_items + cold_slot if user is None else user
        ww = [row + 1] * len(ids)
        for item in candidates:
            toks = self.tokens.items[item]
            ids += toks
            ww += [self.n_users + item + 1] * len(toks)
        return [*ids, EOS_ID], [*ww, 0]

    def sequential(self, user: int | None, history: Sequence[int]) -> tuple[list[int], list[int]]:
        """`user_u item_1 ... item_n` (last `max_history` items); incremental whole-word ids #0, #1.."""
        recent = list(history)[-self.max_history :] if self.max_history > 0 else list(history)
        ids = self.user_tokens(user)
        ww = [1] * len(ids)
        for position, item in enumerate(recent, start=1):
            toks = self.tokens.items[item]
            ids += toks
            ww += [min(position, self.max_whole_word - 1) + 1] * len(toks)
        return [*ids, EOS_ID], [*ww, 0]

    def explanation(self, user: int, item: int) -> tuple[list[int], list[int]]:
        """`user_u item_i`, both with their Ω rows."""
        return self.direct(user, [item])


def pad_encoder(rows: Sequence[tuple[list[int], list[int]]]) -> EncoderBatch:
    """Right-pad (ids, ww) rows into an EncoderBatch."""
    width = max(len(ids) for ids, _ in rows)
    input_ids = np.full((len(rows), width), PAD_ID, dtype=np.int64)
    ww = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for r, (ids, w) in enumerate(rows):
        input_ids[r, : len(ids)] = ids
        ww[r, : len(w)] = w
        mask[r, : len(ids)] = 1
    return EncoderBatch(torch.from_numpy(input_ids), torch.from_numpy(mask), torch.from_numpy(ww))


def pad_labels(targets: Sequence[Sequence[int]]) -> torch.Tensor:
    """Right-pad target token lists with -100."""
    width = max(len(t) for t in targets)
    out = np.full((len(targets), width), -100, dtype=np.int64)
    for r, t in enumerate(targets):
        out[r, : len(t)] = t
    return torch.from_numpy(out)
