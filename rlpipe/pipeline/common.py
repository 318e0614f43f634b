"""What every stage procedure shares: inputs, the supervised run, and the stage folder's outputs.

- `require_stage(cfg, name)`: the previous stage's checkpoint folder, or one clear error naming the
  make target that produces it.
- `ensure_data(cfg, accelerator)`: the run's data folder, built by `data.build` (rank 0) when absent.
- `run_supervised(model, tokenizer, dataset, cfg, accelerator)`: tokenise (prompts masked), pack,
  train with `rlpipe.train.loop`, then write the stage folder: HF checkpoint + tokenizer at its
  top level (what transformers and vLLM load), metrics.jsonl, plots.
- `write_report(cfg, sections)`: report.md, the stage's human-readable summary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from rlpipe.config import STAGES, save_config
from rlpipe.errors import StageInputError  # re-exported: the one user-error family (rlpipe.errors)


def make_target(stage: str, run: str) -> str:
    target = STAGES[stage][2] if stage in STAGES else f"make {stage}"
    return f"{target} RUN={run}"


def require_stage(cfg, name: str) -> Path:
    """Folder of stage `name` of this run (or `name` itself if it is a path) holding a finished checkpoint."""
    path = Path(name) if os.sep in name or Path(name).is_absolute() else cfg.stage_dir(name)
    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        produce = make_target(name, cfg.run) if name in STAGES else "a finished stage"
        raise StageInputError(f"{cfg.stage} needs the checkpoint of {name} at {path}/ (config.json + tokenizer), "
                              f"which does not exist; produce it with `{produce}`")
    return path


def ensure_data(cfg, accelerator=None, *, build_if_missing: bool = True) -> Path:
    """The run's data folder; stage 0 builds it with `data.build` if it does not exist yet."""
    data_dir = cfg.data_path
    done = data_dir / "eval"  # the builder writes all splits; eval is the one every stage needs
    if not done.exists():
        if not build_if_missing:
            raise StageInputError(f"{cfg.stage} needs the task data at {data_dir}/ which does not exist; it is "
                                  f"built by `{make_target('stage-0', cfg.run)}`")
        main = accelerator is None or accelerator.is_main_process
        if main:
            from data.build import main as build_main

            size = getattr(getattr(cfg, "data", None), "size", "tiny")
            seed = getattr(getattr(cfg, "data", None), "seed", 0)
            code = build_main(["--out", str(data_dir), "--seed", str(seed), "--size", size])
            if code not in (None, 0):
                raise RuntimeError(f"data.build exited with {code} for {data_dir}")
        if accelerator is not None:
            accelerator.wait_for_everyone()
    return data_dir


def load_split(cfg, name: str):
    import datasets

    path = cfg.data_path / name
    if not path.exists():
        raise StageInputError(f"{path}: the '{name}' split is missing from the run's data; rebuild the data "
                              f"(delete {cfg.data_path} and run `{make_target('stage-0', cfg.run)}`)")
    return datasets.load_from_disk(str(path))


@dataclass
class SupervisedOutcome:
    data_stats: dict
    steps: int
    resumed_from: int
    seconds: float
    tokens_per_s: float
    last_metrics: dict = field(default_factory=dict)
    n_parameters: int = 0
    processes: int = 1


