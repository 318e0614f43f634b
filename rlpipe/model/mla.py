"""Multi-head Latent Attention (DeepSeek-V2/V3), a training path and a latent-cache decode path.

- Queries: `x -> q_proj` (or `q_a_proj -> q_a_layernorm -> q_b_proj` when `q_lora_rank` is set)
  -> H heads of `[q_nope (qk_nope_head_dim) | q_pe (qk_rope_head_dim)]`.
- Keys/values: `x -> kv_a_proj_with_mqa -> [c_kv (kv_lora_rank) | k_pe (qk_rope_head_dim)]`;
  `c_kv -> kv_a_layernorm -> kv_b_proj -> H x [k_nope | v]`; `k_pe` is ONE rotary key shared by
  all heads (decoupled RoPE).
- Score scale `(qk_nope_head_dim + qk_rope_head_dim)^-0.5`.
- `forward` (training, prefill): expands K/V per head and calls `F.scaled_dot_product_attention`
  (causal, or with a boolean mask for packed segments / padding). It can also write the latents
  `[norm(c_kv) | rotated k_pe]` into a cache slice, so prefill fills the cache on the way.
- `decode` (one new token per sequence): the "absorb" form. Only the latent (kv_lora_rank + rope
  floats per token, shared across heads) is cached; W_UK is folded into the query
  (`q_nope W_UK -> latent space`) and W_UV applied after the attention product, so no per-head K/V
  is ever materialised for the past. That cache is the point of MLA.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .layers import RMSNorm
from .rope import apply_rotary


class MLA(nn.Module):
    """Multi-head Latent Attention; parameter names match the HF DeepSeek-V3 checkpoint."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_heads = config.num_attention_heads
        self.q_lora_rank = config.q_lora_rank
        self.kv_lora_rank = config.kv_lora_rank
        self.qk_nope_head_dim = config.qk_nope_head_dim
        self.qk_rope_head_dim = config.qk_rope_head_dim
        self.qk_head_dim = config.qk_head_dim
        self.v_head_dim = config.v_head_dim
        D, H = config.hidden_size, self.n_heads
        if self.q_lora_rank is None:
            self.q_proj = nn.Linear(D, H * self.qk_head_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(D, self.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(self.q_lora_rank, config.rms_norm_eps)
            self.q_b_proj = nn.Linear(self.q_lora_rank, H * self.qk_head_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, self.kv_lora_rank + self.qk_rope_head_dim, bias=False)
        self.kv_a_layernorm = RMSNorm(self.kv_lora_rank, config.rms_norm_eps)
        self.kv_b_proj = nn.Linear(self.kv_lora_rank, H * (self.qk_nope_head_dim + self.v_head_dim), bias=False)
        self.o_proj = nn.Linear(H * self.v_head_dim, D, bias=False)
        self.softmax_scale = self.qk_head_dim ** -0.5

    # ------------------------------------------------------------------ shared pieces
    def _queries(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> q_nope (B, T, H, nope), rotated q_pe (B, T, H, rope)."""
        B, T, _ = x.shape
        q = self.q_proj(x) if self.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))
        q = q.view(B, T, self.n_heads, self.qk_head_dim)
        q_nope, q_pe = q.split([self.qk_nope_head_dim, self.qk_rope_head_dim], dim=-1)
        return q_nope, apply_rotary(q_pe, cos.unsqueeze(2), sin.unsqueeze(2))

    def _latents(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) -> normalised c_kv (B, T, kv_lora_rank), rotated k_pe (B, T, rope)."""
        c_kv, k_pe = self.kv_a_proj_with_mqa(x).split([self.kv_lora_rank, self.qk_rope_head_dim], dim=-1)
        return self.kv_a_layernorm(c_kv), apply_rotary(k_pe, cos, sin)

    # ------------------------------------------------------------------ training / prefill
    def forward(
        self,
        x: torch.Tensor,  # (B, T, D)
        cos: torch.Tensor,  # (B, T, rope/2)
        sin: torch.Tensor,
        attn_mask: torch.Tensor | None = None,  # (B, 1, T, T) bool, True = may attend; None = causal
        latent_cache: torch.Tensor | None = None,  # (B, T, kv_lora_rank + rope) slice to fill
    ) -> torch.Tensor:
        B, T, _ = x.shape
        H = self.n_heads
        q_nope, q_pe = self._queries(x, cos, sin)
        c_kv, k_pe = self._latents(x, cos, sin)
        if latent_cache is not None:
            latent_cache[..., : self.kv_lora_rank] = c_kv
            latent_cache[..., self.kv_lora_rank:] = k_pe
        kv = self.kv_b_proj(c_kv).view(B, T, H, self.qk_nope_head_dim + self.v_head_dim)
        k_nope, v = kv.split([self.qk_nope_head_dim, self.v_head_dim], dim=-1)
        q = torch.cat([q_nope, q_pe], dim=-1).transpose(1, 2)  # (B, H, T, qk)
        k = torch.cat([k_nope, k_pe.unsqueeze(2).expand(B, T, H, self.qk_rope_head_dim)], dim=-1).transpose(1, 2)
        v = v.transpose(1, 2)  # (B, H, T, v)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=attn_mask is None,
                                             scale=self.softmax_scale)  # (B, H, T, v)
        return self.o_proj(out.transpose(1, 2).reshape(B, T, H * self.v_head_dim))

    # ------------------------------------------------------------------ decode with the latent cache
    def absorbed_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """W_UK (H, nope, kv_lora_rank) and W_UV (H, v, kv_lora_rank), views of kv_b_proj."""
        w = self.kv_b_proj.weight.view(self.n_heads, self.qk_nope_head_dim + self.v_head_dim, self.kv_lora_rank)
        return w[:, : self.qk_nope_head_dim], w[:, self.qk_nope_head_dim:]

    def decode(
        self,
        x: torch.Tensor,  # (B, 1, D): the newest token of each sequence
        cos: torch.Tensor,  # (B, 1, rope/2)
        sin: torch.Tensor,
        latent_cache: torch.Tensor,  # (B, S, kv_lora_rank + rope); row S-1 is written here
        key_mask: torch.Tensor,  # (B, S) bool, True = real token (the new one included)
    ) -> torch.Tensor:
        B = x.shape[0]
        q_nope, q_pe = self._queries(x, cos, sin)  # (B, 1, H, nope), (B, 1, H, rope)
        c_kv, k_pe = self._latents(x, cos, sin)
        latent_cache[:, -1, : self.kv_lora_rank] = c_kv[:, 0]
        latent_cache[:, -1, self.kv_lora_rank:] = k_pe[:, 0]
        w_uk, w_uv = self.absorbed_weights()
        # Absorb W_UK: q_nope . (W_UK c) == (q_nope W_UK) . c, so scores are taken in latent space.
        q_latent = torch.einsum("bhn,hnc->bhc", q_nope[:, 0], w_uk)  # (B, H, kv_lora_rank)
        q_full = torch.cat([q_latent, q_pe[:, 0]], dim=-1)  # (B, H, kv_lora_rank + rope)
        scores = torch.bmm(q_full, latent_cache.transpose(1, 2)) * self.softmax_scale  # (B, H, S)
        scores = scores.masked_fill(~key_mask[:, None, :], float("-inf"))
        probs = torch.softmax(scores.float(), dim=-1).to(x.dtype)
        out_latent = torch.bmm(probs, latent_cache[..., : self.kv_lora_rank])  # (B, H, kv_lora_rank)
        out = torch.einsum("bhc,hvc->bhv", out_latent, w_uv)  # W_UV after the product: (B, H, v)
        return self.o_proj(out.reshape(B, 1, self.n_heads * self.v_head_dim))
