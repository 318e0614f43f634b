"""Multi-Token Prediction (DeepSeek-V3 section 2.2): D sequential modules sharing embedding and head.

Module k (1-based) at position i combines the previous depth's representation h_i^{k-1} with the
embedding of token t_{i+k} and predicts t_{i+k+1}:

    h'_i = eh_proj([enorm(Emb(t_{i+k})) ; hnorm(h_i^{k-1})])     (embedding first, as vLLM/torchtitan)
    h_i^k = TransformerBlock_k(h'_{<=i})
    logits = OutputHead(shared_head.norm(h_i^k))

`Emb` and `OutputHead` are the main model's (shared, not copied). h^0 is the main model's
final-normed hidden state and each depth passes on its own normed output, as vLLM's MTP
speculative decoder does, so a checkpoint trained here drafts correctly there. The block's FFN is
MoE or dense by its layer index `num_hidden_layers + k - 1` (vLLM's rule). vLLM additionally zeroes
the embedding at position 0 during speculative decoding; training never feeds that position a
label, so nothing here depends on it.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .layers import RMSNorm


class SharedHead(nn.Module):
    """The per-module final norm; the head itself is the main model's `lm_head` (shared)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class MTPModule(nn.Module):
    """One MTP depth: enorm/hnorm, eh_proj, one decoder block, shared_head.norm."""

    def __init__(self, config: ModelConfig, layer_idx: int, block: nn.Module) -> None:
        super().__init__()
        self.layer_idx = layer_idx  # index in the HF checkpoint: num_hidden_layers + depth - 1
        self.enorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.hnorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.block = block
        self.shared_head = SharedHead(config)

    def forward(self, emb_ahead: torch.Tensor, h_prev: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                attn_mask: torch.Tensor | None, want_balance: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """emb_ahead (B, T, D) = Emb(t_{i+k}); h_prev (B, T, D) = h^{k-1} -> (normed h^k, balance loss)."""
        h = self.eh_proj(torch.cat([self.enorm(emb_ahead), self.hnorm(h_prev)], dim=-1))
        h, balance = self.block(h, cos, sin, attn_mask, want_balance=want_balance)
        return self.shared_head.norm(h), balance
