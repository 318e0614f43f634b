"""PNG plots written at the end of every stage, from its metrics.jsonl (and eval.json when present).

- `loss.png`: the total loss and its parts (main next-token, MTP, balance) over optimizer steps.
- `lr.png`: the learning-rate schedule (warm-up then cosine).
- `expert_load.png`: per MoE layer, the max/mean routed-token load of each step (1.0 = perfectly
  balanced), which is what auxiliary-loss-free balancing drives down.
- `eval_accuracy.png`: held-out greedy accuracy per task and difficulty from eval.json.
- RL stages (metrics with `reward/mean`): `rl_curves.png` (reward and rollout accuracy, response
  length, KL, entropy, clip fractions, rollout/trainer mismatch, dynamic-sampling drops, arithmetic
  slips, step time by part) and `success_heatmap.png` (rollout success rate per task/level over steps).
Any other numeric series a stage logs goes to `metrics.png`, one panel each.
Stage 4: `rm_vs_rule.png` (the RM's score of rule-right vs rule-wrong reasoning completions and
its AUC over steps). The run report (`rlpipe.report`): `stages_accuracy.png` (per-stage greedy
accuracy and pass@k per task), `stages_overall.png` (format, language, length per stage),
`pass_at_k.png` (pass@k against k per stage: sharpening or wider reach; also in the stage-2 folder,
stage 1 against stage 2) and `funnel.png` (the stage-3 rejection funnel per task). Across runs
(`rlpipe report --run A --run B`):
`runs_accuracy.png` (held-out greedy accuracy per stage, one line per run, e.g. per data seed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402

from rlpipe.logging import METRICS_FILE, read_metrics  # noqa: E402

LOSS_KEYS = ("loss", "main_loss", "mtp_loss", "balance_loss")
LOAD_PREFIX = "expert_load_max_mean/"
# Logged every step but not worth a panel of their own.
_SKIP = {"step", "epoch", "lr", "grad_norm", "trained_tokens", "tokens_per_s", *LOSS_KEYS}
# RL panels: title -> series drawn together.
RL_PANELS = {
    "reward and rollout accuracy": ("reward/mean", "accuracy", "reward/task_accuracy", "reward/format",
                                    "reward/language"),
    "response length (tokens)": ("completion_length/mean", "completion_length/max"),
    "KL to reference (k3)": ("kl",),
    "entropy of sampled tokens": ("entropy",),
    "clip fractions": ("clip_frac/low", "clip_frac/high", "clip_frac/region"),
    "rollout vs trainer logprob": ("mismatch/logp_diff_mean", "mismatch/logp_diff_max"),
    "mismatch correction": ("mismatch/ratio_mean", "mismatch/masked_token_frac", "mismatch/truncated_frac"),
    "dynamic sampling / truncation": ("dynamic_sampling/dropped_frac", "truncated_frac"),
    "arithmetic slips in rollouts": ("slips/samples_frac", "slips/per_sample"),
    "slip correction: nats at the right digit": ("slip_correction/ce",),
    "reward model (standardised)": ("reward/reward_model", "reward/rm_probe"),
    "step time by part (s)": ("step_seconds", "time/generate", "time/reward", "time/train", "push_seconds"),
}


def _series(rows: list[dict], key: str) -> tuple[list[int], list[float]]:
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
    return [p[0] for p in pts], [p[1] for p in pts]


def _save(fig, out: Path) -> Path:
    """Write one figure as a PNG and free it (long runs plot many times)."""
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_stage(stage_dir: str | os.PathLike) -> list[Path]:
    """Write the plots for one stage folder; returns the files written."""
    stage_dir = Path(stage_dir)
    written: list[Path] = []
    metrics_path = stage_dir / METRICS_FILE
    rows = read_metrics(metrics_path) if metrics_path.exists() else []
    if rows:
        if any("reward/mean" in r for r in rows):
            written += [p for p in (plot_rl_curves(rows, stage_dir / "rl_curves.png"),
                                    plot_success_heatmap(rows, stage_dir / "success_heatmap.png")) if p]
        written += [p for p in (plot_losses(rows, stage_dir / "loss.png"),
                                plot_lr(rows, stage_dir / "lr.png"),
                                plot_expert_load(rows, stage_dir / "expert_load.png")) if p]
        if not any("reward/mean" in r for r in rows):  # RL runs have their panels above
            written += [p for p in (plot_other(rows, stage_dir / "metrics.png"),) if p]
    eval_path = stage_dir / "eval.json"
    if eval_path.exists():
        written.append(plot_eval(json.loads(eval_path.read_text()), stage_dir / "eval_accuracy.png"))
    return written


def plot_losses(rows: list[dict], out: Path) -> Path | None:
    keys = [k for k in LOSS_KEYS if _series(rows, k)[0]]
    if not keys:
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        steps, values = _series(rows, key)
        ax.plot(steps, values, lw=1)
        ax.set_title(key)
        ax.set_xlabel("optimizer step")
        if key != "balance_loss" and min(values) > 0:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_lr(rows: list[dict], out: Path) -> Path | None:
    steps, values = _series(rows, "lr")
    if not steps:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot(steps, values, lw=1)
    ax.set_title("learning rate")
    ax.set_xlabel("optimizer step")
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_expert_load(rows: list[dict], out: Path) -> Path | None:
    keys = sorted({k for r in rows for k in r if k.startswith(LOAD_PREFIX)}, key=lambda k: int(k.split("/")[1]))
    if not keys:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in keys:
        steps, values = _series(rows, key)
        ax.plot(steps, values, lw=1, label=f"MoE layer {key.split('/')[1]}")
    ax.axhline(1.0, color="grey", ls="--", lw=0.8)
    ax.set_title("expert load balance (max / mean tokens per expert)")
    ax.set_xlabel("optimizer step")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_other(rows: list[dict], out: Path) -> Path | None:
    keys = sorted({k for r in rows for k in r if k not in _SKIP and not k.startswith(LOAD_PREFIX)
                   and _series(rows, k)[0]})
    if not keys:
        return None
    cols = min(3, len(keys))
    n_rows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(4 * cols, 3 * n_rows), squeeze=False)
    for ax, key in zip(axes.flat, keys):
        steps, values = _series(rows, key)
        ax.plot(steps, values, lw=1)
        ax.set_title(key, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    return _save(fig, out)


def plot_rl_curves(rows: list[dict], out: Path) -> Path | None:
    panels = [(title, [k for k in keys if _series(rows, k)[0]]) for title, keys in RL_PANELS.items()]
    panels = [(t, ks) for t, ks in panels if ks]
    if not panels:
        return None
    cols = 3
    n_rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(n_rows, cols, figsize=(4.5 * cols, 3 * n_rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            steps, values = _series(rows, key)
            ax.plot(steps, values, lw=1, label=key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("optimizer step", fontsize=8)
        if len(keys) > 1:
            ax.legend(fontsize=6)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    return _save(fig, out)


def plot_success_heatmap(rows: list[dict], out: Path) -> Path | None:
    """Rollout success rate per task/level (rows) over optimizer steps (columns); blank = not sampled."""
    import numpy as np

    cells = sorted({k for r in rows for k in r if k.startswith("success/")},
                   key=lambda k: (k.split("/")[1], int(k.split("/")[2]) if k.split("/")[2].isdigit() else 0))
    steps = [r["step"] for r in rows]
    if not cells or not steps:
        return None
    grid = np.full((len(cells), len(steps)), np.nan)
    for j, r in enumerate(rows):
        for i, key in enumerate(cells):
            if isinstance(r.get(key), (int, float)):
                grid[i, j] = r[key]
    fig, ax = plt.subplots(figsize=(min(14, 3 + 0.12 * len(steps)), 0.3 * len(cells) + 1.5))
    image = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1, interpolation="nearest",
                      extent=(steps[0] - 0.5, steps[-1] + 0.5, len(cells) - 0.5, -0.5))
    ax.set_yticks(range(len(cells)), [c[len("success/"):] for c in cells], fontsize=7)
    ax.set_xlabel("optimizer step")
    ax.set_title("rollout success rate per task / level")
    fig.colorbar(image, ax=ax, fraction=0.03)
    return _save(fig, out)


def plot_eval(result: dict, out: Path) -> Path:
    """Grouped bars: one group per task, one bar per difficulty level."""
    by_task = result.get("by_task", {})
    tasks = list(by_task)
    levels = sorted({d for cells in by_task.values() for d in cells}, key=int)
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(tasks) * max(1, len(levels)) / 2), 3.5))
    width = 0.8 / max(1, len(levels))
    for j, level in enumerate(levels):
        xs = [i + j * width for i in range(len(tasks))]
        ys = [by_task[t].get(level, {}).get("accuracy", 0.0) for t in tasks]
        ax.bar(xs, ys, width=width, label=f"level {level}")
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks, rotation=20, fontsize=8)
    ax.set_ylim(0, 1)
    overall = result.get("overall", {})
    ax.set_title(f"held-out greedy accuracy (overall {overall.get('accuracy', 0):.2f}, "
                 f"pass@{overall.get('k', '?')} {overall.get('pass_at_k', 0):.2f})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out)


def plot_rm_vs_rule(guard: dict, out: Path) -> Path | None:
    """Stage 4's reward-hacking guard: RM score of rule-right and rule-wrong completions, and the AUC."""
    steps = [s for s in guard.get("steps", []) if s["auc"] is not None]
    if not steps:
        return None
    x = [s["step"] for s in steps]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    a.plot(x, [s["rm_right"] for s in steps], marker="o", label="rule-right")
    a.plot(x, [s["rm_wrong"] for s in steps], marker="o", label="rule-wrong")
    a.set_title("RM score of reasoning completions (standardised)", fontsize=9)
    a.legend(fontsize=7)
    b.plot(x, [s["auc"] for s in steps], marker="o", color="C2")
    b.axhline(0.5, color="grey", lw=0.8, ls="--")
    b.set_ylim(0, 1)
    b.set_title("AUC: RM ranks rule-right above rule-wrong", fontsize=9)
    for ax in (a, b):
        ax.set_xlabel("optimizer step", fontsize=8)
        ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_stages_accuracy(evals: dict[str, dict], out: Path) -> Path | None:
    """Per task: greedy accuracy (solid) and pass@k (hatched) of every evaluated stage, side by side."""
    if not evals:
        return None
    tasks = sorted({t for e in evals.values() for t in e.get("by_task", {})})
    names = list(evals)
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.6 * len(tasks) * 2), 3.6), sharey=True)
    width = 0.8 / len(names)
    for ax, key, title in ((axes[0], "accuracy", "greedy accuracy"), (axes[1], "pass_at_k", "pass@k")):
        for j, name in enumerate(names):
            cells = evals[name].get("by_task", {})
            ys = []
            for t in tasks:
                levels = cells.get(t, {})
                n = sum(c["n"] for c in levels.values())
                ys.append(sum(c[key] * c["n"] for c in levels.values()) / n if n else 0.0)
            ax.bar([i + j * width for i in range(len(tasks))], ys, width=width, label=name)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks, rotation=20, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title(f"held-out {title} per task", fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    axes[0].legend(fontsize=7)
    return _save(fig, out)


def plot_stages_overall(evals: dict[str, dict], out: Path) -> Path | None:
    """Overall figures per stage: greedy accuracy, pass@k, format rate, language consistency, mean length."""
    if not evals:
        return None
    names = list(evals)
    panels = [("accuracy", "greedy accuracy"), ("pass_at_k", "pass@k"), ("format_rate", "format rate"),
              ("language_consistency", "language consistency"), ("mean_length", "mean length (tokens)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(3 * len(panels), 3))
    for ax, (key, title) in zip(axes, panels):
        ax.bar(range(len(names)), [evals[n]["overall"].get(key, 0.0) for n in names], color="C0")
        ax.set_xticks(range(len(names)), names, rotation=30, fontsize=7)
        ax.set_title(title, fontsize=9)
        if key != "mean_length":
            ax.set_ylim(0, 1)
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, out)


def plot_pass_at_k(evals: dict[str, dict], out: Path) -> Path | None:
    """pass@k against k (log scale) per evaluated stage, from eval.json's `pass_at_k_curve`; greedy
    accuracy as a marker at k = 1. Curves that meet at large k: RL sharpened, it did not reach further."""
    curves = {name: e["overall"]["pass_at_k_curve"] for name, e in evals.items()
              if e.get("overall", {}).get("pass_at_k_curve")}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(5.2, 3.6))
    for i, (name, curve) in enumerate(curves.items()):
        ks = sorted(int(k) for k in curve)
        ax.plot(ks, [curve[str(k)] for k in ks], marker="o", color=f"C{i}", label=f"{name} pass@k")
        ax.plot([1], [evals[name]["overall"]["accuracy"]], marker="*", markersize=11, color=f"C{i}",
                linestyle="none", label=f"{name} greedy")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("k (samples per prompt)", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("held-out pass@k (temperature sampling) and greedy accuracy", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_funnel(funnel: dict, out: Path) -> Path | None:
    """Stage 3's rejection-sampling funnel per task: samples reaching each filter stage."""
    cells = funnel.get("by_cell", {})
    if not cells:
        return None
    stages = list(funnel["overall"])
    tasks = sorted({c.split("/")[0] for c in cells})
    fig, ax = plt.subplots(figsize=(max(6, 1.4 * len(tasks)), 3.4))
    width = 0.8 / len(stages)
    for j, stage in enumerate(stages):
        ys = [sum(v[stage] for k, v in cells.items() if k.split("/")[0] == t) for t in tasks]
        ax.bar([i + j * width for i in range(len(tasks))], ys, width=width, label=stage)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(tasks))], tasks, rotation=20, fontsize=8)
    ax.set_title("stage 3 rejection sampling: samples reaching each filter", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, out)


def plot_runs_accuracy(accuracy: dict[str, dict[str, float]], stages: list[str], out: Path) -> Path | None:
    """Held-out greedy accuracy per stage (in `stages` order), one line per run: does a change hold on every seed?"""
    if not stages:
        return None
    fig, ax = plt.subplots(figsize=(1.3 * len(stages) + 2.5, 3.4))
    for run, per_stage in accuracy.items():
        xs = [i for i, s in enumerate(stages) if s in per_stage]
        ax.plot(xs, [per_stage[stages[i]] for i in xs], marker="o", label=run)
    ax.set_xticks(range(len(stages)), stages, fontsize=8)
    ax.set_ylabel("held-out greedy accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, out)
