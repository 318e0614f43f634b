"""The GRPO family's math on plain tensors: advantages, the policy losses, KL, mismatch weights, entropy.

No model, no I/O, no config import: the trainer passes tensors and a `LossConfig` it fills from its
own config section. Shapes: B sequences, T completion positions, V vocabulary; `mask_BT` is 1 on the
completion tokens that train.

- `group_advantages`: GRPO's `(r - mean_group) / (std_group + eps)` (DeepSeekMath), Dr. GRPO's
  `r - mean_group` (scale "none", Liu et al. 2025), or the whole batch's reward std ("batch",
  PPO-Lite in "Tricks or Traps", Liu et al. 2025). std is the unbiased (Bessel) one, as TRL's
  `torch.std`; eps 1e-4 as TRL.
- `dynamic_sampling_keep`: DAPO's filter, False for groups whose rewards are all equal (they have
  zero advantage everywhere and teach nothing but dilute the batch).
- `policy_loss` with `LOSSES` (TRL's `loss_type` names; the papers' per-token terms):
    * `grpo`: PPO clip `min(rho A, clip(rho, 1-eps_low, 1+eps_high) A)`, token mean per sequence,
      then mean over sequences (DeepSeekMath / R1; long sequences weigh less per token).
    * `dr_grpo`: same term, sum / (sequences x max_completion_length) (Dr. GRPO: no length bias).
    * `dapo`: same term with clip-higher (eps_high 0.28), sum / tokens of the whole batch (DAPO).
    * `bnpo`: sum / tokens of this micro-batch only (TRL's bnpo), scaled by the micro-batch's share
      of the batch's sequences; equal to `grpo` for one sequence.
    * `gspo`: one ratio per sequence, `s_i = exp(mean_t(logp - old_logp))`, clipped per sequence
      with eps 3e-4 / 4e-4 (GSPO, Zheng et al. 2025, arXiv 2507.18071; TRL's recipe values).
    * `cispo`: `-sg(min(rho, cispo_eps_high)) A logp`: the clipped IS weight is a constant, so
      every token keeps its gradient (CISPO, MiniMax-M1, arXiv 2506.13585).
  Optional on top: TRL's `delta` dual clip, the k3 KL to a reference (`beta`), rollout-mismatch
  weights, and the "80/20" top-entropy token mask (Wang et al. 2025, arXiv 2506.01939).
- `k3_kl`: Schulman's k3 estimator of KL(pi_theta || pi_ref), `exp(ref - logp) - (ref - logp) - 1`.
- `mismatch_weights`: the trainer's pi_old over the rollout engine's probabilities, truncated or
  masked per token or per sequence (TIS, Yao et al. 2025 / veRL; TRL's `vllm_importance_sampling_mode`).
- `entropy_from_logits`, `top_entropy_mask`: per-token entropy and the high-entropy ("forking")
  token mask.

Reward shaping lives with the rewards, not here: the Kimi k1.5 length penalty is
`rewards.length.kimi_length_penalty` / `kimi_length_reward`, DAPO's overlong shaping is
`rewards.length.overlong_penalty` / `overlong_reward`.

Normalisers and gradient accumulation: `policy_loss` returns the loss of ONE micro-batch, scaled so
that the losses of all micro-batches of an optimizer step sum to the step's loss. Token-mean losses
(`dapo`, `cispo`) divide by `total_tokens`; sequence-mean losses (`grpo`, `gspo`, `bnpo`'s share) by
`total_sequences`, `dr_grpo` by `total_sequences x max_completion_length`. Both default to this
micro-batch's own counts (right for one micro-batch on one process). Otherwise pass the counts over
the whole optimizer step (every accumulation micro-batch of every process) divided by the number of
processes, because DDP/FSDP average gradients over processes -- TRL's
`num_items_in_batch / num_processes`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, NamedTuple

import torch
from torch import Tensor


# ---------------------------------------------------------------------------------------------
# Advantages and the batch filter


def group_advantages(rewards_G: Tensor, *, baseline: str = "group",
                     scale: Literal["group", "batch", "none"] = "group", eps: float = 1e-4) -> Tensor:
    """Advantages (n_groups, G) from rewards (n_groups, G): each prompt's G samples are one row.

    baseline "group": the group's mean reward. scale "group": divide by the group's reward std
    (GRPO); "batch": by the std of every reward in `rewards_G` (call it on the whole batch, gathered
    across processes, or the std is a per-process one); "none": no division (Dr. GRPO, whose paper
    shows that std scaling up-weights too-easy and too-hard prompts). std is unbiased, as TRL's; a
    group of one sample (or a batch of one reward) has std 0, so its advantage is 0.
    """
    if baseline != "group":
        raise ValueError(f"group_advantages: baseline must be 'group' (the group's mean reward), got {baseline!r}")
    if scale not in ("group", "batch", "none"):
        raise ValueError(f"group_advantages: scale must be one of 'group', 'batch', 'none', got {scale!r}")
    assert rewards_G.dim() == 2, f"rewards must be (n_groups, G), got shape {tuple(rewards_G.shape)}"
    rewards_G = rewards_G.float()
    adv_G = rewards_G - rewards_G.mean(dim=1, keepdim=True)
    if scale == "none":
        return adv_G
    if scale == "group":
        std = rewards_G.std(dim=1, keepdim=True) if rewards_G.shape[1] > 1 else torch.zeros_like(rewards_G[:, :1])
    else:
        std = rewards_G.std() if rewards_G.numel() > 1 else rewards_G.new_zeros(())
    # eps keeps an all-equal group at 0 / eps = 0 instead of 0 / 0
    return adv_G / (std + eps)


def dynamic_sampling_keep(rewards_G: Tensor, *, tol: float = 1e-6) -> Tensor:
    """(n_groups,) bool: False where a group's rewards are all equal (within `tol`), DAPO's filter.

    Such a group has zero advantage for every sample, so it adds no gradient, only tokens to the
    normaliser; DAPO drops it and samples more prompts until the batch is full.
    """
    assert rewards_G.dim() == 2, f"rewards must be (n_groups, G), got shape {tuple(rewards_G.shape)}"
    return (rewards_G.amax(dim=1) - rewards_G.amin(dim=1)) > tol


# ---------------------------------------------------------------------------------------------
# Per-token quantities


def k3_kl(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """Per-token k3 estimate of KL(pi_theta || pi_ref) on tokens sampled from the policy (same shape).

    `exp(ref - logp) - (ref - logp) - 1` (Schulman, "Approximating KL divergence"): unbiased, always
    >= 0 and low-variance, which is why DeepSeekMath uses it instead of log(pi/pi_ref).
    """
    log_ratio = ref_logp - logp
    return torch.exp(log_ratio) - log_ratio - 1


def entropy_from_logits(logits: Tensor) -> Tensor:
    """Entropy of softmax(logits) over the last axis, in float32: (..., V) -> (...).

    A -inf logit (a masked vocabulary entry) contributes 0, not NaN. The trainer may call it on
    chunks of the sequence to bound the float32 copy of the logits.
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    p = logp.exp()
    return -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum(dim=-1)


