"""The grouped decoder equals transformers' T5 decoder, in one pass and step by step with its cache."""

import torch

from model_store.config import ModelConfig
from model_store.fast_decoder import GroupedT5Decoder
from model_store.model import ElmrecModel

CFG = ModelConfig(d_model=32, d_ff=64, d_kv=8, num_layers=2, num_decoder_layers=2, num_heads=4,
                  dropout=0.0, omega_dim=8)


def _model() -> ElmrecModel:
    torch.manual_seed(0)
    return ElmrecModel(CFG, torch.randn(10, 8), output_tokens=[5, 6, 7]).eval()


def _reference(model: ElmrecModel, states, mask, dec_ids):
    b, g, t = dec_ids.shape
    rep_states = states.repeat_interleave(g, 0)
    rep_mask = mask.repeat_interleave(g, 0)
    out = model.t5.get_decoder()(input_ids=dec_ids.reshape(b * g, t), encoder_hidden_states=rep_states,
                                 encoder_attention_mask=rep_mask, use_cache=False, return_dict=True)
    return out.last_hidden_state.reshape(b, g, t, -1)


def test_grouped_decoder_matches_hf_in_one_pass() -> None:
    model = _model()
    states = torch.randn(3, 7, 32)
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    dec_ids = torch.randint(0, 50, (3, 4, 5))
    fast = GroupedT5Decoder(model.t5.get_decoder())
    with torch.no_grad():
        got, _ = fast(dec_ids, fast.cross_cache(states, mask))
        want = _reference(model, states, mask, dec_ids)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_grouped_decoder_incremental_cache_matches_full_pass() -> None:
    model = _model()
    states = torch.randn(2, 6, 32)
    mask = torch.ones(2, 6, dtype=torch.long)
    dec_ids = torch.randint(0, 50, (2, 3, 4))
    fast = GroupedT5Decoder(model.t5.get_decoder())
    with torch.no_grad():
        cross = fast.cross_cache(states, mask)
        full, _ = fast(dec_ids, cross)
        past = None
        steps = []
        for i in range(dec_ids.shape[2]):
            out, past = fast(dec_ids[:, :, i : i + 1], cross, past)
            steps.append(out)
    assert torch.allclose(torch.cat(steps, dim=2), full, atol=1e-5)
