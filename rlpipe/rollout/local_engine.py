"""Rollout backend on the project's own model: `rlpipe.model.generate` (batched latent-cache sampling).

No extra process, no weight copy: given the trainer's live model it samples that model itself, so
`push_weights` has nothing to do. Deterministic for a given seed and batch composition, which makes
RL resume exact with this backend.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

import torch

from rlpipe.rollout import Rollouts, Sampling, finish


class LocalEngine:
    """`RolloutEngine` over a `Transformer`: loaded from `model_dir`, or the live `model` given."""

    def __init__(self, model_dir: str | Path, *, seed: int = 0, model=None, batch_size: int = 64) -> None:
        from rlpipe.model import load_pretrained
        from rlpipe.tokenizer import load_tokenizer

        self.tokenizer = load_tokenizer(model_dir)
        self.model = model if model is not None else load_pretrained(model_dir, dtype=torch.float32).eval()
        self.shared = model is not None
        self.batch_size = batch_size
        self.seed = seed
        self.generator: torch.Generator | None = None  # made beside the model at first use (it may move to a GPU)

    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, sampling: Sampling, *,
                 seed: int | None = None) -> Rollouts:
        from rlpipe.model import generate

        device = next(self.model.parameters()).device
        if self.generator is None or self.generator.device != device:
            self.generator = torch.Generator(device=device).manual_seed(self.seed)
        gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else self.generator
        expanded = [list(p) for p in prompt_ids for _ in range(n)]
        tokens: list[list[int]] = []
        logprobs: list[list[float]] = []
        for start in range(0, len(expanded), self.batch_size):
            out = generate(self.model, expanded[start:start + self.batch_size],
                           max_new_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                           top_p=sampling.top_p, eos_token_id=self.tokenizer.eos_token_id,
                           pad_token_id=self.tokenizer.pad_token_id, generator=gen, logprobs_at="sampling")
            tokens += out.tokens
            logprobs += out.logprobs
        return finish(self.tokenizer, n, prompt_ids, tokens, logprobs)

    def push_weights(self, model, state: dict | None = None) -> float:
        """Copy `model`'s weights (or `state`) in; nothing to do when the engine samples the live model."""
        t0 = time.perf_counter()
        if not self.shared:
            self.model.load_state_dict(model.state_dict() if state is None else state)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.model = None
