"""GRPO-family RL as a step contract for the one training loop (`rlpipe.train.loop.train`).

One optimizer step on process r of W (`GRPOSteps`):
1. Prompts: `PromptSampler.sample(step, P)` (Kimi curriculum + priority; the same list on every
   process), this process takes its P/W slice.
2. Rollouts: G samples per prompt through the rollout engine (`rlpipe.rollout`: vLLM colocated in
   this process, or the model's own sampler), seeded by (seed, step, round, process), so a resumed
   run samples what the uninterrupted one sampled. With `rollout.greedy_member` the last of the G
   is the greedy decode (importance weight 1: it was not sampled).
3. Rewards: the recipe's weighted rule rewards (`rewards.combine`), computed in worker threads by
   `rewards.parallel.ParallelReward`; a term that raises or times out gives None and is counted.
4. DAPO dynamic sampling: groups whose rewards are all equal carry no advantage; they are dropped
   and refilled from the sampler's spare prompts for at most `max_refill_rounds` extra rounds. If
   still short, the dropped groups fill the batch (advantage 0: they add only the KL term). With the
   slip penalty, a group with a slip counts as informative (`keep_slip_groups`).
5. Advantages per group (`grpo.group_advantages`: GRPO mean/std, Dr. GRPO mean only, batch std).
   Overlong samples (no EOS) are masked from the loss (`overlong: mask`) or shaped by DAPO's
   overlong reward (`overlong: shape`); Kimi's length penalty joins after its warm-up. Arithmetic
   slips (`rewards.steps`: "12 + 4 = 17") are counted; with `slip_penalty` > 0 the token holding a
   slip's first wrong character gets that much less advantage (process credit from a calculator);
   with `slip_correction` > 0 that token also gets the calculator's right token as a supervised
   target (the "6"), in the batch's samples and in those of dropped groups (which join with no
   policy or KL term).
6. Packing: prompt + completion sequences are laid into rows with segment ids (no padding
   inside a row); every completion token gets a gather index into the scored rows, so the loss
   sees (sequences, tokens) tensors however the rows were packed.
7. Old-policy pass when mu > 1 (the policy moves between inner iterations): pi_old logprobs and
   the routing of every token (MoE routing replay, R3: later iterations run with the rollout's
   expert selection and live gate weights). With mu = 1 the training forward runs on the very
   weights that sampled, so its routing IS the rollout's and pi_old is the current policy detached.
   Reference logprobs (k3 KL) when beta > 0.
`loss`: score the micro-batch through the (DDP-wrapped) model, gather completion logprobs, weight
by the rollout/trainer mismatch correction (`grpo.mismatch_weights`, against the engine's logprobs)
and take the registered loss (`grpo.LOSSES`), plus `slip_correction` x the mean cross-entropy of
the right tokens at the slips (scored from the same logits: `Transformer.score(alt_targets=...)`).
`after_step`: the expert-bias rule during RL (freeze / sign rule on the training loads / sign rule
on the rollout loads), the weight push to the engine (timed), the sampler update with the step's
success rates (gathered over processes), the reference reset every N steps (R1).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import torch

from rewards.steps import arithmetic_slips
from rlpipe.rollout import Rollouts
from rlpipe.train.grpo import LossConfig, dynamic_sampling_keep, group_advantages, mismatch_weights, policy_loss
from rlpipe.train.lora import merged_state_dict
from rlpipe.train.sft import assign_rows


# ---------------------------------------------------------------------------- config sections
@dataclass
class GRPOConfig(LossConfig):
    """The `grpo:` section: the loss (`LossConfig` fields) plus how rollouts become a batch."""

    mu: int = 1  # optimizer steps per rollout batch (GRPO's inner iterations)
    scale_rewards: Literal["group", "batch", "none"] = "group"  # none + loss dr_grpo = Dr. GRPO
    mismatch_mode: Literal["token_truncate", "token_mask", "sequence_truncate", "sequence_mask", "none"] = \
        "token_truncate"
    mismatch_cap: float = 3.0
    mismatch_lower: float | None = None
    dynamic_sampling: bool = True
    max_refill_rounds: int = 2  # extra generation rounds per step to replace all-equal groups
    overlong: Literal["none", "mask", "shape"] = "none"
    overlong_buffer: int = 64  # DAPO's soft punishment interval (tokens) for overlong: shape
    routing_replay: bool = True  # replay the rollout's experts in the inner iterations (mu > 1)
    expert_bias: Literal["freeze", "sign", "rollout"] = "sign"  # measured: stages/stage-2-reasoning-rl.yaml
    expert_bias_gamma: float | None = None  # None: the model's bias_update_speed
    ref_reset_every: int = 0  # reset the KL reference to the policy every N steps (R1: 400); 0 = never
    # Process credit from a calculator (rewards.steps): the token where the completion states a
    # wrong arithmetic result ("12 + 4 = 17": the 7) has this subtracted from its advantage. 0 = off.
    slip_penalty: float = 0.0
    # With the slip penalty on, an all-equal group that has a slip still carries signal (on the slip
    # tokens), so dynamic sampling keeps it (true) or drops it as DAPO would (false).
    keep_slip_groups: bool = True
    # Calculator correction (DAgger-style supervision of the states the policy visits): at the token
    # of each slip's first wrong character, cross-entropy towards the token with the right character
    # (`rewards.steps.Statement.expected`: "12 + 4 = 17" -> the "6" in place of the "7"), weighted
    # by this, averaged over the step's corrections. Slips in groups dynamic sampling drops are
    # taught too (their samples join the batch with no policy or KL term). 0 = off.
    slip_correction: float = 0.0
    micro_batch_rows: int = 8  # packed rows per micro-batch
    completions_every: int = 10  # write completions.jsonl every N steps (0 = never)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.mu < 1:
            raise ValueError(f"grpo.mu={self.mu}: needs at least 1 inner iteration")
        if self.micro_batch_rows < 1:
            raise ValueError(f"grpo.micro_batch_rows={self.micro_batch_rows}: must be >= 1")
        if self.slip_penalty < 0:
            raise ValueError(f"grpo.slip_penalty={self.slip_penalty}: must be >= 0 (0 = off)")
        if self.slip_correction < 0:
            raise ValueError(f"grpo.slip_correction={self.slip_correction}: must be >= 0 (0 = off)")
        if self.slip_penalty > 0 and self.loss_type == "gspo":
            raise ValueError("grpo.slip_penalty is a per-token credit and loss_type gspo has one ratio per sequence: "
                             "set grpo.slip_penalty=0 or a token-level loss (dapo, grpo, dr_grpo, bnpo, cispo)")


@dataclass
class RewardsConfig:
    """The `rewards:` section: registered reward names and weights, options per name."""

    weights: dict[str, float] = field(default_factory=lambda: {"task_accuracy": 1.0, "format": 0.2,
                                                               "language": 0.1})
    options: dict[str, dict] = field(default_factory=dict)
    length_penalty: float = 0.0  # Kimi k1.5 length penalty weight (0 = off)
    length_penalty_warmup: int = 0  # optimizer steps before the length penalty applies
    workers: int = 4
    timeout_s: float = 60.0

    def __post_init__(self) -> None:
        from rewards import CORRECTNESS_REWARDS, REGISTRY

        unknown = sorted(set(self.weights) - set(REGISTRY))
        if unknown:
            raise ValueError(f"rewards.weights names unknown reward(s) {unknown}; known rewards: "
                             f"{', '.join(sorted(REGISTRY))}")
        if not any(name in self.weights for name in CORRECTNESS_REWARDS):
            raise ValueError(f"rewards.weights needs a correctness reward ({', '.join(CORRECTNESS_REWARDS)}): "
                             f"the sampler tracks success rates with it")


# ---------------------------------------------------------------------------- one rollout batch
@dataclass
class Scored:
    """One process's scored groups for one step: samples are prompt-major, G per group."""

    rows: list[int]  # data-row index per group
    prompt_ids: list[list[int]]  # per group
    token_ids: list[list[int]]  # per sample
    rollout_logp: list[list[float]]  # per sample
    text: list[str]
    truncated: list[bool]
    rewards: np.ndarray  # (groups, G)
    correct: np.ndarray  # (groups, G) 1.0 where the correctness reward paid in full
    breakdown: dict[str, list]  # term -> per sample
    group_size: int
    slips: list[list]  # per sample: rewards.steps.arithmetic_slips

    @property
    def n_groups(self) -> int:
        return len(self.rows)

    def take(self, groups: Sequence[int]) -> "Scored":
        G = self.group_size
        samples = [g * G + j for g in groups for j in range(G)]
        return Scored(rows=[self.rows[g] for g in groups], prompt_ids=[self.prompt_ids[g] for g in groups],
                      token_ids=[self.token_ids[s] for s in samples],
                      rollout_logp=[self.rollout_logp[s] for s in samples], text=[self.text[s] for s in samples],
                      truncated=[self.truncated[s] for s in samples], rewards=self.rewards[list(groups)],
                      correct=self.correct[list(groups)],
                      breakdown={k: [v[s] for s in samples] for k, v in self.breakdown.items()}, group_size=G,
                      slips=[self.slips[s] for s in samples])

    @staticmethod
    def concat(parts: Sequence["Scored"]) -> "Scored":
        first = parts[0]
        return Scored(rows=[r for p in parts for r in p.rows], prompt_ids=[x for p in parts for x in p.prompt_ids],
                      token_ids=[x for p in parts for x in p.token_ids],
                      rollout_logp=[x for p in parts for x in p.rollout_logp], text=[x for p in parts for x in p.text],
                      truncated=[x for p in parts for x in p.truncated],
                      rewards=np.concatenate([p.rewards for p in parts]),
                      correct=np.concatenate([p.correct for p in parts]),
                      breakdown={k: [x for p in parts for x in p.breakdown[k]] for k in first.breakdown},
                      group_size=first.group_size, slips=[x for p in parts for x in p.slips])


