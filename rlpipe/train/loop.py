"""The one training loop every stage runs: supervised (stages 0, 1, 3, distillation) and RL (2, 4).

The loop knows optimisation; what a step trains on comes from a step contract (`Steps`):
- `micro_batches(step, rank)`: this process's micro-batches for optimizer step `step` (a
  supervised stage slices packed rows; RL samples rollouts, scores and packs them here).
- `loss(model, batch) -> (loss, metrics)`: the micro-batch's share of the step loss (the SUM over
  the step's micro-batches is the step loss; DDP averages over processes) and float metrics,
  averaged over micro-batches and processes (keys that start with `num_` or end in `_tokens` are
  counts and are summed instead).
- `after_step(model, step) -> metrics`: runs after every optimizer step on the plain model:
  auxiliary-loss-free bias update, weight push to the rollout engine, sampler update.
- `state_dict(step)` / `load_state_dict(state)`: whatever resume must restore that is not a function
  of the step number (RL: the sampler's success table, the reference model); checkpointed with the
  model, optimizer, scheduler and every process's RNG.

What the loop does around that:
- `accelerate` runs it unchanged on one CPU process, several CPU processes (gloo DDP), GPUs (DDP
  or FSDP, see stages/accelerate/). bf16 autocast where the hardware has it, fp32 on CPU.
- Gradients are synchronised only on the last micro-batch (`no_sync` before), so accumulation and
  processes add up to one global batch.
- AdamW (no weight decay on norms and 1-D tensors), linear warm-up then cosine decay to
  `min_lr_ratio * lr`, global-norm gradient clipping.
- Per logged step: the contract's metrics, lr, grad norm, tokens/s; metrics.jsonl + optional wandb
  (rlpipe.logging); a tqdm bar with ETA on rank 0.
- Checkpoints every `save_every` steps and at the end (rlpipe.train.checkpoint); with
  `resume: true` the newest valid checkpoint of the stage folder is continued exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from accelerate.utils import DistributedType

from rlpipe.logging import MetricsLogger, progress
from rlpipe.train.checkpoint import CHECKPOINTS, CheckpointError, latest_checkpoint, load_checkpoint, save_checkpoint
from rlpipe.train.lora import adapter_state, apply_lora, base_model, export_model


@dataclass
class TrainResult:
    """What a finished (or already finished, when resumed at the end) run hands back."""

    model: torch.nn.Module | None  # plain Transformer, LoRA merged, on rank 0 (None on other ranks)
    step: int
    resumed_from: int
    last_metrics: dict = field(default_factory=dict)
    seconds: float = 0.0
    tokens_per_s: float = 0.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def use_bf16(setting: str) -> bool:
    """train.bf16: 'auto' = bf16 on a GPU that supports it, else fp32 (CPU bf16 is slow and lossy here)."""
    if setting == "true":
        return True
    if setting == "false":
        return False
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def make_accelerator(train_cfg):
    """The Accelerator for this process. `cpu=True` without CUDA: that, plus
    `accelerate launch --multi_gpu --num_processes N`, is what gives N gloo processes on a CPU box."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    if train_cfg.num_threads:
        torch.set_num_threads(train_cfg.num_threads)
    # Experts that receive no token in a micro-batch get no gradient: DDP must be told to expect that.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(cpu=not torch.cuda.is_available(), mixed_precision="bf16" if use_bf16(train_cfg.bf16) else "no",
                       kwargs_handlers=[ddp])


def build_optimizer(model: torch.nn.Module, optim_cfg) -> torch.optim.AdamW:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        # Norm gains and other vectors are scales, not weights to shrink.
        (no_decay if p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": optim_cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=optim_cfg.lr, betas=tuple(optim_cfg.betas),
                             eps=optim_cfg.eps)


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): linear warm-up, then cosine."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps)
    progress_ = min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress_))


