"""GRPO-family math (rlpipe.train.grpo) against numbers worked out by hand in plain Python."""

import math
import statistics

import pytest
import torch

from rlpipe.train.grpo import (
    LOSSES,
    LossConfig,
    dynamic_sampling_keep,
    entropy_from_logits,
    group_advantages,
    k3_kl,
    mismatch_weights,
    policy_loss,
    top_entropy_mask,
)


def approx(x, rel=1e-5, abs=1e-6):
    return pytest.approx(x, rel=rel, abs=abs)


def close(a, b, atol=1e-6):
    b = torch.as_tensor(b, dtype=a.dtype)
    assert torch.allclose(a, b, atol=atol, rtol=1e-5), f"\n{a}\n!=\n{b}"


def logps_with_ratios(ratios, old=None):
    """(logp with grad, old_logp, mask) for rows of ratios; None marks padding."""
    T = max(len(r) for r in ratios)
    mask = torch.tensor([[1.0] * len(r) + [0.0] * (T - len(r)) for r in ratios])
    old = torch.full(mask.shape, math.log(0.3)) if old is None else old
    log_r = torch.tensor([[math.log(x) for x in r] + [0.0] * (T - len(r)) for r in ratios])
    logp = (old + log_r).requires_grad_(True)
    return logp, old, mask


def loss_and_grad(logp, old, adv, mask, cfg, **kw):
    loss, metrics = policy_loss(logp, old, torch.tensor(adv), mask, cfg, **kw)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.item(), grad, metrics


# --- advantages ---------------------------------------------------------------------------------

REWARDS = [[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 0.0]]


def test_grpo_advantage_is_group_centred_over_unbiased_group_std():
    adv = group_advantages(torch.tensor(REWARDS))
    expected = []
    for row in REWARDS:
        mean, std = statistics.mean(row), statistics.stdev(row)  # stdev: Bessel-corrected, as TRL
        expected.append([(r - mean) / (std + 1e-4) for r in row])
    close(adv, expected)
    assert adv[0, 0].item() == approx(0.75 / 0.5001)


def test_dr_grpo_advantage_is_not_scaled():
    adv = group_advantages(torch.tensor(REWARDS), scale="none")
    close(adv, [[0.75, -0.25, -0.25, -0.25], [0.25, 0.25, 0.25, -0.75]])


def test_batch_scale_divides_by_std_of_all_rewards():
    adv = group_advantages(torch.tensor(REWARDS), scale="batch")
    std = math.sqrt(2 / 7)  # 8 rewards, four 1s and four 0s: sum of squares 2, / (8 - 1)
    close(adv, [[0.75 / (std + 1e-4), -0.25 / (std + 1e-4)] + [-0.25 / (std + 1e-4)] * 2,
                [0.25 / (std + 1e-4)] * 3 + [-0.75 / (std + 1e-4)]])


def test_equal_rewards_and_single_samples_get_zero_advantage():
    close(group_advantages(torch.tensor([[0.7, 0.7, 0.7]])), [[0.0, 0.0, 0.0]])
    close(group_advantages(torch.tensor([[1.0], [0.0]])), [[0.0], [0.0]])
    close(group_advantages(torch.tensor([[3.0]]), scale="batch"), [[0.0]])


def test_advantage_options_are_checked():
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.tensor(REWARDS), scale="global")
    with pytest.raises(ValueError, match="baseline"):
        group_advantages(torch.tensor(REWARDS), baseline="leave_one_out")


def test_dynamic_sampling_drops_groups_with_equal_rewards():
    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0], [0.5, 0.5 + 1e-9, 0.5], [0.0, 0.0, 0.2]])
    assert dynamic_sampling_keep(rewards).tolist() == [False, True, False, True]


# --- per-token pieces ---------------------------------------------------------------------------

def test_k3_kl_by_hand():
    logp, ref = torch.tensor([math.log(0.5), math.log(0.2)]), torch.tensor([math.log(0.25), math.log(0.2)])
    # ref - logp = -ln 2: exp(-ln 2) + ln 2 - 1 = ln 2 - 0.5
    close(k3_kl(logp, ref), [math.log(2) - 0.5, 0.0])
    assert (k3_kl(torch.randn(50), torch.randn(50)) >= 0).all()


def test_entropy_from_logits_by_hand():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -math.inf, -math.inf]])
    h = entropy_from_logits(logits)
    assert h.shape == (2,)
    close(h, [math.log(4), -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))])
    assert entropy_from_logits(logits.to(torch.bfloat16)).dtype == torch.float32  # computed in float32


