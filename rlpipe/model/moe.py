"""DeepSeekMoE: sigmoid router with auxiliary-loss-free bias, routed + shared experts, balance terms.

- `Router` (HF name `gate`): `s = sigmoid(x W_g^T)` in fp32. Selection uses `s + b`
  (`b = e_score_correction_bias`, a buffer: no gradient, only affects which experts are chosen).
  With groups: group score = sum of its top-2 biased scores, keep `topk_group` groups, mask the
  others to -inf, then top-k experts. The DeepSeek reference `inference/model.py`, vLLM and
  transformers 5.19 all mask with -inf (checked: logits agree to 1e-6 with negative biases and
  4 groups keeping 2). Older transformers masked with 0.0, which lets an expert of a dropped group
  win whenever kept experts' biased scores are negative -- possible only through a negative bias,
  as sigmoid scores are positive. Gate weights are gathered from the UNBIASED `s`, divided by
  their sum (`norm_topk_prob`) and multiplied by `routed_scaling_factor`.
- `Experts`: all routed experts' weights as 3-D tensors (`gate_up_proj (E, 2I, D)`, `down_proj
  (E, D, I)`); tokens are sorted by expert and each expert runs one matmul over its contiguous slice
  (no Python loop over tokens; `torch._grouped_mm` would fuse the loop but has no CPU backward in
  torch 2.13). The checkpoint stores one key per expert (vLLM's layout); `hf_io` splits/joins them.
- `MoE`: `sum_i w_i Expert_i(x) + SharedExperts(x)`. In training mode it accumulates routed tokens
  per expert into `tokens_per_expert`; `update_bias` applies the sign rule of auxiliary-loss-free
  balancing once per optimizer step. It also returns the sequence-wise balance loss
  `sum_i f_i P_i` of DeepSeek-V3 (eq. 17-20), computed per batch row.
- Routing replay (R3, arXiv 2510.11370; "Keep Routing" in DeepSeek-V3.2): `Router(x, indices)` takes
  the top-k experts from a recorded selection instead of choosing them, and gathers the gate weights
  from the live scores at those experts, so the router keeps its gradient. RL records the selection
  of the pass that produced the old-policy logprobs and replays it in the training forward, where
  the moved policy (or kernel noise) would otherwise route a token elsewhere. The balance counts
  and balance loss use whichever selection ran. `routing_mismatch` measures how far two recorded
  selections disagree.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import MLP


class Router(nn.Module):
    """Top-k sigmoid router with group-limited selection and a selection-only bias."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_experts = config.n_routed_experts
        self.top_k = config.num_experts_per_tok
        self.n_group = config.n_group
        self.topk_group = config.topk_group
        self.norm_topk_prob = config.norm_topk_prob
        self.routed_scaling_factor = config.routed_scaling_factor
        self.weight = nn.Parameter(torch.empty(self.n_experts, config.hidden_size))
        # fp32 always: updates of size gamma = 1e-3 would vanish in bf16.
        self.register_buffer("e_score_correction_bias", torch.zeros(self.n_experts, dtype=torch.float32))

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, D) -> gate weights (N, k) fp32, expert indices (N, k) int64, unbiased scores (N, E) fp32.

        `indices` (N, k), any integer dtype: replay this selection instead of choosing (bias and
        groups play no part); the weights still come from this call's scores.
        """
        with torch.autocast(x.device.type, enabled=False):  # fp32 even inside a bf16 autocast region
            scores = torch.sigmoid(F.linear(x.float(), self.weight.float()))  # (N, E)
        if indices is None:
            indices = self.select(scores.detach())
        else:
            indices = indices.to(device=scores.device, dtype=torch.long)
        weights = scores.gather(1, indices)
        if self.norm_topk_prob:
            weights = weights / (weights.sum(-1, keepdim=True) + 1e-20)
        return weights * self.routed_scaling_factor, indices, scores

    def select(self, scores: torch.Tensor) -> torch.Tensor:
        """Unbiased scores (N, E) -> top-k experts (N, k) of the biased, group-limited scores."""
        biased = scores + self.e_score_correction_bias  # selection only: no gradient path
        if self.n_group > 1:
            grouped = biased.view(-1, self.n_group, self.n_experts // self.n_group)  # (N, G, E/G)
            group_scores = grouped.topk(2, dim=-1).values.sum(-1)  # (N, G)
            keep = group_scores.topk(self.topk_group, dim=-1).indices
            dropped = torch.ones_like(group_scores, dtype=torch.bool).scatter_(1, keep, False)
            biased = grouped.masked_fill(dropped.unsqueeze(-1), float("-inf")).flatten(1)
        return biased.topk(self.top_k, dim=-1).indices  # (N, k)


class Experts(nn.Module):
    """E SwiGLU experts run over tokens sorted by expert, one matmul pair per expert."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        E, D, I = config.n_routed_experts, config.hidden_size, config.moe_intermediate_size
        self.n_experts = E
        self.gate_up_proj = nn.Parameter(torch.empty(E, 2 * I, D))  # rows [gate | up], as nn.Linear weights
        self.down_proj = nn.Parameter(torch.empty(E, D, I))

    def forward(self, x: torch.Tensor, weights: torch.Tensor, indices: torch.Tensor,
                counts: torch.Tensor) -> torch.Tensor:
        """x (N, D), weights/indices (N, k), counts (E,) -> (N, D) = sum_k w_k Expert_{i_k}(x)."""
        N, k = indices.shape
        order = indices.flatten().argsort(stable=True)  # (N k,) assignments grouped by expert
        token = order // k
        xs = x[token]  # (N k, D)
        outs = []
        # unbind once: indexing [e] per expert would make backward zero-fill a full (E, ...) gradient per expert
        gate_up, down = self.gate_up_proj.unbind(0), self.down_proj.unbind(0)
        for e, chunk in enumerate(xs.split(counts.tolist())):
            if chunk.shape[0] == 0:
                continue
            gate, up = F.linear(chunk, gate_up[e]).chunk(2, dim=-1)
            outs.append(F.linear(F.silu(gate) * up, down[e]))
        ys = torch.cat(outs) * weights.flatten()[order, None].to(x.dtype)
        return torch.zeros_like(x).index_add_(0, token, ys)