def build_scheduler(optimizer: torch.optim.Optimizer, optim_cfg, total_steps: int):
    # Not passed through accelerator.prepare: its wrapper steps once per process, which would
    # make the schedule depend on the number of processes.
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup_steps=optim_cfg.warmup_steps, total_steps=total_steps,
                                       min_lr_ratio=optim_cfg.min_lr_ratio))


def _as_float(x) -> float:
    if x is None:
        return 0.0
    return float(x.detach()) if torch.is_tensor(x) else float(x)


class Steps(Protocol):
    """The step contract the loop trains on (see the module docstring)."""

    num_steps: int

    def micro_batches(self, step: int, rank: int) -> list[dict[str, torch.Tensor]]: ...

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]: ...

    def after_step(self, model: torch.nn.Module, step: int) -> dict: ...

    def state_dict(self, step: int) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def epoch_of(self, step: int) -> float: ...


def is_count(key: str) -> bool:
    """Metrics summed over micro-batches and processes rather than averaged."""
    return key.startswith("num_") or key.endswith("_tokens")


def reduce_metrics(per_micro: list[dict], acc) -> dict[str, float]:
    """Average (or sum, for counts) each metric over micro-batches, then over processes."""
    keys = sorted({k for m in per_micro for k in m})
    values = torch.tensor([[_as_float(m.get(k, 0.0)) for k in keys] for m in per_micro], dtype=torch.float64)
    values = values.sum(0) if values.numel() else torch.zeros(len(keys), dtype=torch.float64)
    counts = torch.tensor([sum(k in m for m in per_micro) for k in keys], dtype=torch.float64)
    if acc.num_processes > 1:
        both = acc.reduce(torch.cat([values, counts]).to(acc.device), reduction="sum").cpu()
        values, counts = both[:len(keys)], both[len(keys):]
    return {k: float(v) if is_count(k) else float(v) / max(float(c), 1.0) for k, v, c in zip(keys, values, counts)}


def expert_load_metrics(loads: torch.Tensor | None) -> dict[str, float]:
    """Per MoE layer, max/mean routed tokens per expert over the step (1.0 = perfectly balanced)."""
    if loads is None or not loads.numel():
        return {}
    loads = loads.float()
    ratio = loads.max(dim=-1).values / loads.mean(dim=-1).clamp_min(1e-9)  # (n_moe_layers,)
    return {f"expert_load_max_mean/{i}": float(r) for i, r in enumerate(ratio)}