def top_entropy_mask(entropy: Tensor, mask: Tensor, quantile: float) -> Tensor:
    """(B, T) bool: the completion tokens among the `quantile` fraction with the highest entropy.

    Wang et al. 2025 ("Beyond the 80/20 rule") find that the policy gradient on the ~20 % highest-
    entropy ("forking") tokens alone matches or beats training on all tokens. The threshold is the
    (1 - quantile) quantile of this micro-batch's completion-token entropies, as TRL's
    `top_entropy_quantile`; quantile 1.0 keeps every completion token.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"top_entropy_quantile must be in (0, 1], got {quantile}")
    keep_BT = mask.bool()
    if quantile >= 1.0 or not keep_BT.any():
        return keep_BT
    threshold = torch.quantile(entropy.detach()[keep_BT].float(), 1.0 - quantile)
    return keep_BT & (entropy.detach() >= threshold)


# ---------------------------------------------------------------------------------------------
# Policy losses


@dataclass
class LossConfig:
    """The loss's knobs, plain fields; the trainer fills them from its config section."""

    loss_type: str = "dapo"            # a name in LOSSES
    eps_low: float = 0.2
    eps_high: float = 0.28             # clip-higher (DAPO); = eps_low for symmetric clipping
    delta: float | None = None         # dual clip: rho cap in the unclipped branch (TRL's, INTELLECT-2); > 1 + eps_high
    beta: float = 0.0                  # k3 KL weight to the reference; 0 = no KL term (DAPO, Dr. GRPO)
    max_completion_length: int = 256   # dr_grpo's constant normaliser is sequences x this
    top_entropy_quantile: float = 1.0  # < 1: only this fraction of highest-entropy tokens get policy gradient
    # GSPO's ratio is a per-token geometric mean, so it moves ~1/length as fast as a token ratio:
    # the paper (v2, section 5.1) and TRL's recipe clip at 3e-4 / 4e-4 instead of 0.2 / 0.28.
    gspo_eps_low: float = 3e-4
    gspo_eps_high: float = 4e-4
    # CISPO's cap on the IS weight itself (not 1 + eps): TRL's epsilon_high under loss_type="cispo",
    # ScaleRL's eps_max = 5.0. MiniMax-M1 sets no lower bound, so there is none here.
    cispo_eps_high: float = 5.0

    def __post_init__(self) -> None:
        if self.loss_type not in LOSSES:
            raise ValueError(f"loss_type {self.loss_type!r} is not one of {sorted(LOSSES)}")
        for name in ("eps_low", "eps_high", "gspo_eps_low", "gspo_eps_high", "beta"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.delta is not None and self.delta <= 1.0 + self.eps_high:
            raise ValueError(f"delta must be > 1 + eps_high = {1.0 + self.eps_high} (or null), got {self.delta}")
        if self.cispo_eps_high <= 0:
            raise ValueError(f"cispo_eps_high must be > 0, got {self.cispo_eps_high}")
        if self.max_completion_length < 1:
            raise ValueError(f"max_completion_length must be >= 1, got {self.max_completion_length}")
        if not 0.0 < self.top_entropy_quantile <= 1.0:
            raise ValueError(f"top_entropy_quantile must be in (0, 1], got {self.top_entropy_quantile}")


class Surrogate(NamedTuple):
    """One loss's per-token policy term and what it clipped (all (B, T))."""

    loss_BT: Tensor       # per-token loss to minimise (no KL yet)
    ratio_BT: Tensor      # the importance ratio the term used (detached), for logging
    low_BT: Tensor        # bool: clipped at the lower bound (no gradient)
    high_BT: Tensor       # bool: clipped at the upper bound (PPO-style: no gradient; cispo: weight truncated)


def _ppo_clip(ratio, adv, eps_low: float, eps_high: float, delta: float | None) -> Surrogate:
    """-min(rho A, clip(rho) A) with TRL's optional dual clip; ratio and adv (B, T) or (B, 1)."""
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    capped = ratio
    if delta is not None:
        # For A < 0 an ever larger rho makes rho A ever more negative, and min() picks it: an
        # unbounded step on a token the old policy thought unlikely. Capping rho at delta bounds it
        # (and that token, like a clipped one, gets no gradient; counted in neither clip fraction, as TRL).
        capped = ratio.clamp(max=delta)
    loss = -torch.min(capped * adv, clipped * adv)
    # where min() picks the constant clipped branch the token gets no gradient: ratio below the
    # range with A < 0, or above it with A > 0 (the other two cases keep the unclipped, live branch)
    low = (ratio < 1 - eps_low) & (adv < 0)
    high = (ratio > 1 + eps_high) & (adv > 0)
    return Surrogate(loss, ratio.detach(), low, high)


def _token_clip(logp_BT, old_logp_BT, adv_BT, mask_BT, cfg: LossConfig) -> Surrogate:
    """The PPO/GRPO per-token term (grpo, dr_grpo, dapo, bnpo differ only in the normaliser)."""
    ratio_BT = torch.exp(logp_BT - old_logp_BT)
    return _ppo_clip(ratio_BT, adv_BT, cfg.eps_low, cfg.eps_high, cfg.delta)


def _gspo(logp_BT, old_logp_BT, adv_B1, mask_BT, cfg: LossConfig) -> Surrogate:
    """GSPO: s_i = exp(mean_t log rho_t), clipped per sequence, broadcast over the sequence's tokens.

    Value and gradient equal the paper's GSPO-token form with A_{i,t} = A_i: d s_i / d logp_t =
    s_i / |y_i|, so after the per-sequence token mean every token of sequence i gets
    -s_i A_i / |y_i| (unclipped), the paper's sequence-level gradient. Clip fractions are then the
    share of tokens whose sequence was clipped.
    """
    n_B = mask_BT.sum(dim=1).clamp(min=1)
    seq_log_ratio_B1 = (((logp_BT - old_logp_BT) * mask_BT).sum(dim=1) / n_B)[:, None]
    s = _ppo_clip(torch.exp(seq_log_ratio_B1), adv_B1, cfg.gspo_eps_low, cfg.gspo_eps_high, cfg.delta)
    shape = logp_BT.shape
    return Surrogate(s.loss_BT.expand(shape), s.ratio_BT.expand(shape), s.low_BT.expand(shape), s.high_BT.expand(shape))


def _cispo(logp_BT, old_logp_BT, adv_BT, mask_BT, cfg: LossConfig) -> Surrogate:
    """CISPO: -sg(min(rho, cap)) A logp. PPO's clip zeroes the gradient of rare tokens whose ratio
    leaves the trust region (MiniMax-M1's "However", "Wait" forks); clipping only the constant
    weight keeps every token's REINFORCE gradient and bounds its size."""
    ratio_BT = torch.exp(logp_BT - old_logp_BT).detach()
    weight_BT = ratio_BT.clamp(max=cfg.cispo_eps_high)
    loss_BT = -weight_BT * adv_BT * logp_BT
    # the weight is truncated whatever A's sign (TRL counts only A > 0)
    return Surrogate(loss_BT, ratio_BT, torch.zeros_like(mask_BT, dtype=torch.bool), ratio_BT > cfg.cispo_eps_high)


class Loss(NamedTuple):
    """A registry entry: the per-token term and how the batch's tokens are averaged."""

    surrogate: Callable[..., Surrogate]
    reduction: Literal["sequence_mean", "token_mean", "fixed_length", "local_token_mean"]


LOSSES: dict[str, Loss] = {
    "grpo": Loss(_token_clip, "sequence_mean"),
    "dr_grpo": Loss(_token_clip, "fixed_length"),
    "dapo": Loss(_token_clip, "token_mean"),
    "bnpo": Loss(_token_clip, "local_token_mean"),
    "gspo": Loss(_gspo, "sequence_mean"),
    "cispo": Loss(_cispo, "token_mean"),
}


def _masked_mean(x_BT: Tensor, mask_BT: Tensor) -> float:
    return float((x_BT.float() * mask_BT).sum() / mask_BT.sum().clamp(min=1))


def policy_loss(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, cfg: LossConfig, *,
                ref_logp: Tensor | None = None, is_weights: Tensor | None = None, entropy: Tensor | None = None,
                total_tokens: float | None = None, total_sequences: float | None = None,
                ) -> tuple[Tensor, dict[str, float]]:
    """This micro-batch's loss (scalar, to backprop) and its metrics.

    logp (B, T): the policy's log-probs of the sampled tokens, with grad. old_logp (B, T): pi_old's,
    the policy before this step's inner iterations (with mu = 1 the values are equal, the ratio is 1
    and the logged loss is minus a weighted mean advantage, about 0, yet the gradient is the full
    policy gradient). advantages (B,), or (B, T) for per-token credit (the trainer's slip penalty;
    not with gspo, whose ratio is per sequence). mask (B, T): 1 on trained completion tokens.
    ref_logp (B, T): the reference's, needed when cfg.beta > 0 (logged as `kl` whenever given).
    is_weights (B, T): `mismatch_weights`. entropy (B, T): logged, and selects the trained tokens
    when cfg.top_entropy_quantile < 1.

    The top-entropy mask and the mismatch weights scale only the policy term; the KL term keeps every
    token (as TRL). total_tokens / total_sequences: see the module docstring; they default to this
    micro-batch's completion tokens / B. Metrics are this micro-batch's means over its completion
    tokens; the trainer averages them over micro-batches and processes.
    """
    spec = LOSSES[cfg.loss_type]
    assert logp.shape == old_logp.shape == mask.shape, (tuple(logp.shape), tuple(old_logp.shape), tuple(mask.shape))
    # padding may hold -inf or garbage log-probs: zero them so no NaN reaches the sum or the grad
    pad_BT = ~mask.bool()
    logp_BT = logp.float().masked_fill(pad_BT, 0.0)
    old_logp_BT = old_logp.detach().float().masked_fill(pad_BT, 0.0)
    mask_BT = mask.float()
    B, T = logp_BT.shape
    # one advantage per sequence (B,), broadcast over its tokens, or one per token (B, T)
    adv_BT = advantages.detach().float()
    adv_BT = adv_BT[:, None] if adv_BT.dim() == 1 else adv_BT
    assert adv_BT.shape in ((B, 1), (B, T)), f"advantages must be (B,) or (B, T), got {tuple(advantages.shape)}"
    if spec.surrogate is _gspo and adv_BT.shape[1] != 1:
        raise ValueError("loss_type gspo has one ratio per sequence: it takes one advantage per sequence, "
                         "not per-token advantages (grpo.slip_penalty needs a token-level loss)")

    term = spec.surrogate(logp_BT, old_logp_BT, adv_BT, mask_BT, cfg)
    pg_BT = term.loss_BT
    metrics: dict[str, float] = {}
    if cfg.top_entropy_quantile < 1.0:
        if entropy is None:
            raise ValueError("top_entropy_quantile < 1 needs the per-token entropy (entropy=...)")
        keep_BT = top_entropy_mask(entropy, mask_BT, cfg.top_entropy_quantile)
        pg_BT = pg_BT * keep_BT
        metrics["entropy/trained_frac"] = _masked_mean(keep_BT, mask_BT)
    if is_weights is not None:
        pg_BT = pg_BT * is_weights.detach().float().masked_fill(pad_BT, 0.0)
    per_token_BT = pg_BT
    if cfg.beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs the reference model's log-probs (ref_logp=...)")
    if ref_logp is not None:
        kl_BT = k3_kl(logp_BT, ref_logp.detach().float().masked_fill(pad_BT, 0.0))
        if cfg.beta > 0:
            per_token_BT = per_token_BT + cfg.beta * kl_BT
        metrics["kl"] = _masked_mean(kl_BT.detach(), mask_BT)

    n_seq = float(B) if total_sequences is None else float(total_sequences)
    assert n_seq > 0 and (total_tokens is None or float(total_tokens) > 0), (total_sequences, total_tokens)
    summed_B = (per_token_BT * mask_BT).sum(dim=1)
    tokens_B = mask_BT.sum(dim=1)
    if spec.reduction == "sequence_mean":
        loss = (summed_B / tokens_B.clamp(min=1)).sum() / n_seq
    elif spec.reduction == "fixed_length":
        loss = summed_B.sum() / (n_seq * cfg.max_completion_length)
    elif spec.reduction == "token_mean":
        n_tok = tokens_B.sum().clamp(min=1) if total_tokens is None else float(total_tokens)
        loss = summed_B.sum() / n_tok
    else:  # local_token_mean (bnpo): this micro-batch's token mean, weighted by its share of sequences
        loss = summed_B.sum() / tokens_B.sum().clamp(min=1) * (B / n_seq)

    metrics.update({
        "loss": float(loss.detach()),
        "clip_frac/low": _masked_mean(term.low_BT, mask_BT),
        "clip_frac/high": _masked_mean(term.high_BT, mask_BT),
        "clip_frac/region": _masked_mean(term.low_BT | term.high_BT, mask_BT),
        "ratio/mean": _masked_mean(term.ratio_BT, mask_BT),
    })
    if entropy is not None:
        metrics["entropy"] = _masked_mean(entropy.detach(), mask_BT)
    return loss, metrics


# ---------------------------------------------------------------------------------------------
# Rollout / trainer mismatch


MismatchMode = Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask", "none"]


@torch.no_grad()
def mismatch_weights(old_logp: Tensor, rollout_logp: Tensor, mask: Tensor, *, mode: MismatchMode,
                     cap: float = 3.0, lower: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """Importance weights (B, T) of pi_old (the trainer's forward) over pi_rollout (the engine's), 0
    on padding, and metrics.

    The engine's kernels, precision and (for an MoE) expert routing differ from the trainer's, so
    its samples come from a slightly different policy; the loss is reweighted to pi_old's.
      token_truncate     min(rho_t, cap)                       TIS (Yao et al. 2025, veRL)
      token_mask         rho_t inside [lower, cap], else 0
      sequence_truncate  min(prod_t rho_t, cap) on every token of the sequence
      sequence_mask      prod_t rho_t inside [lower, cap], else 0 for the whole sequence (TRL's default)
      none               1 (the metrics still measure the mismatch)
    cap is TRL's `vllm_importance_sampling_clip_max` (default 3), lower its `_clip_min` (default
    none): the truncate modes clamp to [lower, cap] as TRL does. A sequence ratio is a product over
    the whole completion, so on long completions it drifts far from 1 even for small per-token gaps.
    """
    modes = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask", "none")
    if mode not in modes:
        raise ValueError(f"mismatch mode {mode!r} is not one of {modes}")
    if cap <= 0 or (lower is not None and not 0 <= lower < cap):
        raise ValueError(f"mismatch thresholds need 0 <= lower < cap, got lower={lower}, cap={cap}")
    mask_BT = mask.float()
    on_BT = mask_BT > 0
    log_ratio_BT = torch.where(on_BT, old_logp.float() - rollout_logp.float(), 0.0)
    ratio_BT = torch.exp(log_ratio_BT)
    if mode.startswith("sequence"):
        raw_BT = torch.exp(log_ratio_BT.sum(dim=1, keepdim=True)).expand_as(mask_BT)
    else:
        raw_BT = ratio_BT
    lo = 0.0 if lower is None else lower
    outside_BT = (raw_BT > cap) | (raw_BT < lo)
    if mode == "none":
        weights_BT = torch.ones_like(mask_BT)
    elif mode.endswith("truncate"):
        weights_BT = raw_BT.clamp(min=lo, max=cap)
    else:
        weights_BT = raw_BT.masked_fill(outside_BT, 0.0)
    weights_BT = weights_BT * mask_BT

    masked_BT = on_BT & outside_BT if mode.endswith("mask") else torch.zeros_like(on_BT)
    truncated_BT = on_BT & outside_BT if mode.endswith("truncate") else torch.zeros_like(on_BT)
    tok_ratio = ratio_BT[on_BT]
    diff = log_ratio_BT.abs()[on_BT]
    seqs_masked = masked_BT.any(dim=1)[on_BT.any(dim=1)]  # over sequences with completion tokens
    empty = tok_ratio.numel() == 0
    metrics = {
        "mismatch/ratio_mean": 1.0 if empty else float(tok_ratio.mean()),
        "mismatch/ratio_min": 1.0 if empty else float(tok_ratio.min()),
        "mismatch/ratio_max": 1.0 if empty else float(tok_ratio.max()),
        "mismatch/logp_diff_mean": 0.0 if empty else float(diff.mean()),
        "mismatch/logp_diff_max": 0.0 if empty else float(diff.max()),
        "mismatch/masked_token_frac": _masked_mean(masked_BT, mask_BT),
        # a sequence counts as masked when any of its tokens is (all of them in the sequence modes)
        "mismatch/masked_seq_frac": float(seqs_masked.float().mean()) if seqs_masked.numel() else 0.0,
        "mismatch/truncated_frac": _masked_mean(truncated_BT, mask_BT),
    }
    return weights_BT, metrics
