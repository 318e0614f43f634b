"""Batched sampling with the MLA latent cache.

- `generate(model, prompts, *, max_new_tokens, temperature, top_p, eos_token_id, pad_token_id,
  generator)` -> `Generation(tokens, logprobs)`; tokens exclude the prompt and end at (and include)
  the first EOS.
- Prompts of different lengths are LEFT-padded: pad keys are masked out, and positions count real
  tokens only, so each sequence sees exactly what it would see alone.
- Prefill runs the ordinary (expanded K/V) attention over the prompts and writes each layer's latent
  `[norm(c_kv) | rotated k_pe]` (kv_lora_rank + qk_rope_head_dim floats per token, shared by all
  heads) into a preallocated cache; each decode step then runs `MLA.decode` (absorbed W_UK / W_UV)
  on one token per sequence against that cache.
- `logprobs` are log-probabilities of the sampled tokens under the RAW model distribution
  (temperature 1, no top-p), i.e. what `Transformer.token_logprobs` and vLLM's default
  `logprobs_mode="raw_logprobs"` report; with `logprobs_at="sampling"` under the sampling
  distribution instead (logits / temperature, before top-p; vLLM's "processed_logprobs" with
  top_p = 1), which is what RL importance ratios are taken against.
- `temperature <= 0` means greedy decoding. Rows that finished keep being fed a pad token until the
  whole batch is done (their outputs are ignored), which keeps the batch shape fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .transformer import Transformer


@dataclass
class Generation:
    """Per prompt: sampled token ids (prompt excluded) and their raw-model logprobs."""

    tokens: list[list[int]]
    logprobs: list[list[float]]


def sample_next(logits: torch.Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None) -> torch.Tensor:
    """logits (B, V) fp32 -> token ids (B,) by temperature + nucleus (top-p) sampling; greedy if T <= 0."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always survives).
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model: Transformer, prompts: list[list[int]], *, max_new_tokens: int, temperature: float = 1.0,
             top_p: float = 1.0, eos_token_id: int | None, pad_token_id: int,
             generator: torch.Generator | None = None, logprobs_at: str = "raw") -> Generation:
    """Sample up to `max_new_tokens` per prompt with the latent KV cache; see the module docstring."""
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("generate: every prompt needs at least one token")
    if max_new_tokens <= 0:
        return Generation([[] for _ in prompts], [[] for _ in prompts])
    was_training = model.training
    model.eval()
    try:
        scale = temperature if logprobs_at == "sampling" and temperature > 0 else 1.0
        return _generate(model, prompts, max_new_tokens, temperature, top_p, eos_token_id, pad_token_id, generator,
                         scale)
    finally:
        model.train(was_training)


def _generate(model, prompts, max_new_tokens, temperature, top_p, eos_token_id, pad_token_id, generator,
              logprob_scale):
    config = model.config
    device = model.embed_tokens.weight.device
    dtype = model.embed_tokens.weight.dtype
    B, P = len(prompts), max(len(p) for p in prompts)
    S = P + max_new_tokens
    ids = torch.full((B, P), pad_token_id, dtype=torch.long, device=device)
    valid = torch.zeros(B, S, dtype=torch.bool, device=device)  # key mask over the whole cache
    for b, prompt in enumerate(prompts):
        ids[b, P - len(prompt):] = torch.tensor(prompt, dtype=torch.long)
        valid[b, P - len(prompt):P] = True
    positions = (valid[:, :P].long().cumsum(1) - 1).clamp(min=0)  # (B, P)
    # Real queries see real keys causally; a pad query sees only itself (keeps softmax finite).
    causal = torch.ones(P, P, dtype=torch.bool, device=device).tril()
    eye = torch.eye(P, dtype=torch.bool, device=device)
    attn_mask = ((causal & valid[:, None, :P]) | eye).unsqueeze(1)  # (B, 1, P, P)

    layers = list(model.layers)
    cache = torch.zeros(len(layers), B, S, config.kv_lora_rank + config.qk_rope_head_dim, dtype=dtype, device=device)
    cos, sin = model.rotary(positions)
    h = model.embed_tokens(ids)
    for l, layer in enumerate(layers):
        h, _ = layer(h, cos, sin, attn_mask, latent_cache=cache[l, :, :P])
    logits = model.lm_head(model.norm(h[:, -1:]))[:, 0].float()  # (B, V)

    next_pos = positions[:, -1] + 1  # (B,)
    tokens = torch.empty(B, max_new_tokens, dtype=torch.long, device=device)
    logprobs = torch.empty(B, max_new_tokens, dtype=torch.float32, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    lengths = torch.full((B,), max_new_tokens, dtype=torch.long, device=device)
    steps = 0
    for step in range(max_new_tokens):
        token = sample_next(logits, temperature, top_p, generator)
        token = torch.where(done, torch.full_like(token, pad_token_id), token)
        tokens[:, step] = token
        logprobs[:, step] = torch.log_softmax(logits / logprob_scale, dim=-1).gather(-1, token[:, None]).squeeze(-1)
        steps = step + 1
        if eos_token_id is not None:
            newly = ~done & (token == eos_token_id)
            lengths = torch.where(newly, torch.full_like(lengths, step + 1), lengths)
            done |= newly
        if steps == max_new_tokens or bool(done.all()):
            break
        t = P + step  # cache row of this token
        valid[:, t] = True
        cos, sin = model.rotary(next_pos[:, None])
        h = model.embed_tokens(token[:, None])  # (B, 1, D)
        for l, layer in enumerate(layers):
            h = layer.decode(h, cos, sin, cache[l, :, : t + 1], valid[:, : t + 1])
        logits = model.lm_head(model.norm(h))[:, 0].float()
        next_pos = next_pos + 1

    lengths = lengths.clamp(max=steps).tolist()
    tokens_list, logprobs_list = tokens.tolist(), logprobs.tolist()
    return Generation([row[:n] for row, n in zip(tokens_list, lengths)],
                      [row[:n] for row, n in zip(logprobs_list, lengths)])