def test_top_entropy_mask_keeps_highest_entropy_completion_tokens():
    entropy = torch.tensor([[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 99.0]])
    mask = torch.tensor([[1.0, 1, 1, 1], [1, 1, 1, 0]])  # the 99 is padding and must not count
    # completion entropies 1..7; the 0.7 quantile is 1 + 0.7 * 6 = 5.2, so 6 and 7 are kept
    keep = top_entropy_mask(entropy, mask, 0.3)
    assert keep.tolist() == [[False] * 4, [False, True, True, False]]
    assert top_entropy_mask(entropy, mask, 1.0).tolist() == mask.bool().tolist()


# --- on-policy (mu = 1): ratio 1 everywhere ---------------------------------------------------

ADV = [1.0, -0.5]
LENGTHS = [[1.0, 1.0], [1.0, 1.0, 1.0]]  # ratios of 1: two sequences of 2 and 3 tokens


def test_grpo_on_policy_value_and_gradient_is_minus_advantage_over_length():
    logp, old, mask = logps_with_ratios(LENGTHS)
    loss, grad, m = loss_and_grad(logp, old, ADV, mask, LossConfig(loss_type="grpo"))
    assert loss == approx(-(1.0 - 0.5) / 2)  # minus the mean over sequences of each one's advantage
    # per token: -A_i / (len_i * B); padding gets nothing
    close(grad, [[-1 / 4, -1 / 4, 0.0], [0.5 / 6, 0.5 / 6, 0.5 / 6]])
    assert m["clip_frac/low"] == m["clip_frac/high"] == m["clip_frac/region"] == 0.0
    assert m["ratio/mean"] == approx(1.0)
    assert m["loss"] == approx(loss)


def test_dapo_on_policy_averages_all_tokens_of_the_batch():
    logp, old, mask = logps_with_ratios(LENGTHS)
    loss, grad, m = loss_and_grad(logp, old, ADV, mask, LossConfig(loss_type="dapo"))
    assert loss == approx(-(1.0 * 2 - 0.5 * 3) / 5)
    close(grad, [[-1 / 5, -1 / 5, 0.0], [0.5 / 5, 0.5 / 5, 0.5 / 5]])
    assert m["clip_frac/region"] == 0.0


def test_dr_grpo_on_policy_divides_by_sequences_times_max_length():
    logp, old, mask = logps_with_ratios(LENGTHS)
    loss, grad, _ = loss_and_grad(logp, old, ADV, mask, LossConfig(loss_type="dr_grpo", max_completion_length=4))
    assert loss == approx(-(1.0 * 2 - 0.5 * 3) / (2 * 4))
    close(grad, [[-1 / 8, -1 / 8, 0.0], [0.5 / 8, 0.5 / 8, 0.5 / 8]])


def test_gspo_on_policy_equals_grpo():
    # s_i = 1 and d s_i / d logp_t = 1 / len_i: the same value and gradient as grpo
    logp, old, mask = logps_with_ratios(LENGTHS)
    g_loss, g_grad, _ = loss_and_grad(logp, old, ADV, mask, LossConfig(loss_type="grpo"))
    s_loss, s_grad, m = loss_and_grad(logp, old, ADV, mask, LossConfig(loss_type="gspo"))
    assert s_loss == approx(g_loss)
    close(s_grad, g_grad)
    assert m["clip_frac/region"] == 0.0


# --- off-policy: clipping by hand ------------------------------------------------------------

# Sequence 0 (A = +1) ratios 1.1 (inside), 1.5 (above 1.28: clipped, no gradient), 0.5 (below the
# range but A > 0: min() keeps the live 0.5 branch), 1.0. Sequence 1 (A = -1) ratios 1.5 (above but
# A < 0: live, min(-1.5, -1.28)), 0.5 (below 0.8 with A < 0: clipped at -0.8), 0.9.
CLIP_RATIOS = [[1.1, 1.5, 0.5, 1.0], [1.5, 0.5, 0.9]]
CLIP_ADV = [1.0, -1.0]
SEQ0_TERMS = [1.1, 1.28, 0.5, 1.0]   # min(r A, clip(r) A) for A = +1
SEQ1_TERMS = [-1.5, -0.8, -0.9]      # for A = -1
LIVE = [[1, 0, 1, 1], [1, 0, 1, 0]]  # tokens whose gradient survives (last of row 1 is padding)