def run_supervised(model: torch.nn.Module, tokenizer, dataset, cfg, accelerator) -> SupervisedOutcome:
    """Train on a split (`text` -> LM loss, `prompt` + `solution` -> masked SFT) and write the stage folder."""
    from rlpipe.plots import plot_stage
    from rlpipe.train import SupervisedData, dataset_examples, pack, train

    out = cfg.out_dir
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    examples, stats = dataset_examples(tokenizer, dataset, cfg.train.seq_len, max_examples=cfg.train.max_examples)
    # Shuffle before packing so a row mixes tasks and difficulties rather than holding neighbours.
    order = np.random.default_rng([cfg.train.seed, 1]).permutation(len(examples))
    rows = pack([examples[i] for i in order], cfg.train.seq_len, tokenizer.pad_token_id, packing=cfg.train.packing)
    stats["rows"] = len(rows)
    stats["fill"] = float((rows.segment_ids > 0).mean())  # share of row positions holding real tokens
    data = SupervisedData(rows, micro_batch_size=cfg.train.micro_batch_size, grad_accum=cfg.train.grad_accum,
                          world_size=accelerator.num_processes, seed=cfg.train.seed,
                          max_steps=cfg.train.max_steps, epochs=cfg.train.epochs,
                          expert_bias_gamma=cfg.train.expert_bias_gamma)
    accelerator.print(f"{cfg.stage}: {stats['examples']} examples -> {len(rows)} rows of {cfg.train.seq_len} "
                      f"(fill {stats['fill']:.0%}), {data.num_steps} optimizer steps")
    n_parameters = model.num_parameters()
    result = train(model, data, cfg, out_dir=out, tokenizer=tokenizer, accelerator=accelerator)
    if accelerator.is_main_process:
        # The stage's deliverable: an HF folder at the top of the stage folder, tokenizer beside it.
        result.model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        if cfg.logging.plots:
            plot_stage(out)
    accelerator.wait_for_everyone()
    return SupervisedOutcome(data_stats=stats, steps=result.step, resumed_from=result.resumed_from,
                             seconds=result.seconds, tokens_per_s=result.tokens_per_s,
                             last_metrics=result.last_metrics, n_parameters=n_parameters,
                             processes=accelerator.num_processes)


def leave_process_group() -> None:
    """End the multi-process part of a stage: after this only rank 0 should continue (evaluation).

    vLLM built on rank 0 alone inside a live gloo world hangs (platform notes); without the group it
    makes its own world of size 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def training_section(outcome: SupervisedOutcome, cfg) -> str:
    m = outcome.last_metrics
    s = outcome.data_stats
    t = cfg.train
    lines = [
        f"- data: {s['examples']} examples ({s['kind']}), {s['truncated']} cut at seq_len {t.seq_len}, "
        f"{s['rows']} packed rows (fill {s['fill']:.0%}), {s['trained_tokens']} trained tokens",
        f"- model: {outcome.n_parameters / 1e6:.2f}M parameters"
        + (f", LoRA r={cfg.lora.r} (merged on save)" if cfg.lora.enabled else ""),
        f"- optimisation: {outcome.steps} steps (resumed from {outcome.resumed_from}), global batch "
        f"{t.micro_batch_size} x {t.grad_accum} x {outcome.processes} processes = "
        f"{t.micro_batch_size * t.grad_accum * outcome.processes} rows of {t.seq_len}, AdamW lr {cfg.optim.lr:g} "
        f"(warm-up {cfg.optim.warmup_steps}, cosine to {cfg.optim.min_lr_ratio:g}x)",
        f"- time: {outcome.seconds / 60:.1f} min for the steps run here, {outcome.tokens_per_s:,.0f} tokens/s",
    ]
    if m:
        lines.append(f"- final step: loss {m['loss']:.4f} (main {m['main_loss']:.4f}, MTP {m['mtp_loss']:.4f}, "
                     f"balance {m['balance_loss']:.4f})")
        loads = [v for k, v in sorted(m.items()) if k.startswith("expert_load_max_mean/")]
        if loads:
            lines.append("- expert load max/mean per MoE layer at the last step: "
                         + ", ".join(f"{v:.2f}" for v in loads))
    return "\n".join(lines)


def write_report(cfg, title: str, sections: list[tuple[str, str]]) -> Path:
    """report.md: a title, the sections given, then the plots present in the stage folder."""
    out = cfg.out_dir
    parts = [f"# {title}", "", f"Run `{cfg.run}`, stage folder `{out}`.", ""]
    for heading, body in sections:
        parts += [f"## {heading}", "", body.rstrip(), ""]
    plots = [p for p in ("rl_curves.png", "success_heatmap.png", "loss.png", "lr.png", "expert_load.png",
                         "eval_accuracy.png", "metrics.png")
             if (out / p).exists()]
    if plots:
        parts += ["## Plots", ""] + [f"![{p[:-4]}]({p})" for p in plots] + [""]
    path = out / "report.md"
    path.write_text("\n".join(parts))
    return path
