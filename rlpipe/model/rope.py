"""Decoupled rotary position embedding for the `qk_rope_head_dim` part of MLA queries and keys.

- `RotaryEmbedding(config)`: inverse frequencies `theta^(-2i/d)`; `forward(position_ids)` gives
  `(cos, sin)` of shape (B, T, d/2), computed in fp32 once per forward and shared by all layers.
- `apply_rotary(x, cos, sin)`: DeepSeek rotates interleaved pairs `(x0, x1), (x2, x3), ...` (GPT-J
  style, as the HF and vLLM DeepSeek-V3 code does). We rotate the even/odd slices and write the
  result de-interleaved (`[rotated evens | rotated odds]`), exactly as transformers does: queries and
  keys get the same permutation, so every dot product -- the only thing attention uses -- equals the
  interleaved one, and the copy back into pairs is saved.
No YaRN: the small models here never extend their context, so only `rope_theta` is configurable.
"""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """cos/sin tables for positions, (B, T) -> 2 x (B, T, qk_rope_head_dim / 2) in fp32."""

    def __init__(self, rope_head_dim: int, theta: float) -> None:
        super().__init__()
        inv_freq = 1.0 / (theta ** (torch.arange(0, rope_head_dim, 2, dtype=torch.float) / rope_head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    @torch.no_grad()
    def forward(self, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = position_ids[..., None].float() * self.inv_freq  # (B, T, d/2)
        return freqs.cos(), freqs.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of `x` (..., T, [H,] d); cos/sin broadcast to (..., T, [1,] d/2)."""
    x1, x2 = x[..., 0::2], x[..., 1::2]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