def test_dapo_clip_higher_by_hand():
    logp, old, mask = logps_with_ratios(CLIP_RATIOS)
    loss, grad, m = loss_and_grad(logp, old, CLIP_ADV, mask, LossConfig(loss_type="dapo"))
    assert loss == approx(-(sum(SEQ0_TERMS) + sum(SEQ1_TERMS)) / 7)
    # live token: d(-r A)/d logp = -r A, over the 7 tokens; clipped tokens: exactly 0
    expected = [[-r * a / 7 * live for r, live in zip(rs, ls)] + [0.0] * (4 - len(rs))
                for rs, a, ls in zip(CLIP_RATIOS, CLIP_ADV, LIVE)]
    close(grad, expected)
    assert grad[0, 1].item() == 0.0 and grad[1, 1].item() == 0.0
    assert m["clip_frac/high"] == approx(1 / 7)
    assert m["clip_frac/low"] == approx(1 / 7)
    assert m["clip_frac/region"] == approx(2 / 7)
    assert m["ratio/mean"] == approx(sum(sum(r) for r in CLIP_RATIOS) / 7)


def test_grpo_clip_by_hand():
    logp, old, mask = logps_with_ratios(CLIP_RATIOS)
    loss, grad, _ = loss_and_grad(logp, old, CLIP_ADV, mask, LossConfig(loss_type="grpo"))
    assert loss == approx((-sum(SEQ0_TERMS) / 4 - sum(SEQ1_TERMS) / 3) / 2)
    expected = [[-r * a / (len(rs) * 2) * live for r, live in zip(rs, ls)] + [0.0] * (4 - len(rs))
                for rs, a, ls in zip(CLIP_RATIOS, CLIP_ADV, LIVE)]
    close(grad, expected)


def test_symmetric_clip_clips_what_clip_higher_lets_through():
    logp, old, mask = logps_with_ratios([[1.25]])
    _, grad_higher, _ = loss_and_grad(logp, old, [1.0], mask, LossConfig(loss_type="dapo"))
    _, grad_sym, m = loss_and_grad(logp, old, [1.0], mask, LossConfig(loss_type="dapo", eps_high=0.2))
    assert grad_higher.item() == approx(-1.25) and grad_sym.item() == 0.0
    assert m["clip_frac/high"] == 1.0


def test_dual_clip_delta_bounds_a_negative_advantage_token():
    logp, old, mask = logps_with_ratios([[4.0]])
    loss, grad, _ = loss_and_grad(logp, old, [-1.0], mask, LossConfig(loss_type="dapo"))
    assert loss == approx(4.0) and grad.item() == approx(4.0)  # unbounded: rho A is picked
    loss, grad, _ = loss_and_grad(logp, old, [-1.0], mask, LossConfig(loss_type="dapo", delta=3.0))
    assert loss == approx(3.0) and grad.item() == 0.0  # -min(3 * -1, 1.28 * -1)


def test_gspo_clips_the_sequence_ratio_by_hand():
    # seq 0: log-ratios 1e-3, 0 -> s = exp(5e-4) > 1 + 4e-4 with A > 0: clipped, no gradient.
    # seq 1: log-ratios 2e-4, 0 -> s = exp(1e-4), inside: gradient -A s / (len * B) on each token.
    old = torch.full((2, 2), math.log(0.3))
    logp = (old + torch.tensor([[1e-3, 0.0], [2e-4, 0.0]], dtype=torch.float64).float()).requires_grad_(True)
    mask = torch.ones(2, 2)
    loss, grad, m = loss_and_grad(logp, old, [1.0, 1.0], mask, LossConfig(loss_type="gspo"))
    s1 = math.exp(1e-4)
    assert loss == approx(-(1.0004 + s1) / 2, rel=1e-6)
    close(grad, [[0.0, 0.0], [-s1 / 4, -s1 / 4]])
    assert m["clip_frac/high"] == approx(0.5)  # the tokens of the clipped sequence