class MoE(nn.Module):
    """DeepSeekMoE layer: routed experts + shared experts, with balancing statistics."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_experts = config.n_routed_experts
        self.top_k = config.num_experts_per_tok
        self.gate = Router(config)
        self.experts = Experts(config)
        self.shared_experts = (MLP(config.hidden_size, config.moe_intermediate_size * config.n_shared_experts)
                               if config.n_shared_experts > 0 else None)
        self.register_buffer("tokens_per_expert", torch.zeros(self.n_experts), persistent=False)

    def forward(self, x: torch.Tensor, want_balance: bool = False, expert_indices: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """x (B, T, D) -> (output (B, T, D), sequence-wise balance loss or None, experts used (B, T, k)).

        `expert_indices` (B, T, k): replay this selection (see `Router.forward`).
        """
        B, T, D = x.shape
        flat = x.reshape(B * T, D)
        replay = None if expert_indices is None else expert_indices.reshape(B * T, self.top_k)
        weights, indices, scores = self.gate(flat, replay)
        # counts of the selection that ran, replayed or not: the bias update balances what was computed
        counts = torch.bincount(indices.flatten(), minlength=self.n_experts)  # (E,)
        if self.training:
            self.tokens_per_expert += counts.to(self.tokens_per_expert.dtype)
        out = self.experts(flat, weights, indices, counts)
        if self.shared_experts is not None:
            out = out + self.shared_experts(flat)
        indices = indices.view(B, T, self.top_k)
        balance = self.balance_loss(scores.view(B, T, -1), indices) if want_balance else None
        return out.view(B, T, D), balance, indices

    def balance_loss(self, scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Sequence-wise balance loss, mean over rows: sum_i f_i P_i (DeepSeek-V3 eq. 17-20).

        f_i = E / (k T) * #tokens routed to i; P_i = mean_t of s_i normalised over all experts.
        """
        B, T, E = scores.shape
        hits = torch.zeros(B, E, device=scores.device).scatter_add_(
            1, indices.reshape(B, -1), torch.ones(B, indices.shape[1] * indices.shape[2], device=scores.device))
        f = hits * (E / (self.top_k * T))  # (B, E), no gradient (counts)
        p = (scores / scores.sum(-1, keepdim=True)).mean(1)  # (B, E)
        return (f * p).sum(-1).mean()

    @torch.no_grad()
    def update_bias(self, loads: torch.Tensor, gamma: float) -> None:
        """Sign rule: raise the bias of underloaded experts, lower overloaded ones, centred to zero mean."""
        delta = gamma * torch.sign(loads.mean() - loads)
        self.gate.e_score_correction_bias += delta - delta.mean()
        self.tokens_per_expert.zero_()


def routing_mismatch(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Share of tokens, per layer, whose top-k expert SET differs between two routings.

    a, b: (n_layers, ..., k) expert indices (e.g. (n_routed_layers, B, T, k) from
    `Transformer.token_logprobs(..., return_routing=True)`); order within the k is ignored.
    mask: (...) bool/0-1, the tokens to count (e.g. completion tokens, not padding).
    Returns (n_layers,) float32; 0 where no token is counted.
    """
    assert a.shape == b.shape, f"routings differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}"
    differs = (a.sort(-1).values != b.sort(-1).values).any(-1).flatten(1).float()  # (n_layers, tokens)
    if mask is None:
        return differs.mean(1) if differs.shape[1] else differs.sum(1)
    keep = mask.to(device=differs.device, dtype=torch.bool).expand(a.shape[1:-1]).flatten().float()
    return (differs * keep).sum(1) / keep.sum().clamp(min=1)
