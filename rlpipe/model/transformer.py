"""The DeepSeek-V3-style policy model: MLA + DeepSeekMoE + MTP, one forward for training and scoring.

- `Transformer(config)`: embedding -> `num_hidden_layers` decoder blocks (pre-norm: MLA, then a dense
  SwiGLU for layers < first_k_dense_replace, DeepSeekMoE after) -> final RMSNorm -> lm_head, plus
  `num_nextn_predict_layers` MTP modules that share embedding and head.
- `forward(input_ids, labels=None, position_ids=None, segment_ids=None) -> ModelOutput`:
  labels follow the HF convention (same positions as input_ids, shifted inside, -100 ignored).
  `segment_ids` (packing) restricts attention to the same segment and drops the targets that would
  cross a segment boundary; position_ids restart per segment when not given.
  loss = main CE + mtp_loss_weight / D * sum_k MTP CE_k + balance_loss_alpha * balance loss.
- `update_expert_bias(gamma)`: auxiliary-loss-free balancing, once per optimizer step. Every
  training-mode forward counts its routed tokens (no_grad ones too), so score rollouts in eval mode.
- `token_logprobs(input_ids, ...)`: log p(x_{t+1} | x_<=t) of the given tokens, computed chunk by
  chunk so a (B, T, V) logits tensor never exists (RL scores long rollouts with it).
- Routing replay for RL: `token_logprobs(..., return_routing=True)` also returns the experts every
  token was routed to, `routing` (n_routed_layers, B, T, k) over the MoE layers of the main stack in
  order (MTP blocks do not take part in scoring, so they are neither recorded nor replayed);
  `token_logprobs(..., routing=routing)` runs with that selection and live gate weights (`moe`).
- `score(...) -> Scores(logprobs, entropy, routing)`: the same with the entropy of each prediction;
  `forward(..., score=True, ...)` routes to it so a DDP/FSDP-wrapped model synchronises RL gradients.
- `save_pretrained(dir)`: HF DeepSeek-V3 folder (see `hf_io`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import ModelConfig
from .layers import MLP, RMSNorm
from .mla import MLA
from .moe import MoE, Experts, Router
from .mtp import MTPModule
from .rope import RotaryEmbedding

FP32_BUFFERS = ("e_score_correction_bias", "tokens_per_expert", "inv_freq")


@dataclass
class ModelOutput:
    """Logits (B, T, V) and, with labels, the total loss and each of its parts (for logging)."""

    logits: torch.Tensor
    loss: torch.Tensor | None = None
    main_loss: torch.Tensor | None = None
    mtp_losses: list[torch.Tensor] = field(default_factory=list)
    balance_loss: torch.Tensor | None = None


@dataclass
class Scores:
    """What RL scoring returns: per-position logprobs of the next input token (B, T-1), their
    predictive entropy (B, T-1, detached) if asked, the routing that ran (n_routed_layers, B, T, k) if asked."""

    logprobs: torch.Tensor
    entropy: torch.Tensor | None = None
    routing: torch.Tensor | None = None
    alt_logprobs: torch.Tensor | None = None  # (B, T-1) log p(alt_targets[:, t] | input_ids[:, :t+1])


class DecoderLayer(nn.Module):
    """Pre-norm block: h + MLA(norm(h)), then h + FFN(norm(h)) with FFN dense or MoE by layer index."""

    def __init__(self, config: ModelConfig, layer_idx: int) -> None:
        super().__init__()
        self.is_moe = config.is_moe_layer(layer_idx)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = MLA(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = MoE(config) if self.is_moe else MLP(config.hidden_size, config.intermediate_size)

    def forward(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn_mask: torch.Tensor | None,
                want_balance: bool = False, latent_cache: torch.Tensor | None = None,
                expert_indices: torch.Tensor | None = None, return_routing: bool = False):
        """h (B, T, D) -> (h, balance loss or None), plus the experts used (B, T, k) or None if return_routing.

        `expert_indices` (B, T, k): replay this selection in a MoE layer.
        """
        h = h + self.self_attn(self.input_layernorm(h), cos, sin, attn_mask, latent_cache)
        h, balance, indices = self._ffn(h, want_balance, expert_indices)
        return (h, balance, indices) if return_routing else (h, balance)

    def decode(self, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, latent_cache: torch.Tensor,
               key_mask: torch.Tensor) -> torch.Tensor:
        h = h + self.self_attn.decode(self.input_layernorm(h), cos, sin, latent_cache, key_mask)
        return self._ffn(h, False)[0]

    def _ffn(self, h: torch.Tensor, want_balance: bool, expert_indices: torch.Tensor | None = None):
        """-> (h, balance loss or None, experts used (B, T, k) or None for a dense layer)."""
        x = self.post_attention_layernorm(h)
        if self.is_moe:
            y, balance, indices = self.mlp(x, want_balance, expert_indices)
            return h + y, balance, indices
        return h + self.mlp(x), None, None


def segment_positions(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) segment ids -> positions restarting at 0 at every segment start."""
    B, T = segment_ids.shape
    t = torch.arange(T, device=segment_ids.device).expand(B, T)
    starts = torch.ones_like(segment_ids, dtype=torch.bool)
    starts[:, 1:] = segment_ids[:, 1:] != segment_ids[:, :-1]
    return t - torch.where(starts, t, torch.zeros_like(t)).cummax(dim=1).values