def test_cispo_truncates_the_weight_but_keeps_every_gradient():
    # A = +1 ratios 0.5, 2, 6 (6 > cap 5); A = -1 ratio 7. Gradient -sg(min(r, 5)) A / N, N = 4.
    logp, old, mask = logps_with_ratios([[0.5, 2.0, 6.0], [7.0]])
    loss, grad, m = loss_and_grad(logp, old, [1.0, -1.0], mask, LossConfig(loss_type="cispo"))
    lp = [[math.log(0.3 * r) for r in row] for row in [[0.5, 2.0, 6.0], [7.0]]]
    assert loss == approx(-(0.5 * lp[0][0] + 2.0 * lp[0][1] + 5.0 * lp[0][2] - 5.0 * lp[1][0]) / 4)
    close(grad, [[-0.5 / 4, -2.0 / 4, -5.0 / 4], [5.0 / 4, 0.0, 0.0]])
    assert m["clip_frac/high"] == approx(2 / 4) and m["clip_frac/low"] == 0.0
    # the same ratio-6 token under dapo gets no gradient at all
    _, dapo_grad, _ = loss_and_grad(logp, old, [1.0, -1.0], mask, LossConfig(loss_type="dapo"))
    assert dapo_grad[0, 2].item() == 0.0


def test_bnpo_with_one_sequence_equals_grpo():
    logp, old, mask = logps_with_ratios([[1.1, 1.5, 0.5]])
    for kw in ({}, {"total_sequences": 4, "total_tokens": 11}):
        b_loss, b_grad, _ = loss_and_grad(logp, old, [0.7], mask, LossConfig(loss_type="bnpo"), **kw)
        g_loss, g_grad, _ = loss_and_grad(logp, old, [0.7], mask, LossConfig(loss_type="grpo"), **kw)
        assert b_loss == approx(g_loss)
        close(b_grad, g_grad)


def test_bnpo_is_a_local_token_mean_and_differs_from_grpo_on_unequal_lengths():
    logp, old, mask = logps_with_ratios(LENGTHS)
    b_loss, _, _ = loss_and_grad(logp, old, ADV, mask, LossConfig(loss_type="bnpo"))
    g_loss, _, _ = loss_and_grad(logp, old, ADV, mask, LossConfig(loss_type="grpo"))
    assert b_loss == approx(-(1.0 * 2 - 0.5 * 3) / 5) and b_loss != approx(g_loss)
    # given the global dapo normaliser it ignores it: the micro-batch's own tokens, its share 2/8
    b_loss, _, _ = loss_and_grad(logp, old, ADV, mask, LossConfig(loss_type="bnpo"), total_tokens=20, total_sequences=8)
    assert b_loss == approx(-(1.0 * 2 - 0.5 * 3) / 5 * 2 / 8)


# --- KL, mismatch weights, entropy mask inside the loss ---------------------------------------

def test_kl_term_value_and_gradient_by_hand():
    logp, old, mask = logps_with_ratios([[1.0, 1.0]])
    ref = old + torch.tensor([[math.log(0.5), 0.0]])  # ref - logp = -ln 2, 0
    cfg = LossConfig(loss_type="grpo", beta=0.1)
    loss, grad, m = loss_and_grad(logp, old, [1.0], mask, cfg, ref_logp=ref)
    kl = [math.log(2) - 0.5, 0.0]
    assert loss == approx(-1.0 + 0.1 * sum(kl) / 2)
    assert m["kl"] == approx(sum(kl) / 2)
    # d k3 / d logp = 1 - exp(ref - logp)
    close(grad, [[(-1.0 + 0.1 * (1 - 0.5)) / 2, (-1.0 + 0.1 * 0.0) / 2]])
    with pytest.raises(ValueError, match="ref_logp"):
        policy_loss(logp, old, torch.tensor([1.0]), mask, cfg)


def test_is_weights_scale_the_policy_term_only():
    logp, old, mask = logps_with_ratios([[1.0, 1.0]])
    ref = old + torch.tensor([[math.log(0.5), 0.0]])
    w = torch.tensor([[2.0, 0.0]])
    cfg = LossConfig(loss_type="dapo", beta=0.1)
    loss, grad, _ = loss_and_grad(logp, old, [1.0], mask, cfg, ref_logp=ref, is_weights=w)
    assert loss == approx((-2.0 + 0.0 + 0.1 * (math.log(2) - 0.5)) / 2)
    close(grad, [[(-2.0 + 0.1 * 0.5) / 2, 0.0]])


def test_top_entropy_quantile_trains_only_high_entropy_tokens():
    logp, old, mask = logps_with_ratios([[1.0, 1.0, 1.0, 1.0]])
    entropy = torch.tensor([[0.1, 2.0, 0.3, 1.5]])
    cfg = LossConfig(loss_type="dapo", top_entropy_quantile=0.5)
    loss, grad, m = loss_and_grad(logp, old, [1.0], mask, cfg, entropy=entropy)
    close(grad, [[0.0, -1 / 4, 0.0, -1 / 4]])  # the top half; the normaliser still counts all 4 tokens
    assert loss == approx(-2 / 4)
    assert m["entropy/trained_frac"] == 0.5 and m["entropy"] == approx(3.9 / 4)
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp, old, torch.tensor([1.0]), mask, cfg)


