"""ELMRec model pieces: whole-word embeddings, prompts in front, restricted output, label padding."""

from __future__ import annotations

import torch

from model_store.config import ModelConfig
from model_store.model import ElmrecModel, shift_right

CFG = ModelConfig(d_model=16, d_ff=32, d_kv=4, num_layers=1, num_decoder_layers=1, num_heads=4,
                  dropout=0.0, omega_dim=4, max_whole_word=8, alpha_direct=2.0, alpha_sequential=3.0)


def _model() -> ElmrecModel:
    torch.manual_seed(0)
    return ElmrecModel(CFG, torch.randn(6, 4), output_tokens=[10, 11, 12])


def test_direct_whole_word_uses_projected_omega_rows_and_general_vector() -> None:
    model = _model()
    ww = torch.tensor([[0, 1, 3, 6]])
    got = model.whole_word("direct", ww)
    assert torch.allclose(got[0, 0], model.general_word)
    assert torch.allclose(got[0, 1], model.omega_proj(model.omega[0]))
    assert torch.allclose(got[0, 3], model.omega_proj(model.omega[5]))


def test_sequential_whole_word_uses_incremental_ids() -> None:
    model = _model()
    got = model.whole_word("sequential", torch.tensor([[1, 2, 2, 0]]))
    assert torch.allclose(got[0, 0], model.incremental_words.weight[0])
    assert torch.allclose(got[0, 1], got[0, 2])
    assert torch.allclose(got[0, 3], model.general_word)


def test_encoder_input_is_token_plus_alpha_times_whole_word() -> None:
    model = _model()
    captured = {}
    encoder = model.t5.get_encoder()
    original = encoder.forward

    def spy(*args, **kwargs):
        captured.update(kwargs)
        return original(*args, **kwargs)

    encoder.forward = spy  # type: ignore[method-assign]
    ids, ww = torch.tensor([[5, 7, 1]]), torch.tensor([[1, 4, 0]])
    model.encode("direct", ids, torch.ones_like(ids), ww)
    embeds = captured["inputs_embeds"]
    expected = model.t5.get_input_embeddings()(ids) + 2.0 * model.whole_word("direct", ww)
    assert embeds.shape == (1, CFG.n_prompts + 3, 16)
    assert torch.allclose(embeds[:, CFG.n_prompts :], expected)
    assert captured["attention_mask"].shape == (1, CFG.n_prompts + 3)


def test_padding_changes_nothing_but_the_mask() -> None:
    model = _model().eval()
    ids, ww = torch.tensor([[5, 7, 1]]), torch.tensor([[1, 4, 0]])
    labels = torch.tensor([[10, 12, 1]])
    loss = model("direct", ids, torch.ones_like(ids), ww, labels)
    padded = torch.tensor([[5, 7, 1, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    padded_labels = torch.tensor([[10, 12, 1, -100, -100]])
    loss2 = model("direct", padded, mask, torch.tensor([[1, 4, 0, 0, 0]]), padded_labels)
    assert torch.allclose(loss, loss2, atol=1e-6)


def test_shift_right_starts_with_pad_and_never_feeds_minus_100() -> None:
    out = shift_right(torch.tensor([[4, 5, -100]]))
    assert out.tolist() == [[0, 4, 5]]


def test_loss_falls_when_training_a_few_steps() -> None:
    model = _model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    ids, ww = torch.tensor([[5, 7, 1], [6, 8, 1]]), torch.tensor([[1, 4, 0], [2, 5, 0]])
    labels = torch.tensor([[10, 1], [11, 1]])
    first = None
    for _ in range(30):
        loss = model("direct", ids, torch.ones_like(ids), ww, labels)
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first


def test_candidate_log_likelihoods_equal_per_candidate_teacher_forcing() -> None:
    model = _model().eval()
    ids, ww = torch.tensor([[5, 7, 1]]), torch.tensor([[1, 4, 0]])
    cands = [[10, 12, 1], [11, 1, -100]]
    labels = torch.tensor([cands])
    dec_in = torch.tensor([[[0, 10, 12], [0, 11, 0]]])
    with torch.no_grad():
        states, mask = model.encode("direct", ids, torch.ones_like(ids), ww)
        got = model.candidate_log_likelihoods(states, mask, dec_in, labels)[0]
        for j, cand in enumerate(cands):
            lab = torch.tensor([cand])
            hidden = model.decoder_states(states, mask, shift_right(lab))
            logp = torch.log_softmax(model.logits(hidden, True), -1)
            target = model.restricted_labels(lab)
            want = sum(float(logp[0, t, target[0, t]]) for t in range(3) if cand[t] != -100)
            assert abs(float(got[j]) - want) < 1e-5
    assert "_grouped" not in dict(model.named_modules())
    assert not any(k.startswith("_grouped") for k in model.state_dict())


def test_listwise_term_adds_to_the_loss_and_trains() -> None:
    model = _model()
    ids, ww = torch.tensor([[5, 7, 1]]), torch.tensor([[1, 4, 0]])
    labels = torch.tensor([[10, 1]])
    cands = (torch.tensor([[[0, 10], [0, 11]]]), torch.tensor([[[10, 1], [11, 1]]]), torch.tensor([0]))
    plain = model("direct", ids, torch.ones_like(ids), ww, labels)
    both = model("direct", ids, torch.ones_like(ids), ww, labels, cands, 1.0)
    assert float(both.detach()) > float(plain.detach())


def test_ablation_switches_replace_ids_by_the_general_vector() -> None:
    """use_omega=False: no Ω row reaches direct prompts; incremental_ids=False: no #k id in sequential."""
    torch.manual_seed(0)
    ablated = ElmrecModel(CFG.model_copy(update={"use_omega": False, "incremental_ids": False}),
                          torch.randn(6, 4), output_tokens=[10, 11, 12])
    ww = torch.tensor([[0, 1, 3, 6]])
    for task in ("direct", "sequential"):
        got = ablated.whole_word(task, ww)
        assert torch.allclose(got, ablated.general_word.expand_as(got))
    kept = _model().whole_word("direct", ww)  # the default keeps them: the switch is what changed it
    assert not torch.allclose(kept[0, 1], kept[0, 0])