def pack_rollouts(prompt_ids: Sequence[Sequence[int]], token_ids: Sequence[Sequence[int]], group_size: int,
                  seq_len: int, pad_id: int) -> tuple[dict[str, torch.Tensor], list[tuple[int, int, int]]]:
    """Lay every sample's prompt + completion into packed rows.

    Returns the rows (input_ids, position_ids, segment_ids: (R, T) int64, T = max(seq_len, longest
    sample)) and per sample (row, offset of its first completion token, completion length). The
    logprob of completion token j of a sample placed at (row, start) is at flat position
    row * (T - 1) + start + j - 1 of `Transformer.score(...).logprobs` (B, T-1)."""
    seqs = [list(prompt_ids[k // group_size]) + list(t) for k, t in enumerate(token_ids)]
    T = max([seq_len] + [len(s) for s in seqs])
    placement = assign_rows([len(s) for s in seqs], T)
    R = len(placement)
    input_ids = torch.full((R, T), pad_id, dtype=torch.long)
    position_ids = torch.zeros((R, T), dtype=torch.long)
    segment_ids = torch.zeros((R, T), dtype=torch.long)
    where: list[tuple[int, int, int]] = [(0, 0, 0)] * len(seqs)
    for r, members in enumerate(placement):
        at = 0
        for seg, k in enumerate(members, start=1):
            s = seqs[k]
            input_ids[r, at:at + len(s)] = torch.tensor(s)
            position_ids[r, at:at + len(s)] = torch.arange(len(s))
            segment_ids[r, at:at + len(s)] = seg
            where[k] = (r, at + len(prompt_ids[k // group_size]), len(token_ids[k]))
            at += len(s)
        position_ids[r, at:] = torch.arange(T - at)  # padding keeps positions inside the RoPE table
    return {"input_ids": input_ids, "position_ids": position_ids, "segment_ids": segment_ids}, where


def completion_tensors(where: Sequence[tuple[int, int, int]], row_offset: int, T: int,
                       per_token: dict[str, Sequence[Sequence[float]]]) -> dict[str, torch.Tensor]:
    """(S, L) tensors for the samples `where` of one micro-batch whose rows start at row_offset:
    `gather_index` into the flattened (rows, T-1) scores, `mask`, and each per-token list given."""
    S, L = len(where), max([1] + [n for _, _, n in where])
    index = torch.zeros((S, L), dtype=torch.long)
    mask = torch.zeros((S, L))
    out = {name: torch.zeros((S, L)) for name in per_token}
    for i, (row, start, n) in enumerate(where):
        index[i, :n] = (row - row_offset) * (T - 1) + start - 1 + torch.arange(n)
        mask[i, :n] = 1.0
        for name, values in per_token.items():
            out[name][i, :n] = torch.as_tensor(values[i], dtype=torch.float32)
    return {"gather_index": index, "mask": mask, **out}


def gather_completions(values_BT: torch.Tensor, index_SL: torch.Tensor) -> torch.Tensor:
    """(B, T-1) per-position values -> (S, L) per completion token (padding positions hold junk)."""
    return values_BT.reshape(-1)[index_SL.reshape(-1)].view_as(index_SL)


def average_over_processes(metrics: dict[str, float], world: int) -> dict[str, float]:
    """Per-process statistics -> their mean over processes (counts `num_*` summed); keys may differ
    between processes (a reward term that applied on one only), so they travel as objects."""
    if world <= 1:
        return metrics
    gathered: list[dict] = [{} for _ in range(world)]
    torch.distributed.all_gather_object(gathered, metrics)
    keys = sorted({k for m in gathered for k in m})
    out = {}
    for k in keys:
        values = [m[k] for m in gathered if k in m]
        out[k] = float(np.sum(values)) if k.startswith("num_") else float(np.mean(values))
    return out


def token_at(tokenizer, token_ids: Sequence[int], text: str, char: int) -> int | None:
    """Index of the token that holds character `char` of `text` (= the decode of `token_ids`), by
    binary search over prefix decodes; None when the prefix decodes do not agree with `text`."""
    lo, hi = 0, len(token_ids) - 1
    while lo < hi:  # smallest t whose prefix ids[:t+1] decodes past `char`
        mid = (lo + hi) // 2
        if len(tokenizer.decode(token_ids[:mid + 1], skip_special_tokens=True)) > char:
            hi = mid
        else:
            lo = mid + 1
    prefix = tokenizer.decode(token_ids[:lo + 1], skip_special_tokens=True) if token_ids else ""
    return lo if len(prefix) > char and prefix[:char + 1] == text[:char + 1] else None


def slip_credit(tokenizer, token_ids: Sequence[int], text: str, slips: Sequence,
                penalty: float) -> tuple[list[float], int]:
    """Per-token credit of one completion: -penalty on the token of each slip's first wrong character
    (`rewards.steps.Statement.start`), 0 elsewhere; and how many slips could not be placed on a token."""
    credit, unplaced = [0.0] * len(token_ids), 0
    for slip in slips:
        t = token_at(tokenizer, token_ids, text, slip.start)
        if t is None:
            unplaced += 1
        else:
            credit[t] -= penalty
    return credit, unplaced


def slip_corrections(tokenizer, token_ids: Sequence[int], text: str,
                     slips: Sequence) -> tuple[list[tuple[int, int]], int]:
    """The calculator's corrections of one completion as (token index, right token id): the token
    holding each slip's first wrong character and the token it is with the right character there
    (`Statement.expected`); and how many slips are not one token swap (no expected character, the
    prefix decodes disagree, or the fixed piece is not one token). One correction per token."""
    fixes: dict[int, int] = {}
    unplaced = 0
    for slip in slips:
        t = token_at(tokenizer, token_ids, text, slip.start) if slip.expected else None
        fixed = []
        if t is not None:
            before = tokenizer.decode(token_ids[:t], skip_special_tokens=True)
            piece = tokenizer.decode(token_ids[:t + 1], skip_special_tokens=True)[len(before):]
            i = slip.start - len(before)
            fixed = tokenizer.encode(piece[:i] + slip.expected + piece[i + 1:], add_special_tokens=False)
        if len(fixed) != 1 or fixed[0] == token_ids[t]:
            unplaced += 1
        else:
            fixes.setdefault(t, fixed[0])
    return sorted(fixes.items()), unplaced


def correctness_term(breakdown: dict) -> str:
    """The reward term that says whether a sample is right (most specific first: rewards.CORRECTNESS_REWARDS)."""
    from rewards import CORRECTNESS_REWARDS

    return next(c for c in CORRECTNESS_REWARDS if c in breakdown)


# ---------------------------------------------------------------------------- the step contract
class GRPOSteps:
    """The loop's step contract for GRPO-family RL (see the module docstring)."""

    def __init__(self, *, model, tokenizer, rows: list[dict], engine, reward, sampler, grpo: GRPOConfig,
                 rollout, rewards_cfg: RewardsConfig, num_steps: int, seed: int, seq_len: int, accelerator,
                 out_dir: str | Path | None = None, ref_model=None) -> None:
        from rlpipe.tokenizer import prompt_ids

        self.model, self.tokenizer, self.rows = model, tokenizer, rows
        self.engine, self.reward, self.sampler = engine, reward, sampler
        self.grpo, self.rollout, self.rewards_cfg = grpo, rollout, rewards_cfg
        self.num_steps, self.seed, self.seq_len = num_steps, seed, seq_len
        self.acc = accelerator
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        if rollout.prompts_per_step % self.world:
            raise ValueError(f"rollout.prompts_per_step={rollout.prompts_per_step} must be a multiple of the "
                             f"{self.world} processes")
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.ref_model = ref_model
        self.prompt_ids = prompt_ids(tokenizer, [r["prompt"] for r in rows])
        self.columns = [k for k in rows[0] if k not in ("prompt", "solution")] if rows else []
        self.buffer: dict | None = None  # the current rollout batch (reused for mu inner iterations)
        self.pending: dict[str, Any] = {}  # what after_step applies: sampler observations, metrics

    # -- the contract -------------------------------------------------------------------------------
    def epoch_of(self, step: int) -> float:
        return step * self.rollout.prompts_per_step / max(1, len(self.rows))

    def micro_batches(self, step: int, rank: int) -> list[dict[str, torch.Tensor]]:
        if self.buffer is None or step % self.grpo.mu == 0 or self.buffer["step"] != step - step % self.grpo.mu:
            self.buffer = self._collect(step - step % self.grpo.mu)
        return self.buffer["micro"]

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        g = self.grpo
        scores = model(batch["input_ids"], position_ids=batch["position_ids"], segment_ids=batch["segment_ids"],
                       score=True, temperature=self.rollout.temperature, routing=batch.get("routing"),
                       return_entropy=True, return_routing=g.mu > 1 and not g.routing_replay,
                       alt_targets=batch.get("alt_targets"))
        mask = batch["mask"]
        logp = gather_completions(scores.logprobs, batch["gather_index"]) * mask
        entropy = gather_completions(scores.entropy, batch["gather_index"])
        old = batch["old_logp"] if "old_logp" in batch else logp.detach()
        # the greedy member (rollout.greedy_member) was not sampled: no mismatch to measure, weight 1
        sampled = batch["sampled"][:, None] if "sampled" in batch else None
        is_weights, metrics = mismatch_weights(old, batch["rollout_logp"], mask if sampled is None else mask * sampled,
                                               mode=g.mismatch_mode, cap=g.mismatch_cap, lower=g.mismatch_lower)
        if sampled is not None:
            is_weights = is_weights + mask * (1.0 - sampled)
        advantages = batch["advantages"]  # (S,) one per sample; (S, L) with the slip penalty's token credit
        if "token_credit" in batch:
            advantages = advantages[:, None] + batch["token_credit"]
        loss, loss_metrics = policy_loss(logp, old, advantages, mask, g, ref_logp=batch.get("ref_logp"),
                                         is_weights=is_weights, entropy=entropy,
                                         total_tokens=float(batch["total_tokens"]),
                                         total_sequences=float(batch["total_sequences"]))
        metrics.update({k: v for k, v in loss_metrics.items() if k != "loss"})
        if "alt_targets" in batch:
            # Calculator correction: cross-entropy of the right token at each slip, mean over the
            # step's corrections (this micro-batch's share; the sum over micro-batches is the mean).
            nll = -(scores.alt_logprobs * batch["correction_mask"]).sum()
            loss = loss + g.slip_correction * nll / batch["total_corrections"]
            here = float(batch["correction_mask"].sum())
            if here > 0:  # mean nats per correction in this micro-batch (averaged over those that have one)
                metrics["slip_correction/ce"] = float(nll.detach()) / here
        if "recorded_routing" in batch and scores.routing is not None:
            # Without replay: this forward's routing vs the rollout's, per MoE layer (the policy drifts
            # over the mu inner iterations; with replay the training forward uses the rollout's).
            from rlpipe.model import routing_mismatch

            tokens = batch["segment_ids"] > 0
            for i, share in enumerate(routing_mismatch(scores.routing, batch["recorded_routing"], tokens).tolist()):
                metrics[f"routing/mismatch/{i}"] = share
        return loss, metrics

    def after_step(self, model: torch.nn.Module, step: int) -> dict:
        from rlpipe.train.loop import expert_load_metrics

        g, metrics = self.grpo, dict(self.pending.pop("metrics", {}))
        if g.expert_bias == "sign":
            metrics.update(expert_load_metrics(model.update_expert_bias(g.expert_bias_gamma)))
        else:
            # freeze: the training forwards' counts are measured, then discarded. rollout: the loads
            # of the rollout batch (counted once in its scoring pass) drive the sign rule.
            loads = torch.stack([m.tokens_per_expert.clone() for m in model.moe_layers]) if model.moe_layers else None
            for m in model.moe_layers:
                m.tokens_per_expert.zero_()
            if g.expert_bias == "rollout" and "rollout_loads" in self.pending and (step + 1) % g.mu == 0:
                rollout_loads = self.pending.pop("rollout_loads")
                for m, load in zip(model.moe_layers, rollout_loads):
                    m.update_bias(load, g.expert_bias_gamma if g.expert_bias_gamma is not None
                                  else model.config.bias_update_speed)
            if loads is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(loads)
            metrics.update(expert_load_metrics(loads))
        # with LoRA the live layers hold base + adapters apart: the engine is served their merge
        metrics["push_seconds"] = self.engine.push_weights(model, merged_state_dict(model))
        if "observed" in self.pending:
            indices, success = self.pending.pop("observed")
            indices, success = self.sampler.gather_updates(indices, success)
            self.sampler.update(indices, success)
            metrics.update(self._success_by_level(indices, success))
        if self.ref_model is not None and g.ref_reset_every and (step + 1) % g.ref_reset_every == 0:
            self.ref_model.load_state_dict(merged_state_dict(model))  # LoRA: base + adapters
        return metrics

    def state_dict(self, step: int) -> dict:
        own_ref = isinstance(self.ref_model, torch.nn.Module)  # not LoRA's BaseReference (the frozen base)
        return {"step": step, "sampler": self.sampler.state_dict(), "buffer": self.buffer,
                "ref_model": self.ref_model.state_dict() if own_ref else None,
                "fingerprint": self.fingerprint()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("fingerprint") != self.fingerprint():
            raise ValueError(f"checkpoint was made with {state.get('fingerprint')}, this run has {self.fingerprint()}: "
                             f"resuming would not continue the same run. Start a new run (run=<name>) or set "
                             f"resume=false")
        self.sampler.load_state_dict(state["sampler"])
        self.buffer = state.get("buffer")
        if self.ref_model is not None and state.get("ref_model") is not None:
            self.ref_model.load_state_dict(state["ref_model"])

    def fingerprint(self) -> dict:
        return {"rows": len(self.rows), "prompts_per_step": self.rollout.prompts_per_step,
                "group_size": self.rollout.group_size, "world_size": self.world, "seed": self.seed}

    # -- collecting a rollout batch -------------------------------------------------------------------
    def _seed(self, step: int, round_: int) -> int:
        return int(np.random.SeedSequence([self.seed, step, round_, self.rank]).generate_state(1)[0] & 0x7FFFFFFF)

    def _generate_and_score(self, indices: Sequence[int], step: int, round_: int) -> tuple[Scored, dict]:
        G = self.rollout.group_size
        t0 = time.perf_counter()
        prompts, seed = [self.prompt_ids[i] for i in indices], self._seed(step, round_)
        if self.rollout.greedy_member:
            greedy = replace(self.rollout.sampling, temperature=0.0)
            out = Rollouts.join([self.engine.generate(prompts, G - 1, self.rollout.sampling, seed=seed),
                                 self.engine.generate(prompts, 1, greedy, seed=seed)])
        else:
            out = self.engine.generate(prompts, G, self.rollout.sampling, seed=seed)
        t1 = time.perf_counter()
        samples = [indices[k // G] for k in range(len(out))]
        columns = {c: [self.rows[i].get(c) for i in samples] for c in self.columns}
        columns["group_ids"] = [f"{step}:{round_}:{k // G}" for k in range(len(out))]
        columns["completion_lengths"] = out.lengths
        columns["training_step"] = [step] * len(out)  # rewards that join late (a reward model's start_step)
        result = self.reward([self.rows[i]["prompt"] for i in samples], out.text, **columns)
        t2 = time.perf_counter()
        totals = np.array([0.0 if v is None else float(v) for v in result.totals], dtype=np.float64)
        correct = np.array([1.0 if v is not None and v >= 1.0 - 1e-9 else 0.0
                            for v in result.breakdown[correctness_term(result.breakdown)]])
        scored = Scored(rows=list(indices), prompt_ids=[self.prompt_ids[i] for i in indices],
                        token_ids=out.token_ids, rollout_logp=out.logprobs, text=out.text, truncated=out.truncated,
                        rewards=totals.reshape(-1, G), correct=correct.reshape(-1, G), breakdown=result.breakdown,
                        group_size=G, slips=[arithmetic_slips(text) for text in out.text])
        timing = {"time/generate": t1 - t0, "time/reward": t2 - t1,
                  "reward/none": float(sum(v is None for v in result.totals))}
        timing.update(result.metrics())
        return scored, timing

    def _collect(self, step: int) -> dict:
        """Sample prompts, roll out, score, filter/refill, compute advantages, pack, run the no-grad passes."""
        g, P, G = self.grpo, self.rollout.prompts_per_step, self.rollout.group_size
        per_rank = P // self.world
        rounds = 1 + (g.max_refill_rounds if g.dynamic_sampling else 0)
        order = self.sampler.sample(step, min(int(self.sampler.kept.sum()), P * rounds))
        mine = order[self.rank * per_rank:(self.rank + 1) * per_rank]
        spare = order[P:][self.rank::self.world]
        scored, timing = self._generate_and_score(mine, step, 0)
        observed_rows, observed_success = list(scored.rows), scored.correct.mean(1).tolist()
        n_generated_groups, n_dropped = scored.n_groups, 0
        unused = None  # the dropped groups that do not fill the batch
        if g.dynamic_sampling:
            keep = self._informative(scored)
            kept = scored.take([i for i, k in enumerate(keep) if k])
            dropped = scored.take([i for i, k in enumerate(keep) if not k])
            n_dropped = dropped.n_groups
            round_ = 1
            while kept.n_groups < per_rank and round_ < rounds and spare:
                want = per_rank - kept.n_groups
                extra, spare = spare[:want], spare[want:]
                more, t = self._generate_and_score(extra, step, round_)
                for k in ("time/generate", "time/reward"):
                    timing[k] += t[k]
                observed_rows += more.rows
                observed_success += more.correct.mean(1).tolist()
                n_generated_groups += more.n_groups
                keep = self._informative(more)
                kept = Scored.concat([kept, more.take([i for i, k in enumerate(keep) if k])])
                dropped = Scored.concat([dropped, more.take([i for i, k in enumerate(keep) if not k])])
                n_dropped += sum(not k for k in keep)
                round_ += 1
            # Still short: all-equal groups fill the batch (zero advantage, only KL), keeping shapes fixed.
            short = per_rank - kept.n_groups
            scored = Scored.concat([kept, dropped.take(range(short))]) if short > 0 else kept.take(range(per_rank))
            unused = dropped.take(range(max(short, 0), dropped.n_groups))
        t0 = time.perf_counter()
        rewards = torch.as_tensor(scored.rewards)
        if self.rewards_cfg.length_penalty > 0 and step >= self.rewards_cfg.length_penalty_warmup:
            rewards = rewards + self.rewards_cfg.length_penalty * torch.as_tensor(self._kimi_length(scored))
        if g.scale_rewards == "batch" and self.world > 1:
            everything = self.acc.gather(rewards.to(self.acc.device)).cpu()  # one std over all processes
            scale = everything.std().clamp_min(1e-4)
            advantages = (rewards - rewards.mean(1, keepdim=True)) / scale
        else:
            advantages = group_advantages(rewards, scale=g.scale_rewards)
        advantages = advantages.reshape(-1).float()
        credit, unplaced = None, 0
        if g.slip_penalty > 0:
            placed = [slip_credit(self.tokenizer, ids, text, found, g.slip_penalty)
                      for ids, text, found in zip(scored.token_ids, scored.text, scored.slips)]
            credit, unplaced = [c for c, _ in placed], sum(u for _, u in placed)
        fixes, extra, unfixable = None, [], 0
        if g.slip_correction > 0:
            fixes, extra, unfixable = self._corrections(scored, unused)
        mask_truncated = g.overlong == "mask"
        micro, counts = self._pack(scored, advantages, mask_truncated, credit, fixes, extra)
        self.pending["observed"] = (observed_rows, observed_success)
        metrics = self._rollout_metrics(scored, advantages, timing, n_generated_groups, n_dropped,
                                        unplaced if credit is not None else None)
        if fixes is not None:
            metrics.update(average_over_processes({
                "num_slip_corrections": float(sum(len(f) for f in fixes)),
                "num_slip_corrections_unplaced": float(unfixable),
                "num_correction_only_samples": float(len(extra))}, self.world))
        metrics.update(self.sampler.step_metrics(order[:P]))  # the same global sample on every process
        metrics["time/pack_score"] = time.perf_counter() - t0
        self.pending["metrics"] = metrics
        if self.out_dir is not None and self.rank == 0 and g.completions_every and step % g.completions_every == 0:
            self._write_completions(scored, advantages, step)
        return {"step": step, "micro": micro, "counts": counts}

    def _informative(self, scored: Scored) -> list[bool]:
        """Per group: does it carry any advantage? DAPO: its rewards differ; with the slip penalty
        (and keep_slip_groups) also: one of its samples has a slip."""
        keep = dynamic_sampling_keep(torch.as_tensor(scored.rewards)).tolist()
        if self.grpo.slip_penalty > 0 and self.grpo.keep_slip_groups:
            G = scored.group_size
            keep = [k or any(scored.slips[g * G:(g + 1) * G]) for g, k in enumerate(keep)]
        return keep

    def _corrections(self, scored: Scored, unused: Scored | None):
        """The calculator's corrections (`slip_corrections`) for the batch's samples, then for the
        samples of unused dropped groups that have one (they join the batch with no policy or KL
        term: an all-wrong group's slips are where the corrections are). Returns the (token index,
        right token id) lists of the batch's samples followed by the extra samples', the extra
        samples as (prompt ids, token ids, rollout logprobs), and the count of unplaced slips."""
        fixes, extra, unplaced = [], [], 0
        for part, joins in ((scored, False), (unused, True)):
            if part is None:
                continue
            for k, (ids, text, found) in enumerate(zip(part.token_ids, part.text, part.slips)):
                placed, missed = slip_corrections(self.tokenizer, ids, text, found) if found else ([], 0)
                unplaced += missed
                if joins and not placed:
                    continue  # an unused sample joins the batch only to carry a correction
                fixes.append(placed)
                if joins:
                    extra.append((part.prompt_ids[k // part.group_size], ids, part.rollout_logp[k]))
        return fixes, extra, unplaced

    def _kimi_length(self, scored: Scored) -> np.ndarray:
        from rewards import get

        G = scored.group_size
        values = get("kimi_length")([""] * len(scored.text), scored.text, correct=scored.correct.reshape(-1).tolist(),
                                    group_ids=[k // G for k in range(len(scored.text))],
                                    completion_ids=scored.token_ids)
        return np.array([0.0 if v is None else v for v in values]).reshape(-1, G)

    def _pack(self, scored: Scored, advantages: torch.Tensor, mask_truncated: bool,
              credit: list[list[float]] | None = None, fixes: list[list[tuple[int, int]]] | None = None,
              extra: Sequence[tuple[list[int], list[int], list[float]]] = ()):
        """Packed micro-batches with everything the loss needs; no-grad passes for pi_old / pi_ref.
        credit: per sample, per completion token, added to the sample's advantage (slip penalty).
        fixes: per sample (the batch's, then `extra`'s), the slip corrections (token, right token id).
        extra: samples packed for the corrections only (no policy or KL term)."""
        g, G, N = self.grpo, scored.group_size, len(scored.token_ids)
        prompts = [scored.prompt_ids[k // G] for k in range(N)] + [p for p, _, _ in extra]
        rows, where = pack_rollouts(prompts, scored.token_ids + [ids for _, ids, _ in extra], 1, self.seq_len,
                                    self.tokenizer.pad_token_id)
        rollout_logp = scored.rollout_logp + [lp for _, _, lp in extra]
        advantages = torch.cat([advantages, advantages.new_zeros(len(extra))])
        if credit is not None:
            credit = credit + [[0.0] * len(ids) for _, ids, _ in extra]
        R, T = rows["input_ids"].shape
        n_micro_local = -(-R // g.micro_batch_rows)
        n_micro = n_micro_local
        trained = [0.0 if k >= N or (mask_truncated and scored.truncated[k]) else 1.0 for k in range(len(where))]
        n_tokens = sum(n * t for (_, _, n), t in zip(where, trained))
        n_fixes = sum(len(f) for f in fixes) if fixes is not None else 0
        counts = torch.tensor([float(n_tokens), float(N), float(n_fixes), float(n_micro_local)], dtype=torch.float64)
        if self.world > 1:
            sums = self.acc.reduce(counts[:3].to(self.acc.device), reduction="sum").cpu()
            n_micro = int(self.acc.reduce(counts[3:].to(self.acc.device), reduction="max").cpu().item())
            counts = torch.cat([sums, counts[3:]])
        # Normalisers of the whole step over every process, divided by the processes (DDP averages).
        total_tokens, total_sequences = float(counts[0]) / self.world, float(counts[1]) / self.world
        total_fixes = float(counts[2]) / self.world
        by_row = [[] for _ in range(R)]
        for k, (r, _, _) in enumerate(where):
            by_row[r].append(k)
        micro = []
        bounds = np.linspace(0, R, n_micro + 1).round().astype(int)  # equal micro-batch count on every process
        for a, b in zip(bounds[:-1], bounds[1:]):
            if b <= a:
                # More micro-batches on another process than rows here: re-score row 0 with its
                # mask zeroed, so every process runs the same number of forward/backward passes.
                a, b, members, weight = 0, 1, by_row[0], 0.0
            else:
                members, weight = [k for r in range(a, b) for k in by_row[r]], 1.0
            batch = {key: value[a:b] for key, value in rows.items()}
            per_token = {"rollout_logp": [rollout_logp[k] for k in members]}
            if credit is not None:
                per_token["token_credit"] = [credit[k] for k in members]
            tensors = completion_tensors([where[k] for k in members], a, T, per_token)
            tensors["mask"] *= torch.tensor([[trained[k] * weight] for k in members])
            batch.update(tensors)
            batch["advantages"] = advantages[members]
            if self.rollout.greedy_member:
                batch["sampled"] = torch.tensor([float(k >= N or k % G != G - 1) for k in members])
            batch["total_tokens"] = torch.tensor(max(total_tokens, 1.0))
            batch["total_sequences"] = torch.tensor(max(total_sequences, 1.0))
            if fixes is not None:
                # the right token where the completion's token k sits: logprob position start + k - 1
                batch["alt_targets"] = torch.zeros((b - a, T - 1), dtype=torch.long)
                batch["correction_mask"] = torch.zeros((b - a, T - 1))
                for k in members:
                    row, start, _ = where[k]
                    for t, right in fixes[k]:
                        batch["alt_targets"][row - a, start + t - 1] = right
                        batch["correction_mask"][row - a, start + t - 1] = weight
                batch["total_corrections"] = torch.tensor(max(total_fixes, 1.0))
            self._no_grad_passes(batch)
            micro.append(batch)
        return micro, counts

    @torch.no_grad()
    def _no_grad_passes(self, batch: dict) -> None:
        """pi_old and its routing (mu > 1 or rollout-load bias), pi_ref (beta > 0), in eval mode."""
        g, model = self.grpo, self.model
        need_old = g.mu > 1 or g.expert_bias == "rollout"
        kw = dict(position_ids=batch["position_ids"], segment_ids=batch["segment_ids"],
                  temperature=self.rollout.temperature)
        if need_old:
            was = model.training
            model.eval()
            scores = model.score(batch["input_ids"], return_routing=True, **kw)
            model.train(was)
            if g.mu > 1:
                batch["old_logp"] = gather_completions(scores.logprobs, batch["gather_index"]) * batch["mask"]
                batch["recorded_routing"] = scores.routing
                if g.routing_replay:
                    batch["routing"] = scores.routing
            if g.expert_bias == "rollout" and scores.routing.numel():
                E = model.config.n_routed_experts
                tokens = (batch["segment_ids"] > 0)[None, :, :, None].expand_as(scores.routing)
                loads = torch.stack([torch.bincount(layer[tok], minlength=E).float()
                                     for layer, tok in zip(scores.routing, tokens)])
                prev = self.pending.get("rollout_loads")
                self.pending["rollout_loads"] = loads if prev is None else prev + loads
        if self.ref_model is not None and g.beta > 0:
            ref = self.ref_model.score(batch["input_ids"], **kw).logprobs
            batch["ref_logp"] = gather_completions(ref, batch["gather_index"]) * batch["mask"]

    # -- logging -------------------------------------------------------------------------------------
    def _rollout_metrics(self, scored: Scored, advantages: torch.Tensor, timing: dict, n_groups: int,
                         n_dropped: int, unplaced: int | None = None) -> dict:
        lengths = [len(t) for t in scored.token_ids]
        graded = [v is not None for v in scored.breakdown[correctness_term(scored.breakdown)]]
        metrics = {
            "reward/mean": float(scored.rewards.mean()), "reward/std": float(scored.rewards.std()),
            # over the samples a correctness rule grades (stage 4 mixes in general prompts it does not)
            "accuracy": float(np.mean([c for c, v in zip(scored.correct.reshape(-1), graded) if v] or [0.0])),
            "graded_frac": float(np.mean(graded)),
            "completion_length/mean": float(np.mean(lengths)), "completion_length/max": float(np.max(lengths)),
            "truncated_frac": float(np.mean(scored.truncated)),
            "advantage/abs_mean": float(advantages.abs().mean()),
            "dynamic_sampling/dropped_frac": n_dropped / max(1, n_groups),
            "dynamic_sampling/extra_groups": float(n_groups - scored.n_groups),
            "num_completion_tokens": float(sum(lengths)), "num_prompts": float(scored.n_groups),
            "slips/per_sample": float(np.mean([len(s) for s in scored.slips])),
            "slips/samples_frac": float(np.mean([bool(s) for s in scored.slips])),
            **timing,
        }
        if self.rollout.greedy_member:  # the greedy answers of this step's prompts: what evaluation scores
            metrics["greedy/accuracy"] = float(scored.correct[:, -1].mean())
        if unplaced is not None:  # slips the penalty could not put on a token (prefix decodes disagreed)
            metrics["num_slips_unplaced"] = float(unplaced)
        return average_over_processes(metrics, self.world)

    def _success_by_level(self, rows: Sequence[int], success: Sequence[float]) -> dict[str, float]:
        """Success rate per task/level of the prompts observed this step (all processes)."""
        cells: dict[str, list[float]] = {}
        for r, s in zip(rows, success):
            cells.setdefault(f"success/{self.rows[r].get('task')}/{self.rows[r].get('difficulty')}", []).append(s)
        return {k: float(np.mean(v)) for k, v in sorted(cells.items())}

    def _write_completions(self, scored: Scored, advantages: torch.Tensor, step: int) -> None:
        path = self.out_dir / "completions.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        G = scored.group_size
        with path.open("a") as f:
            for k, text in enumerate(scored.text):
                row = self.rows[scored.rows[k // G]]
                f.write(json.dumps({"step": step, "id": row.get("id"), "task": row.get("task"),
                                    "difficulty": row.get("difficulty"), "prompt": row["prompt"], "completion": text,
                                    "reward": float(scored.rewards.reshape(-1)[k]),
                                    "parts": {n: v[k] for n, v in scored.breakdown.items()},
                                    "advantage": float(advantages[k]), "truncated": scored.truncated[k],
                                    "slips": [slip.statement for slip in scored.slips[k]]},
                                   ensure_ascii=False) + "\n")