def test_padding_with_minus_inf_logps_gives_no_nan():
    logp, old, mask = logps_with_ratios([[1.2, 0.9], [1.1]])
    pad = torch.tensor([[False, False], [False, True]])
    logp = logp.detach().masked_fill(pad, -math.inf).requires_grad_(True)
    old = old.masked_fill(pad, -math.inf)
    for name in LOSSES:
        loss, grad, _ = loss_and_grad(logp, old, [1.0, -1.0], mask, LossConfig(loss_type=name, beta=0.05), ref_logp=old)
        assert math.isfinite(loss) and torch.isfinite(grad).all() and grad[1, 1].item() == 0.0, name


# --- accumulation: micro-batch losses sum to the global batch's --------------------------------

@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "dapo", "gspo", "cispo"])
def test_micro_batch_losses_sum_to_the_full_batch(name):
    torch.manual_seed(0)
    lengths = [5, 2, 4, 1]
    mask = torch.tensor([[1.0] * n + [0.0] * (5 - n) for n in lengths])
    old = torch.log(torch.rand(4, 5) * 0.9 + 0.05)
    logp = (old + 0.3 * torch.randn(4, 5)).requires_grad_(True)
    ref = old + 0.1 * torch.randn(4, 5)
    adv = torch.tensor([1.0, -0.5, 0.25, -2.0])
    cfg = LossConfig(loss_type=name, beta=0.04, eps_low=0.1, eps_high=0.15, gspo_eps_low=0.05, gspo_eps_high=0.05,
                     cispo_eps_high=1.2)
    full, _ = policy_loss(logp, old, adv, mask, cfg, ref_logp=ref)
    (full_grad,) = torch.autograd.grad(full, logp)
    totals = dict(total_tokens=mask.sum().item(), total_sequences=4)
    parts = [policy_loss(logp[s], old[s], adv[s], mask[s], cfg, ref_logp=ref[s], **totals)[0]
             for s in (slice(0, 1), slice(1, 4))]
    (part_grad,) = torch.autograd.grad(sum(parts), logp)
    assert sum(parts).item() == approx(full.item())
    close(part_grad, full_grad)


def test_bnpo_micro_batches_weigh_their_own_token_means_by_sequence_share():
    logp, old, mask = logps_with_ratios([[1.1, 0.9, 1.0], [1.2], [0.8, 1.0]])
    adv = torch.tensor([1.0, -1.0, 0.5])
    cfg = LossConfig(loss_type="bnpo")
    first, _ = policy_loss(logp[:1], old[:1], adv[:1], mask[:1], cfg, total_sequences=3)
    rest, _ = policy_loss(logp[1:], old[1:], adv[1:], mask[1:], cfg, total_sequences=3)
    local_first = -(1.1 + 0.9 + 1.0) / 3
    local_rest = -(-1.2 + 0.5 * 0.8 + 0.5 * 1.0) / 3
    assert (first + rest).item() == approx(local_first * 1 / 3 + local_rest * 2 / 3)


def test_loss_config_names_the_bad_field():
    with pytest.raises(ValueError, match="'grpo'.*'sapo'|sapo.*not one of"):
        LossConfig(loss_type="sapo")
    with pytest.raises(ValueError, match="delta"):
        LossConfig(delta=1.1)
    with pytest.raises(ValueError, match="top_entropy_quantile"):
        LossConfig(top_entropy_quantile=0.0)


# --- rollout / trainer mismatch ---------------------------------------------------------------

# token ratios pi_old / pi_rollout: row 0 = 2, 0.5, 1; row 1 = 4, 1, then padding
OLD = torch.log(torch.tensor([[0.5, 0.4, 0.9], [0.8, 0.3, 0.5]]))
ROLL = torch.log(torch.tensor([[0.25, 0.8, 0.9], [0.2, 0.3, 0.5]]))
MMASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])