def train(model: torch.nn.Module, steps: Steps, cfg, *, out_dir: str | Path, tokenizer=None,
          accelerator=None) -> TrainResult:
    """Train `model` on the step contract `steps` per the stage config `cfg`.

    cfg: a StageConfig (uses train, optim, lora, logging, resume, run, stage).
    Checkpoints and metrics go to out_dir; the returned model is the plain (merged) Transformer."""
    out_dir = Path(out_dir)
    acc = accelerator or make_accelerator(cfg.train)
    rank = acc.process_index
    fsdp = acc.distributed_type == DistributedType.FSDP
    if fsdp and cfg.lora.enabled:
        raise ValueError("lora.enabled with FSDP is not supported: use DDP (stages/accelerate/ddp_*.yaml) for LoRA")
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    core = base_model(model)  # the Transformer: owns update_expert_bias and the config
    optimizer = build_optimizer(model, cfg.optim)
    model, optimizer = acc.prepare(model, optimizer)
    raw_optimizer = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
    scheduler = build_scheduler(raw_optimizer, cfg.optim, steps.num_steps)

    ckpt_root = out_dir / CHECKPOINTS
    start = 0
    checkpoint = latest_checkpoint(ckpt_root) if cfg.resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, train_model=acc.unwrap_model(model), optimizer=optimizer,
                                scheduler=scheduler, accelerator=acc, lora=cfg.lora.enabled)
        try:
            steps.load_state_dict(state["data"])
        except ValueError as err:
            raise CheckpointError(f"{checkpoint}: {err}") from None
        start = state["step"]
        acc.print(f"resumed from {checkpoint} (step {start}/{steps.num_steps})")
    else:
        seed_everything(cfg.train.seed + rank)  # distinct streams per process (e.g. LoRA dropout)

    logger = MetricsLogger.from_config(out_dir, cfg.logging, run_name=f"{cfg.run}/{cfg.stage}", config=dataclasses.asdict(cfg),
                                       resume_step=start, enabled=acc.is_main_process)

    def exported() -> torch.nn.Module | None:
        """The plain model to write (rank 0; None elsewhere). Every process must call it (FSDP gathers)."""
        if fsdp:
            full = acc.get_state_dict(model)  # collective: the whole unsharded state on rank 0
            if not acc.is_main_process:
                return None
            plain = type(core)(core.config)
            plain.load_state_dict(full)
            return plain
        return export_model(acc.unwrap_model(model)) if acc.is_main_process else None

    def save(step: int) -> None:
        unwrapped = acc.unwrap_model(model)
        # Under FSDP each process holds a shard of the optimizer state: the checkpoint keeps the
        # weights (a usable HF folder) but cannot be resumed exactly, and says so when asked to.
        save_checkpoint(ckpt_root, step, model_to_save=exported(), train_model=unwrapped,
                        optimizer=None if fsdp else optimizer, scheduler=scheduler,
                        data_state=steps.state_dict(step), accelerator=acc, keep_last=cfg.train.keep_last,
                        tokenizer=tokenizer, adapter_state=adapter_state(unwrapped))

    bar = progress(total=steps.num_steps, initial=start, desc=cfg.stage, unit="step", disable=not acc.is_main_process)
    t_start = time.perf_counter()
    tokens_seen = 0
    last: dict = {}
    for step in range(start, steps.num_steps):
        t0 = time.perf_counter()
        model.train()
        micro = steps.micro_batches(step, rank)
        t_batches = time.perf_counter() - t0
        per_micro, step_loss, n_tokens = [], 0.0, 0
        for i, batch in enumerate(micro):
            batch = {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            sync = i == len(micro) - 1
            with contextlib.nullcontext() if sync else acc.no_sync(model):
                with acc.autocast():
                    loss, metrics = steps.loss(model, batch)
                acc.backward(loss)
            step_loss += _as_float(loss)
            n_tokens += int(batch["input_ids"].numel())
            per_micro.append(metrics)
        grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip if cfg.optim.grad_clip > 0
                                        else float("inf"))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        t_train = time.perf_counter() - t0 - t_batches  # forward, backward, clipping, optimizer
        per_micro.append({"loss": step_loss, "num_input_tokens": n_tokens})
        metrics = reduce_metrics(per_micro, acc)
        # after_step may differ per rank (e.g. rollout statistics): the contract reduces what it needs.
        metrics.update(steps.after_step(core, step))
        elapsed = time.perf_counter() - t0
        n_tokens = int(metrics.pop("num_input_tokens"))
        tokens_seen += n_tokens
        done = step + 1
        metrics.update({"lr": lr, "grad_norm": _as_float(grad_norm), "tokens_per_s": n_tokens / max(elapsed, 1e-9),
                        "step_seconds": elapsed, "batch_seconds": t_batches, "time/train": t_train,
                        "epoch": steps.epoch_of(done)})
        last = metrics
        if done % cfg.train.log_every == 0 or done == steps.num_steps:
            logger.log(metrics, step=done)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
        if done == steps.num_steps or (cfg.train.save_every and done % cfg.train.save_every == 0):
            save(done)
    bar.close()
    logger.close()
    seconds = time.perf_counter() - t_start
    return TrainResult(model=exported(), step=steps.num_steps, resumed_from=start, last_metrics=last,
                       seconds=seconds, tokens_per_s=tokens_seen / seconds if seconds > 0 and tokens_seen else 0.0)