def segment_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """(B, T) -> (B, 1, T, T) bool: causal AND same segment (every row keeps its diagonal)."""
    T = segment_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=segment_ids.device).tril()
    return (causal & (segment_ids[:, :, None] == segment_ids[:, None, :])).unsqueeze(1)


class Transformer(nn.Module):
    """DeepSeek-V3-style causal LM with MTP; see the module docstring for the API."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        L = config.num_hidden_layers
        self.mtp = nn.ModuleList(MTPModule(config, L + k, DecoderLayer(config, L + k))
                                 for k in range(config.num_nextn_predict_layers))
        self.rotary = RotaryEmbedding(config.qk_rope_head_dim, config.rope_theta)
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """DeepSeek/HF init: every matrix N(0, initializer_range), norms 1, router bias 0."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding, Router)):
                module.weight.normal_(0.0, std, generator=generator)
            elif isinstance(module, Experts):
                module.gate_up_proj.normal_(0.0, std, generator=generator)
                module.down_proj.normal_(0.0, std, generator=generator)
            elif isinstance(module, RMSNorm):
                module.weight.fill_(1.0)
            if isinstance(module, Router):
                module.e_score_correction_bias.zero_()

    def _apply(self, fn, recurse=True):
        # These buffers stay fp32 through .to(bf16) etc.: bias steps of gamma = 1e-3 vanish in bf16,
        # bf16 cannot count past 256 tokens exactly, and RoPE angles need fp32 frequencies.
        keep = [(m, name, buf) for m in self.modules() for name, buf in m._buffers.items()
                if name in FP32_BUFFERS and buf is not None]
        super()._apply(fn, recurse)
        for module, name, old in keep:
            new = module._buffers[name]
            if new.dtype != torch.float32:
                module._buffers[name] = old.to(device=new.device, dtype=torch.float32)
        return self

    @property
    def moe_layers(self) -> list[MoE]:
        """MoE layers in checkpoint order: main stack, then MTP blocks."""
        return [m for m in self.modules() if isinstance(m, MoE)]

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ------------------------------------------------------------------ forward
    def _prepare(self, input_ids, position_ids, segment_ids):
        B, T = input_ids.shape
        if position_ids is None:
            if segment_ids is not None:
                position_ids = segment_positions(segment_ids)
            else:
                position_ids = torch.arange(T, device=input_ids.device).expand(B, T)
        cos, sin = self.rotary(position_ids)  # (B, T, rope/2)
        attn_mask = segment_mask(segment_ids) if segment_ids is not None else None
        return cos, sin, attn_mask

    @property
    def n_routed_layers(self) -> int:
        """MoE layers of the main stack: the first dimension of a recorded `routing`."""
        return sum(layer.is_moe for layer in self.layers)

    def hidden_states(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                      segment_ids: torch.Tensor | None = None, want_balance: bool = False,
                      routing: torch.Tensor | None = None, return_routing: bool = False):
        """Main stack -> (final-normed h (B, T, D), (cos, sin, mask), per-layer balance losses, routing).

        routing: `routing` (n_routed_layers, B, T, k) is replayed if given; the routing that ran is
        returned if return_routing (int64), else None.
        """
        B, T = input_ids.shape
        shape = (self.n_routed_layers, B, T, self.config.num_experts_per_tok)
        if routing is not None and tuple(routing.shape) != shape:
            raise ValueError(f"routing has shape {tuple(routing.shape)}, expected (n_routed_layers, B, T, k) = {shape}: "
                             "replay needs the experts of every token position of these input_ids, in this layout")
        cos, sin, attn_mask = self._prepare(input_ids, position_ids, segment_ids)
        h = self.embed_tokens(input_ids)
        balances, used = [], []
        for layer in self.layers:
            replay = routing[len(used)] if routing is not None and layer.is_moe else None
            h, balance, indices = layer(h, cos, sin, attn_mask, want_balance, expert_indices=replay,
                                        return_routing=True)
            if balance is not None:
                balances.append(balance)
            if indices is not None:
                used.append(indices)
        recorded = None
        if return_routing:
            recorded = torch.stack(used) if used else input_ids.new_zeros(shape)
        return self.norm(h), (cos, sin, attn_mask), balances, recorded

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, segment_ids: torch.Tensor | None = None,
                score: bool = False, **score_kw) -> ModelOutput | Scores:
        if score:  # RL scoring through the module call, so DDP/FSDP hooks run (see `score`)
            return self.score(input_ids, position_ids, segment_ids, **score_kw)
        want_balance = labels is not None and self.config.balance_loss_alpha > 0 and self.config.n_moe_layers > 0
        h, (cos, sin, attn_mask), balances, _ = self.hidden_states(input_ids, position_ids, segment_ids, want_balance)
        logits = self.lm_head(h)
        if labels is None:
            return ModelOutput(logits=logits)
        main_loss = _shifted_ce(logits, labels, 1, segment_ids)
        mtp_losses = []
        T = input_ids.shape[1]
        for k, module in enumerate(self.mtp, start=1):
            # Position i sees Emb(t_{i+k}); positions past the end wrap around but get no target.
            emb_ahead = self.embed_tokens(torch.roll(input_ids, -k, dims=1))
            h, balance = module(emb_ahead, h, cos, sin, attn_mask, want_balance)
            if balance is not None:
                balances.append(balance)
            mtp_logits = self.lm_head(h[:, : max(T - k - 1, 0)])
            mtp_losses.append(_shifted_ce(mtp_logits, labels, k + 1, segment_ids))
        loss = main_loss
        if mtp_losses:
            loss = loss + self.config.mtp_loss_weight / len(mtp_losses) * torch.stack(mtp_losses).sum()
        balance_loss = torch.stack(balances).sum() if balances else None
        if balance_loss is not None:
            loss = loss + self.config.balance_loss_alpha * balance_loss
        return ModelOutput(logits=logits, loss=loss, main_loss=main_loss, mtp_losses=mtp_losses,
                           balance_loss=balance_loss)

    # ------------------------------------------------------------------ scoring for RL
    def token_logprobs(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                       segment_ids: torch.Tensor | None = None, temperature: float = 1.0,
                       chunk_size: int = 256, routing: torch.Tensor | None = None,
                       return_routing: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """(B, T) -> (B, T-1): out[:, t] = log p(input_ids[:, t+1] | input_ids[:, :t+1]) at `temperature`.

        Padding: give pad tokens their own segment id (e.g. segment_ids = attention_mask) and real
        tokens positions from 0 (position_ids = attention_mask.cumsum(-1) - 1, clamped at 0); the
        values at pad positions are then meaningless and must be masked by the caller. Logits exist
        one chunk of `chunk_size` positions at a time; with autograd on, each chunk is recomputed in
        backward instead of kept.

        Routing replay: `return_routing=True` returns `(logprobs, routing)`, routing (n_routed_layers,
        B, T, k) int64 = the experts each position of input_ids was routed to in each MoE layer of
        the main stack. Passing `routing` (same layout, any integer dtype) makes every MoE layer use
        those experts, with gate weights from the live router. It is indexed like input_ids, so the
        micro-batch rows `input_ids[i:j]` take `routing[:, i:j]`; packed rows and padding need
        nothing special as long as routing was recorded on (or rearranged into) the same layout.
        Pad positions may hold any valid expert ids.
        """
        scores = self.score(input_ids, position_ids, segment_ids, temperature=temperature, chunk_size=chunk_size,
                            routing=routing, return_routing=return_routing)
        return (scores.logprobs, scores.routing) if return_routing else scores.logprobs

    def score(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
              segment_ids: torch.Tensor | None = None, *, temperature: float = 1.0, chunk_size: int = 256,
              routing: torch.Tensor | None = None, return_routing: bool = False,
              return_entropy: bool = False, alt_targets: torch.Tensor | None = None) -> Scores:
        """RL scoring: `token_logprobs` (see there), plus optionally the recorded routing and the
        per-position entropy of the predictive distribution (B, T-1), detached (for logging and
        top-entropy token masking, never differentiated). `alt_targets` (B, T-1) int64: also the
        logprobs of these tokens in place of the next input token (`alt_logprobs`, differentiable;
        the slip correction's right digits), from the same logits. `forward(..., score=True)` calls
        this, so DDP/FSDP see the call and synchronise gradients."""
        h, _, _, used = self.hidden_states(input_ids, position_ids, segment_ids, routing=routing,
                                           return_routing=return_routing)
        targets = input_ids[:, 1:]
        h = h[:, :-1]
        if alt_targets is not None:  # both target rows go through one gather: (B, T-1, 2)
            targets = torch.stack([targets, alt_targets.to(targets.dtype)], dim=-1)
        logps, entropies = [], []
        for start in range(0, h.shape[1], chunk_size):
            args = (h[:, start:start + chunk_size], targets[:, start:start + chunk_size])
            if torch.is_grad_enabled() and h.requires_grad:
                logp, ent = checkpoint(self._chunk_logprobs, *args, temperature, return_entropy, use_reentrant=False)
            else:
                logp, ent = self._chunk_logprobs(*args, temperature, return_entropy)
            logps.append(logp)
            entropies.append(ent)
        B = h.shape[0]
        logprobs = torch.cat(logps, dim=1) if logps else h.new_zeros(B, 0, *targets.shape[2:])
        entropy = (torch.cat(entropies, dim=1) if logps else h.new_zeros(B, 0)) if return_entropy else None
        alt = None
        if alt_targets is not None:
            logprobs, alt = logprobs[..., 0], logprobs[..., 1]
        return Scores(logprobs=logprobs, entropy=entropy, routing=used, alt_logprobs=alt)

    def _chunk_logprobs(self, h: torch.Tensor, targets: torch.Tensor, temperature: float,
                        return_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """targets (B, C) or (B, C, n): logprobs of the same shape, entropy (B, C)."""
        logits = self.lm_head(h).float()
        if temperature != 1.0:
            logits = logits / temperature
        lse = logits.logsumexp(-1)
        if targets.dim() == 2:
            logp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - lse
        else:
            logp = logits.gather(-1, targets) - lse.unsqueeze(-1)
        entropy = None
        if return_entropy:
            with torch.no_grad():  # H = logsumexp - sum p * logits
                entropy = lse - (torch.softmax(logits, -1) * logits).sum(-1)
        return logp, entropy

    # ------------------------------------------------------------------ auxiliary-loss-free balancing
    @torch.no_grad()
    def update_expert_bias(self, gamma: float | None = None) -> torch.Tensor:
        """Apply the sign rule to every MoE layer's bias; call once per optimizer step.

        Uses the routed-token counts accumulated by training-mode forwards since the last call (so
        gradient accumulation counts as one step), summed over ranks when torch.distributed is
        initialised, then resets them. Returns the loads, shape (n_moe_layers, n_routed_experts).
        """
        gamma = self.config.bias_update_speed if gamma is None else gamma
        layers = self.moe_layers
        if not layers:
            return torch.zeros(0, self.config.n_routed_experts)
        loads = torch.stack([m.tokens_per_expert for m in layers])  # (n_moe_layers, E), a copy
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(loads)
        for moe, load in zip(layers, loads):
            moe.update_bias(load, gamma)
        return loads

    # ------------------------------------------------------------------ checkpoints
    def save_pretrained(self, out_dir: str | Path) -> Path:
        """Write an HF DeepSeek-V3 folder (config.json + model.safetensors) loadable by transformers/vLLM."""
        from .hf_io import save_pretrained

        return save_pretrained(self, out_dir)


def _shifted_ce(logits: torch.Tensor, labels: torch.Tensor, shift: int,
                segment_ids: torch.Tensor | None) -> torch.Tensor:
    """Mean CE of logits[:, i] against labels[:, i + shift]; -100 and cross-segment targets ignored.

    `logits` may already be cut to the first T - shift positions.
    """
    T = labels.shape[1]
    n = T - shift
    if n <= 0:
        return logits.sum() * 0.0
    targets = labels[:, shift:]
    if segment_ids is not None:
        targets = targets.masked_fill(segment_ids[:, :n] != segment_ids[:, shift:], -100)
    flat = logits[:, :n].reshape(-1, logits.shape[-1]).float()
    total = F.cross_entropy(flat, targets.reshape(-1), ignore_index=-100, reduction="sum")
    return total / (targets != -100).sum().clamp(min=1)
