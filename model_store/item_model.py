"""ELMRec with an item vocabulary: one graph-aware whole-word token per item, causal T5 decoder, full softmax.

Each item is one whole word: its embedding is a learned token vector plus α · W · Ω_item (the frozen,
train-only graph row, projected), shared by the decoder input and the tied output layer. The decoder reads
[BOS] + the history and predicts the next item at every position (teacher forcing over the whole sequence);
the encoder reads only the task's continuous prompt vectors, a constant, so nothing the decoder predicts at
position t can reach position <= t through cross-attention. Ranking is exact: the last position's logits
over all items (sequential), the same distribution at the candidates (direct).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import T5Config
from transformers.models.t5.modeling_t5 import T5Stack

from model_store.config import ModelConfig

PAD = 0  # decoder padding token
BOS = 1  # decoder start token
OFFSET = 2  # token of item i is i + OFFSET


class ItemElmrecModel(nn.Module):
    """T5 decoder over item tokens (token + α·W·Ω_item), prompt-only encoder, tied full-softmax item head."""

    omega_items: torch.Tensor

    def __init__(self, config: ModelConfig, omega_items: torch.Tensor) -> None:
        super().__init__()
        self.config = config
        n_items = int(omega_items.shape[0])
        if omega_items.shape[1] != config.omega_dim:
            raise ValueError(f"Ω has width {omega_items.shape[1]}, the model expects "
                             f"omega_dim={config.omega_dim}")
        self.n_items = n_items
        # The stacks read inputs_embeds only: their own token tables stay at the 2 special rows.
        t5 = T5Config(
            vocab_size=OFFSET, d_model=config.d_model, d_kv=config.d_kv, d_ff=config.d_ff,
            num_layers=config.num_layers, num_decoder_layers=config.num_decoder_layers,
            num_heads=config.num_heads, dropout_rate=config.dropout, pad_token_id=PAD, use_cache=False,
            is_encoder_decoder=True,
        )
        self.tokens = nn.Embedding(n_items + OFFSET, config.d_model, padding_idx=PAD)
        enc_config = t5.__class__(**{**t5.to_dict(), "is_decoder": False, "use_cache": False})
        dec_config = t5.__class__(**{**t5.to_dict(), "is_decoder": True, "use_cache": False,
                                     "num_layers": config.num_decoder_layers})
        self.encoder = T5Stack(enc_config)
        self.decoder = T5Stack(dec_config)
        for stack in (self.encoder, self.decoder):  # unused (inputs_embeds only): frozen, so DDP skips them
            stack.embed_tokens.weight.requires_grad_(False)
        self.prompts = nn.Parameter(torch.randn(max(config.n_prompts, 1), config.d_model) * config.init_std)
        self.register_buffer("omega_items", omega_items.float(), persistent=False)
        self.omega_proj = nn.Linear(config.omega_dim, config.d_model, bias=False)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """Small item vectors (std `init_std`); α·W·Ω starts at the same scale (balanced whole-word init)."""
        nn.init.normal_(self.tokens.weight, std=self.config.init_std)
        self.tokens.weight[PAD].zero_()
        alpha = self.config.alpha_sequential
        std = float(self.omega_items.std()) if self.omega_items.numel() > 1 else 1.0
        if alpha and std > 0:
            scale = abs(alpha) * std * self.config.omega_dim**0.5
            nn.init.normal_(self.omega_proj.weight, std=self.config.init_std / scale)

    # -- embeddings --------------------------------------------------------------------------
    def graph_words(self) -> torch.Tensor:
        """α · W · Ω_item of every item (n_items, d); zeros when Ω is switched off."""
        if not self.config.use_omega or not self.config.alpha_sequential:
            return self.tokens.weight.new_zeros(self.n_items, self.config.d_model)
        return self.config.alpha_sequential * self.omega_proj(self.omega_items)

    def item_table(self) -> torch.Tensor:
        """Whole-word embedding of every item (n_items, d): the decoder's input rows and output layer."""
        return self.tokens.weight[OFFSET:] + self.graph_words()

    def embed(self, tokens: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """Decoder input vectors for tokens (PAD, BOS or item + OFFSET)."""
        special = self.tokens(tokens.clamp(max=OFFSET - 1))
        items = F.embedding((tokens - OFFSET).clamp(min=0), table)
        return torch.where((tokens >= OFFSET).unsqueeze(-1), items, special)

    # -- model ------------------------------------------------------------------------------
    def context(self, batch: int) -> torch.Tensor:
        """Encoder states of the prompt vectors (constant per model), expanded to the batch."""
        states = self.encoder(inputs_embeds=self.prompts.unsqueeze(0), return_dict=True).last_hidden_state
        return states.expand(batch, -1, -1)

    def states(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoder states (B, T, d) for right-padded decoder inputs, and the item table they score."""
        table = self.item_table()
        mask = (tokens != PAD).long()
        out = self.decoder(inputs_embeds=self.embed(tokens, table), attention_mask=mask,
                           encoder_hidden_states=self.context(tokens.shape[0]), use_cache=False,
                           return_dict=True)
        return out.last_hidden_state, table

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean full-softmax cross-entropy of the next item at every position (targets -100 = none)."""
        hidden, table = self.states(tokens)
        keep = targets >= 0
        logits = hidden[keep] @ table.T
        return F.cross_entropy(logits.float(), targets[keep])

    loss = forward

    def next_item_logits(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_items) of the item after each history (read at the last real position)."""
        hidden, table = self.states(tokens)
        last = hidden[torch.arange(tokens.shape[0], device=tokens.device), lengths - 1]
        return (last @ table.T).float()


def decoder_tokens(histories: Sequence[Sequence[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[BOS] + the last `max_len` items of each history, right-padded: tokens (B, T) and lengths (B,)."""
    rows = [list(h)[-max_len:] if max_len > 0 else [] for h in histories]
    width = 1 + max([0, *(len(r) for r in rows)])
    out = np.full((len(rows), width), PAD, dtype=np.int64)
    lengths = np.zeros(len(rows), dtype=np.int64)
    for n, r in enumerate(rows):
        out[n, 0] = BOS
        out[n, 1 : 1 + len(r)] = np.asarray(r, dtype=np.int64) + OFFSET
        lengths[n] = 1 + len(r)
    return torch.from_numpy(out), torch.from_numpy(lengths)


def sequence_batch(sequences: Sequence[Sequence[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher forcing over whole sequences: inputs [BOS] + s[:-1] and targets s (last max_len items)."""
    rows = [list(s)[-max_len:] for s in sequences]
    tokens, _ = decoder_tokens([r[:-1] for r in rows], max_len)
    targets = torch.full(tokens.shape, -100, dtype=torch.long)
    for n, r in enumerate(rows):
        targets[n, : len(r)] = torch.as_tensor(r, dtype=torch.long)
    return tokens, targets
