"""Training forward: HF label convention, MTP + main losses fall, packing with segment_ids, token logprobs."""

import torch
import torch.nn.functional as F

from rlpipe.model import ModelConfig, Transformer


def _model(**overrides) -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig.preset("tiny", vocab_size=128, num_hidden_layers=2, **overrides))


def test_mtp_and_main_losses_fall_when_overfitting_a_batch():
    model = _model(num_nextn_predict_layers=2)
    ids = torch.randint(0, 128, (4, 32), generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        out = model(ids, labels=ids)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        model.update_expert_bias()
        if first is None:
            first = out
    assert len(out.mtp_losses) == 2
    assert out.main_loss < 0.3 * first.main_loss
    for before, after in zip(first.mtp_losses, out.mtp_losses):
        assert after < 0.5 * before
    w = model.config.mtp_loss_weight / 2
    expected = out.main_loss + w * sum(out.mtp_losses) + model.config.balance_loss_alpha * out.balance_loss
    assert torch.allclose(out.loss, expected)


def test_labels_are_shifted_inside_and_minus_100_ignored():
    model = _model(num_nextn_predict_layers=0).eval()
    ids = torch.randint(0, 128, (2, 10))
    labels = ids.clone()
    labels[0, 4] = -100
    with torch.no_grad():
        out = model(ids, labels=labels)
    logits = out.logits[:, :-1].reshape(-1, 128)
    expected = F.cross_entropy(logits, labels[:, 1:].reshape(-1), ignore_index=-100)
    assert torch.allclose(out.main_loss, expected, atol=1e-6)
    assert out.loss is not None and model(ids).loss is None


def test_mtp_loss_targets_tokens_k_plus_one_ahead():
    """Depth-1 MTP at position i predicts t_{i+2}: masking only labels[:, :2] leaves its loss unchanged."""
    model = _model().eval()
    ids = torch.randint(0, 128, (2, 12))
    labels = ids.clone()
    labels[:, :2] = -100  # depth 1 never targets positions 0, 1
    with torch.no_grad():
        a = model(ids, labels=ids).mtp_losses[0]
        b = model(ids, labels=labels).mtp_losses[0]
        labels[:, 2] = -100
        c = model(ids, labels=labels).mtp_losses[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_packed_segments_equal_separate_sequences():
    model = _model().eval()
    g = torch.Generator().manual_seed(2)
    first, second = torch.randint(0, 128, (7,), generator=g), torch.randint(0, 128, (9,), generator=g)
    packed = torch.cat([first, second])[None]
    segments = torch.tensor([[0] * 7 + [1] * 9])
    with torch.no_grad():
        out = model(packed, labels=packed, segment_ids=segments)
        a = model(first[None], labels=first[None])
        b = model(second[None], labels=second[None])
    assert torch.allclose(out.logits[0, :7], a.logits[0], atol=1e-5)
    assert torch.allclose(out.logits[0, 7:], b.logits[0], atol=1e-5)
    # the boundary target (last token of segment 0 -> first of segment 1) is dropped
    expected_main = (a.main_loss * 6 + b.main_loss * 8) / 14
    assert torch.allclose(out.main_loss, expected_main, atol=1e-5)
    expected_mtp = (a.mtp_losses[0] * 5 + b.mtp_losses[0] * 7) / 12
    assert torch.allclose(out.mtp_losses[0], expected_mtp, atol=1e-5)


def test_token_logprobs_match_log_softmax_and_carry_gradients():
    model = _model()
    ids = torch.randint(0, 128, (2, 40))
    with torch.no_grad():
        logits = model(ids).logits
    ref = torch.log_softmax(logits[:, :-1] / 0.7, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    lp = model.token_logprobs(ids, temperature=0.7, chunk_size=16)
    assert lp.shape == (2, 39)
    assert torch.allclose(lp, ref, atol=1e-5)
    lp.sum().backward()
    assert model.lm_head.weight.grad is not None and model.embed_tokens.weight.grad.abs().sum() > 0


def test_token_logprobs_of_left_padded_rows_match_unpadded():
    model = _model().eval()
    seq = torch.randint(3, 128, (6,))
    padded = torch.cat([torch.full((3,), 2), seq])[None]
    mask = (torch.arange(9) >= 3).long()[None]
    with torch.no_grad():
        lp_padded = model.token_logprobs(padded, position_ids=(mask.cumsum(-1) - 1).clamp(min=0), segment_ids=mask)
        lp = model.token_logprobs(seq[None])
    assert torch.allclose(lp_padded[0, 3:], lp[0], atol=1e-5)