def test_mismatch_metrics_by_hand():
    _, m = mismatch_weights(OLD, ROLL, MMASK, mode="none")
    assert m["mismatch/ratio_mean"] == approx((2 + 0.5 + 1 + 4 + 1) / 5)
    assert m["mismatch/ratio_min"] == approx(0.5) and m["mismatch/ratio_max"] == approx(4.0)
    assert m["mismatch/logp_diff_mean"] == approx(4 * math.log(2) / 5)
    assert m["mismatch/logp_diff_max"] == approx(math.log(4))
    assert m["mismatch/masked_token_frac"] == 0.0 and m["mismatch/truncated_frac"] == 0.0


@pytest.mark.parametrize("mode, lower, weights, masked_tok, masked_seq, truncated", [
    ("none", None, [[1, 1, 1], [1, 1, 0]], 0, 0, 0),
    ("token_truncate", None, [[2, 0.5, 1], [3, 1, 0]], 0, 0, 1 / 5),
    ("token_truncate", 0.6, [[2, 0.6, 1], [3, 1, 0]], 0, 0, 2 / 5),
    ("token_mask", 0.6, [[2, 0, 1], [0, 1, 0]], 2 / 5, 1.0, 0),
    # sequence ratios: 2 * 0.5 * 1 = 1 and 4 * 1 = 4
    ("sequence_truncate", None, [[1, 1, 1], [3, 3, 0]], 0, 0, 2 / 5),
    ("sequence_mask", None, [[1, 1, 1], [0, 0, 0]], 2 / 5, 1 / 2, 0),
    ("sequence_mask", 1.5, [[0, 0, 0], [0, 0, 0]], 1.0, 1.0, 0),
])
def test_mismatch_weights_by_hand(mode, lower, weights, masked_tok, masked_seq, truncated):
    w, m = mismatch_weights(OLD, ROLL, MMASK, mode=mode, cap=3.0, lower=lower)
    close(w, weights, atol=1e-5)
    assert m["mismatch/masked_token_frac"] == approx(masked_tok)
    assert m["mismatch/masked_seq_frac"] == approx(masked_seq)
    assert m["mismatch/truncated_frac"] == approx(truncated)


def test_mismatch_weights_survive_minus_inf_padding_and_check_options():
    old, roll = OLD.masked_fill(MMASK == 0, -math.inf), ROLL.masked_fill(MMASK == 0, 0.0)
    w, m = mismatch_weights(old, roll, MMASK, mode="sequence_truncate")
    assert torch.isfinite(w).all() and all(math.isfinite(v) for v in m.values())
    with pytest.raises(ValueError, match="mode"):
        mismatch_weights(OLD, ROLL, MMASK, mode="tis")
    with pytest.raises(ValueError, match="lower"):
        mismatch_weights(OLD, ROLL, MMASK, mode="token_mask", cap=2.0, lower=3.0)


# --- per-token advantages (the trainer's slip penalty) ---------------------------------------------

@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "dapo", "bnpo", "cispo"])
def test_per_token_advantages_equal_to_the_sequence_one_give_the_same_loss(name):
    cfg = LossConfig(loss_type=name, max_completion_length=4)
    logp, old, mask = logps_with_ratios([[1.1, 0.9], [1.3, 0.7, 1.0]])
    per_sequence = loss_and_grad(logp, old, ADV, mask, cfg)
    per_token = loss_and_grad(logp, old, [[a] * 3 for a in ADV], mask, cfg)
    assert per_token[0] == approx(per_sequence[0])
    close(per_token[1], per_sequence[1])


def test_dapo_per_token_credit_moves_only_its_token_by_hand():
    # Sequence 2 (advantage -0.5) with -1 more on its second token, on policy: dapo's gradient per
    # token is -A_t / 5 tokens, so that token gets (0.5 + 1) / 5 and its neighbours 0.5 / 5.
    logp, old, mask = logps_with_ratios(LENGTHS)
    adv = [[ADV[0]] * 3, [ADV[1], ADV[1] - 1.0, ADV[1]]]
    loss, grad, _ = loss_and_grad(logp, old, adv, mask, LossConfig(loss_type="dapo"))
    assert loss == approx(-(1.0 * 2 - 0.5 * 3 - 1.0) / 5)
    close(grad, [[-1 / 5, -1 / 5, 0.0], [0.5 / 5, 1.5 / 5, 0.5 / 5]])


def test_gspo_refuses_per_token_advantages():
    logp, old, mask = logps_with_ratios(LENGTHS)
    with pytest.raises(ValueError, match="one advantage per sequence"):
        loss_and_grad(logp, old, [[1.0] * 3, [0.5] * 3], mask, LossConfig(loss_type="gspo"))
