"""ELMRec: a transformers T5 with continuous task prompts and graph-aware whole-word embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration

from model_store.config import TASKS, ModelConfig

PAD_ID = 0
EOS_ID = 1


class ElmrecModel(nn.Module):
    """T5 whose encoder input is token embedding + α · whole-word embedding, after 3 prompt vectors.

    Whole-word ids (`ww`, one per input token) mean, per task:
    - 0: the general whole-word vector ω0 (every non-id token);
    - direct / explanation: v > 0 is row v-1 of the frozen Ω table (users first, then items),
      passed through a learned projection when Ω is narrower than the model;
    - sequential: v > 0 is the incremental whole-word embedding #(v-1) (#0 user, #1.. items).
    """

    omega: torch.Tensor
    output_tokens: torch.Tensor
    output_lookup: torch.Tensor

    def __init__(self, config: ModelConfig, omega: torch.Tensor, output_tokens: Sequence[int]) -> None:
        super().__init__()
        self.config = config
        t5_kwargs: dict[str, Any] = dict(
            vocab_size=config.vocab_size,
            d_model=config.d_model,
            d_kv=config.d_kv,
            d_ff=config.d_ff,
            num_layers=config.num_layers,
            num_decoder_layers=config.num_decoder_layers,
            num_heads=config.num_heads,
            dropout_rate=config.dropout,
            decoder_start_token_id=PAD_ID,
            pad_token_id=PAD_ID,
            eos_token_id=EOS_ID,
            use_cache=False,
        )
        self.t5 = T5ForConditionalGeneration(T5Config(**t5_kwargs))
        # Older transformers scale decoder outputs whenever embeddings are tied; newer ones say so.
        scale = getattr(self.t5.config, "scale_decoder_outputs", self.t5.config.tie_word_embeddings)
        self.output_scale = config.d_model**-0.5 if scale else 1.0
        self.prompts = nn.Parameter(torch.randn(len(TASKS), config.n_prompts, config.d_model) * 0.5)
        self.general_word = nn.Parameter(torch.zeros(config.d_model))
        self.incremental_words = nn.Embedding(config.max_whole_word, config.d_model)
        nn.init.normal_(self.incremental_words.weight, std=0.5)
        if omega.shape[1] != config.omega_dim:
            raise ValueError(f"Ω has width {omega.shape[1]}, the model expects omega_dim={config.omega_dim}")
        self.register_buffer("omega", omega.float(), persistent=False)
        self.omega_proj: nn.Module = (
            nn.Identity() if config.omega_dim == config.d_model
            else nn.Linear(config.omega_dim, config.d_model, bias=False)
        )
        if config.balanced_init:
            self._balance_init(omega)
        tokens = torch.as_tensor(sorted(set(output_tokens) | {EOS_ID}), dtype=torch.long)
        lookup = torch.full((config.vocab_size,), -1, dtype=torch.long)
        lookup[tokens] = torch.arange(len(tokens))
        self.register_buffer("output_tokens", tokens, persistent=False)
        self.register_buffer("output_lookup", lookup, persistent=False)

    @torch.no_grad()
    def _balance_init(self, omega: torch.Tensor) -> None:
        """α·whole-word starts with unit std, like the (randomly initialised) token embeddings.

        With a random-init T5, α·Ω at the paper's σ would otherwise drown the token identity that
        the decoder must copy; training is free to grow the whole-word paths again.
        """
        seq_alpha = max(abs(self.config.alpha_sequential), 1e-6)
        nn.init.normal_(self.incremental_words.weight, std=1.0 / seq_alpha)
        alpha = max(abs(self.config.alpha_direct), 1e-6)
        std = float(omega.float().std()) if omega.numel() > 1 else 1.0
        if isinstance(self.omega_proj, nn.Linear):
            scale = alpha * max(std, 1e-6) * self.config.omega_dim**0.5
            nn.init.normal_(self.omega_proj.weight, std=1.0 / scale)

    # -- encoder -------------------------------------------------------------------------------
    def whole_word(
        self, task: str, ww: torch.Tensor, extra_omega: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Whole-word vectors (B, T, d) for the ids `ww` of one task.

        `extra_omega` (E, k) holds folded-in rows of nodes absent from the graph (cold-start users);
        ww values past the Ω table point into it.
        """
        use_ids = self.config.incremental_ids if task == "sequential" else self.config.use_omega
        is_id = ww > 0 if use_ids else torch.zeros_like(ww, dtype=torch.bool)
        index = (ww - 1).clamp(min=0)
        if task == "sequential":
            ids = self.incremental_words(index.clamp(max=self.config.max_whole_word - 1))
        else:
            n = self.omega.shape[0]
            rows = self.omega[index.clamp(max=n - 1)]
            if extra_omega is not None and extra_omega.shape[0] > 0:
                slot = (index - n).clamp(min=0, max=extra_omega.shape[0] - 1)
                extra = extra_omega.to(rows.dtype)[slot]
                rows = torch.where((index >= n).unsqueeze(-1), extra, rows)
            ids = self.omega_proj(rows)
        general = self.general_word.expand_as(ids)
        return torch.where(is_id.unsqueeze(-1), ids, general)

    def encode(
        self, task: str, input_ids: torch.Tensor, attention_mask: torch.Tensor, ww: torch.Tensor,
        extra_omega: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder states (B, P+T, d) and their mask, with the task's prompt vectors in front."""
        tokens = self.t5.get_input_embeddings()(input_ids)
        embeds = tokens + self.config.alpha(task) * self.whole_word(task, ww, extra_omega)
        batch = input_ids.shape[0]
        prompt = self.prompts[TASKS.index(task)].unsqueeze(0).expand(batch, -1, -1)
        prompt = prompt + self.config.alpha(task) * self.general_word
        embeds = torch.cat([prompt.to(embeds.dtype), embeds], dim=1)
        mask = torch.cat(
            [attention_mask.new_ones(batch, self.config.n_prompts), attention_mask], dim=1
        )
        hidden = self.t5.get_encoder()(inputs_embeds=embeds, attention_mask=mask, return_dict=True)
        return hidden.last_hidden_state, mask

    # -- decoder -------------------------------------------------------------------------------
    def decoder_states(
        self, encoder_states: torch.Tensor, encoder_mask: torch.Tensor, decoder_input_ids: torch.Tensor
    ) -> torch.Tensor:
        """Scaled decoder outputs (N, t, d) for teacher-forced decoder inputs."""
        out = self.t5.get_decoder()(
            input_ids=decoder_input_ids,
            encoder_hidden_states=encoder_states,
            encoder_attention_mask=encoder_mask,
            use_cache=False,
            return_dict=True,
        )
        return out.last_hidden_state * self.output_scale

    def logits(self, states: torch.Tensor, restricted: bool) -> torch.Tensor:
        """Output logits over the item-id vocabulary (restricted) or the whole vocabulary."""
        weight = self.t5.get_output_embeddings().weight
        if restricted:
            weight = weight[self.output_tokens]
        return F.linear(states, weight)

    def restricted_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Map token-id labels to indices of the restricted vocabulary (-100 kept)."""
        mapped = self.output_lookup[labels.clamp(min=0)]
        if bool(((mapped < 0) & (labels >= 0)).any()):
            raise ValueError("a label token is not in the restricted output vocabulary")
        return torch.where(labels >= 0, mapped, labels)

    def forward(
        self,
        task: str,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        ww: torch.Tensor,
        labels: torch.Tensor,
        candidates: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
        listwise_weight: float = 0.0,
    ) -> torch.Tensor:
        """Eq. 1: per-example mean token NLL, averaged over the batch; labels padded with -100.

        With `candidates` = (decoder inputs, labels, positive index) and a weight > 0, adds the
        listwise cross-entropy of the positive among the prompt's candidates (same encoder pass).
        """
        states, mask = self.encode(task, input_ids, attention_mask, ww)
        decoder_input = shift_right(labels)
        hidden = self.decoder_states(states, mask, decoder_input)
        restricted = self.config.restrict_vocab and task != "explanation"
        logits = self.logits(hidden, restricted).float()
        target = self.restricted_labels(labels) if restricted else labels
        nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=-100, reduction="none")
        valid = (target != -100).float()
        per_example = (nll * valid).sum(1) / valid.sum(1).clamp(min=1.0)
        loss = per_example.mean()
        if candidates is not None and listwise_weight > 0:
            dec_in, cand_labels, positive = candidates
            scores = self.candidate_log_likelihoods(states, mask, dec_in, cand_labels)
            loss = loss + listwise_weight * F.cross_entropy(scores, positive)
        return loss

    loss = forward

    def candidate_log_likelihoods(
        self, states: torch.Tensor, mask: torch.Tensor, decoder_input: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """Sequence log-likelihoods (B, C) of C candidate targets per encoder row (labels -100 padded).

        Runs the grouped decoder (cross-attention keys/values shared by a row's candidates), with
        gradients, so a listwise loss can train the exact score the engine ranks by.
        """
        from model_store.fast_decoder import GroupedT5Decoder

        grouped = self.__dict__.get("_grouped")
        if grouped is None:
            grouped = GroupedT5Decoder(self.t5.get_decoder())
            self.__dict__["_grouped"] = grouped  # not a registered submodule: no duplicate weights
        hidden, _ = grouped(decoder_input, grouped.cross_cache(states, mask))
        restricted = self.config.restrict_vocab
        logp = torch.log_softmax(self.logits(hidden * self.output_scale, restricted).float(), dim=-1)
        target = self.restricted_labels(labels) if restricted else labels
        valid = target != -100
        picked = logp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (picked * valid).sum(-1)


def shift_right(labels: torch.Tensor) -> torch.Tensor:
    """Decoder inputs for teacher forcing: start token, then the labels without the last (-100 -> pad)."""
    start = labels.new_full((labels.shape[0], 1), PAD_ID)
    shifted = torch.cat([start, labels[:, :-1]], dim=1)
    return shifted.masked_fill(shifted == -100, PAD_ID)
