"""A T5 decoder pass that shares one encoder's cross-attention keys/values across many decoder rows.

It runs the weights of a `transformers` T5 decoder (same modules, same maths) but lets a group of G
decoder sequences (the candidates of one user, or the beams of one user) reuse the cross-attention
keys/values of that user's encoder output, computed once, and keeps a self-attention KV cache for
step-by-step decoding. `tests/model_store/test_fast_decoder.py` checks it equals the HF decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers.models.t5.modeling_t5 import T5Attention, T5Stack

NEG_INF = torch.finfo(torch.float32).min


@dataclass
class CrossCache:
    """Per-layer cross-attention keys/values (B, H, T, dk) and the additive encoder mask (B, 1, 1, 1, T)."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    mask: torch.Tensor


SelfCache = list[tuple[torch.Tensor, torch.Tensor]]  # per layer (B, G, H, t, dk)


class GroupedT5Decoder(nn.Module):
    """Decoder over tensors shaped (B, G, t): B encoder outputs, G decoder rows sharing each."""

    def __init__(self, decoder: T5Stack) -> None:
        super().__init__()
        self.decoder = decoder
        self.blocks: list[Any] = list(decoder.block)  # T5Block modules (untyped in transformers)
        first = self.blocks[0].layer[0].SelfAttention
        self.bias_attention: T5Attention = first
        self.embed: Any = decoder.embed_tokens
        self.final_norm: Any = decoder.final_layer_norm
        self.n_heads = first.n_heads
        self.d_kv = first.key_value_proj_dim

    def cross_cache(self, encoder_states: torch.Tensor, encoder_mask: torch.Tensor) -> CrossCache:
        """Project the encoder states once per layer."""
        b, t, _ = encoder_states.shape
        keys, values = [], []
        for block in self.blocks:
            attn = block.layer[1].EncDecAttention
            keys.append(attn.k(encoder_states).view(b, t, self.n_heads, self.d_kv).transpose(1, 2))
            values.append(attn.v(encoder_states).view(b, t, self.n_heads, self.d_kv).transpose(1, 2))
        mask = (1.0 - encoder_mask[:, None, None, None, :].to(encoder_states.dtype)) * NEG_INF
        return CrossCache(keys, values, mask)

    def _position_bias(self, start: int, length: int, device: torch.device) -> torch.Tensor:
        """Relative position bias (H, length, start+length) plus the causal mask."""
        attn = self.bias_attention
        query = torch.arange(start, start + length, device=device)[:, None]
        memory = torch.arange(start + length, device=device)[None, :]
        buckets: torch.Tensor = T5Attention._relative_position_bucket(  # type: ignore[no-untyped-call]
            memory - query,
            bidirectional=False,
            num_buckets=attn.relative_attention_num_buckets,
            max_distance=attn.relative_attention_max_distance,
        )
        bias: torch.Tensor = attn.relative_attention_bias(buckets).permute(2, 0, 1)
        causal = (memory > query).to(bias.dtype) * NEG_INF
        return bias + causal

    def forward(
        self,
        input_ids: torch.Tensor,
        cross: CrossCache,
        past: SelfCache | None = None,
    ) -> tuple[torch.Tensor, SelfCache]:
        """Decoder outputs (B, G, t, d) after the final layer norm, and the extended self cache."""
        b, g, t = input_ids.shape
        start = 0 if past is None else past[0][0].shape[3]
        hidden = self.embed(input_ids)
        bias = self._position_bias(start, t, input_ids.device).to(hidden.dtype)  # (H, t, start+t)
        new_past: SelfCache = []
        for i, block in enumerate(self.blocks):
            self_layer, cross_layer, ff_layer = block.layer[0], block.layer[1], block.layer[-1]
            attn = self_layer.SelfAttention
            normed = self_layer.layer_norm(hidden)
            q = attn.q(normed).view(b, g, t, self.n_heads, self.d_kv).transpose(2, 3)
            k = attn.k(normed).view(b, g, t, self.n_heads, self.d_kv).transpose(2, 3)
            v = attn.v(normed).view(b, g, t, self.n_heads, self.d_kv).transpose(2, 3)
            if past is not None:
                k = torch.cat([past[i][0], k], dim=3)
                v = torch.cat([past[i][1], v], dim=3)
            new_past.append((k, v))
            scores = torch.matmul(q, k.transpose(-1, -2)) + bias
            out = torch.matmul(torch.softmax(scores.float(), dim=-1).to(v.dtype), v)
            hidden = hidden + attn.o(out.transpose(2, 3).reshape(b, g, t, -1))

            cattn = cross_layer.EncDecAttention
            normed = cross_layer.layer_norm(hidden)
            q = cattn.q(normed).view(b, g * t, self.n_heads, self.d_kv).transpose(1, 2)  # (B, H, G*t, dk)
            scores = torch.matmul(q, cross.keys[i].transpose(-1, -2))  # (B, H, G*t, T)
            scores = scores + cross.mask[:, :, 0]
            out = torch.matmul(torch.softmax(scores.float(), dim=-1).to(q.dtype), cross.values[i])
            out = out.transpose(1, 2).reshape(b, g, t, -1)
            hidden = hidden + cattn.o(out)
            hidden = ff_layer(hidden)
        return self.final_norm(hidden), new_past
