"""The generic training loop every supervised stage runs (stage 0, stage 1, stage 3, distillation).

- `accelerate` runs it unchanged on one CPU process, several CPU processes (gloo DDP), GPUs (DDP
  or FSDP, see stages/accelerate/). bf16 autocast where the hardware has it, fp32 on CPU.
- One optimizer step = grad_accum micro-batches per process; gradients are synchronised only on the
  last one (`no_sync` before), so accumulation and processes add up to one global batch.
- AdamW (no weight decay on norms and 1-D tensors), linear warm-up then cosine decay to
  `min_lr_ratio * lr`, global-norm gradient clipping.
- Auxiliary-loss-free balancing: `update_expert_bias(gamma)` once per optimizer step, after the
  whole accumulated step (as torchtitan does in its optimizer hook), so the loads it sees are the
  step's, all-reduced over processes.
- Per logged step: loss and its parts (main, MTP, balance), lr, grad norm, tokens/s, and per MoE
  layer the max/mean expert load. metrics.jsonl + optional wandb (rlpipe.logging); a tqdm bar with
  ETA on rank 0.
- Checkpoints every `save_every` steps and at the end (rlpipe.train.checkpoint); with
  `resume: true` the newest valid checkpoint of the stage folder is continued exactly.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from accelerate.utils import DistributedType

from rlpipe.config import to_dict
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


def default_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]):
    """Next-token + MTP + balance loss, as the model composes it (ModelOutput.loss)."""
    return model(**batch)


def train(model: torch.nn.Module, data, cfg, *, out_dir: str | Path, tokenizer=None, accelerator=None,
          loss_fn: Callable = default_loss) -> TrainResult:
    """Train `model` on `data` (e.g. `rlpipe.train.sft.SupervisedData`) per the stage config `cfg`.

    data: `num_steps`, `micro_batches(step, rank) -> list[dict]`, `state_dict(step)`, `check_resume(state)`.
    cfg: a StageConfig (uses train, optim, lora, logging, resume, run, stage).
    Checkpoints and metrics go to out_dir; the returned model is the plain (merged) Transformer."""
    out_dir = Path(out_dir)
    acc = accelerator or make_accelerator(cfg.train)
    rank, world = acc.process_index, acc.num_processes
    fsdp = acc.distributed_type == DistributedType.FSDP
    if fsdp and cfg.lora.enabled:
        raise ValueError("lora.enabled with FSDP is not supported: use DDP (stages/accelerate/ddp_*.yaml) for LoRA")
    if cfg.lora.enabled:
        model = apply_lora(model, cfg.lora)
    core = base_model(model)  # the Transformer: owns update_expert_bias and the config
    optimizer = build_optimizer(model, cfg.optim)
    model, optimizer = acc.prepare(model, optimizer)
    raw_optimizer = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
    scheduler = build_scheduler(raw_optimizer, cfg.optim, data.num_steps)
    gamma = cfg.train.expert_bias_gamma
    if gamma is None:
        gamma = core.config.bias_update_speed

    ckpt_root = out_dir / CHECKPOINTS
    start = 0
    checkpoint = latest_checkpoint(ckpt_root) if cfg.resume else None
    if checkpoint is not None:
        state = load_checkpoint(checkpoint, train_model=acc.unwrap_model(model), optimizer=optimizer,
                                scheduler=scheduler, accelerator=acc, lora=cfg.lora.enabled)
        try:
            data.check_resume(state["data"])
        except ValueError as err:
            raise CheckpointError(f"{checkpoint}: {err}") from None
        start = state["step"]
        acc.print(f"resumed from {checkpoint} (step {start}/{data.num_steps})")
    else:
        seed_everything(cfg.train.seed + rank)  # distinct streams per process (e.g. LoRA dropout)

    logger = MetricsLogger.from_config(out_dir, cfg.logging, run_name=f"{cfg.run}/{cfg.stage}", config=to_dict(cfg),
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
                        data_state=data.state_dict(step), accelerator=acc, keep_last=cfg.train.keep_last,
                        tokenizer=tokenizer, adapter_state=adapter_state(unwrapped))

    bar = progress(total=data.num_steps, initial=start, desc=cfg.stage, unit="step", disable=not acc.is_main_process)
    t_start = time.perf_counter()
    tokens_seen = 0
    last: dict = {}
    for step in range(start, data.num_steps):
        t0 = time.perf_counter()
        model.train()
        micro = data.micro_batches(step, rank)
        # loss, main, mtp, balance, trained tokens, all tokens (summed over micro-batches)
        sums = torch.zeros(6, dtype=torch.float64)
        for i, batch in enumerate(micro):
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            sync = i == len(micro) - 1
            with contextlib.nullcontext() if sync else acc.no_sync(model):
                with acc.autocast():
                    out = loss_fn(model, batch)
                acc.backward(out.loss / len(micro))
            mtp = getattr(out, "mtp_losses", None) or []
            sums += torch.tensor([_as_float(out.loss), _as_float(getattr(out, "main_loss", out.loss)),
                                  sum(_as_float(m) for m in mtp) / max(1, len(mtp)),
                                  _as_float(getattr(out, "balance_loss", None)),
                                  float((batch["labels"] != -100).sum()) if "labels" in batch else 0.0,
                                  float(batch["input_ids"].numel())], dtype=torch.float64)
        grad_norm = acc.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip if cfg.optim.grad_clip > 0
                                        else float("inf"))
        lr = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loads = core.update_expert_bias(gamma)  # (n_moe_layers, n_routed_experts), all-reduced

        if world > 1:
            sums = acc.reduce(sums.to(acc.device), reduction="sum").cpu()
        n_micro = len(micro) * world
        elapsed = time.perf_counter() - t0
        tokens_seen += int(sums[5])
        done = step + 1
        metrics = {"loss": float(sums[0]) / n_micro, "main_loss": float(sums[1]) / n_micro,
                   "mtp_loss": float(sums[2]) / n_micro, "balance_loss": float(sums[3]) / n_micro,
                   "lr": lr, "grad_norm": _as_float(grad_norm), "trained_tokens": int(sums[4]),
                   "tokens_per_s": float(sums[5]) / max(elapsed, 1e-9), "epoch": data.epoch_of(done)}
        if loads is not None and loads.numel():
            loads = loads.float()
            ratio = loads.max(dim=-1).values / loads.mean(dim=-1).clamp_min(1e-9)  # (n_moe_layers,)
            metrics.update({f"expert_load_max_mean/{i}": float(r) for i, r in enumerate(ratio)})
        last = metrics
        if done % cfg.train.log_every == 0 or done == data.num_steps:
            logger.log(metrics, step=done)
        bar.update(1)
        bar.set_postfix(loss=f"{metrics['loss']:.3f}", lr=f"{lr:.2e}", refresh=False)
        if done == data.num_steps or (cfg.train.save_every and done % cfg.train.save_every == 0):
            save(done)
    bar.close()
    logger.close()
    seconds = time.perf_counter() - t_start
    return TrainResult(model=exported(), step=data.num_steps, resumed_from=start, last_metrics=last,
                       seconds=seconds, tokens_per_s=tokens_seen / seconds if seconds > 0 and tokens_seen else 0.0)
