"""Stage 2 (DeepSeek-R1 reasoning RL): GRPO-family RL of the stage-1 model with rule-based rewards.

1. Load `runs/<run>/stage-1/` (checkpoint + tokenizer) and the run's `rl` split; a missing stage 1
   or an RL split without gradable columns is one error naming the fix.
2. Per process (the process group exists first, then every process builds its own engine, seeded
   per rank, threads set before it: platform-notes): a rollout engine on the stage-1 weights,
   the Kimi prompt sampler, the parallel rule rewards, and the KL reference when beta > 0.
3. Train with the one loop (`rlpipe.train.loop.train`) on the GRPO step contract
   (`rlpipe.train.rl.GRPOSteps`): rollouts, rewards, advantages, loss, weight push every step.
4. Write `runs/<run>/stage-2/` (HF checkpoint + tokenizer, metrics.jsonl, completions.jsonl, PNG
   plots, wandb offline run), then evaluate it and the starting checkpoint on the held-out split
   with the same grader (eval.json, eval_init.json) and write report.md: the before/after table
   and the RL curves.
"""

from __future__ import annotations

import copy
import json

import torch

from rlpipe.errors import ConfigError, DataError
from rlpipe.pipeline.common import ensure_data, leave_process_group, load_split, require_stage, write_report

GRADABLE = ("answer", "tests", "numbers")  # a row is graded by one of these (rewards.task_accuracy_reward)


def check_rl_rows(rows: list[dict], path) -> None:
    """Every RL row needs a prompt and something to grade it against; one error naming the fix."""
    if not rows:
        raise DataError(f"{path}: the RL split is empty; rebuild the data with `rlpipe data build`")
    missing = [c for c in ("prompt", "id", "task", "difficulty") if c not in rows[0]]
    if missing:
        raise DataError(f"{path}: RL rows need the column(s) {missing}; rebuild the split with `rlpipe data build`")
    for row in rows:
        if not any(row.get(c) not in (None, "", [], {}) for c in GRADABLE):
            raise DataError(f"{path}: row id={row.get('id')!r} has no answer, tests or numbers to grade it by "
                            f"(fields {', '.join(GRADABLE)} are all empty); fill one in or drop the row")


def build_reward(cfg, extra: dict | None = None):
    """The recipe's weighted rule rewards (plus `extra` {reward function: weight}, e.g. a reward
    model), computed in parallel worker threads."""
    from rewards import combine
    from rewards.parallel import ParallelReward

    weights, options = dict(cfg.rewards.weights), {k: dict(v) for k, v in cfg.rewards.options.items()}
    if cfg.grpo.overlong == "shape":  # DAPO's soft overlong punishment
        weights.setdefault("overlong", 1.0)
        options.setdefault("overlong", {"max_length": cfg.rollout.max_new_tokens,
                                        "cache_length": cfg.grpo.overlong_buffer})
    weights.update(extra or {})
    try:
        combined = combine(weights, options)
    except ValueError as err:
        raise ConfigError(f"rewards: {err}") from None
    return ParallelReward(combined, max_workers=cfg.rewards.workers, timeout_s=cfg.rewards.timeout_s)


def run_grpo(cfg, rows: list[dict], reward, init_dir, acc):
    """Steps 2-3 and the checkpoint of step 4, shared by the RL stages (2 and 4): engines, sampler,
    reference, the loop on `GRPOSteps`; returns (TrainResult, PromptSampler) after the process
    group is gone (only rank 0 goes on to evaluate)."""
    from rlpipe.model import load_pretrained
    from rlpipe.rollout import make_engine
    from rlpipe.sampler import PromptSampler
    from rlpipe.tokenizer import load_tokenizer
    from rlpipe.train import train
    from rlpipe.train.lora import BaseReference
    from rlpipe.train.rl import GRPOSteps

    cfg.grpo.max_completion_length = cfg.rollout.max_new_tokens  # Dr. GRPO's constant normaliser
    tokenizer = load_tokenizer(init_dir)
    model = load_pretrained(init_dir, dtype=torch.float32)
    rank = acc.process_index
    engine_kw = dict(max_model_len=min(model.config.max_position_embeddings, 1024), max_num_batched_tokens=16384,
                     kv_cache_bytes=cfg.rollout.kv_cache_mb * 2**20) if cfg.rollout.backend == "vllm" else {}
    engine = make_engine(cfg.rollout.backend, init_dir, seed=cfg.train.seed + rank,
                         model=model if cfg.rollout.backend == "local" else None, **engine_kw)
    ref_model = None
    if cfg.grpo.beta > 0 and cfg.lora.enabled and not cfg.grpo.ref_reset_every:
        ref_model = BaseReference(model)  # the base under the adapters: no copy in memory
    elif cfg.grpo.beta > 0:  # beta 0: no reference model in memory
        ref_model = copy.deepcopy(model).eval().requires_grad_(False)
    sampler = PromptSampler(rows, cfg.sampler, seed=cfg.train.seed, num_steps=cfg.train.max_steps)
    out = cfg.out_dir
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        from rlpipe.config import save_config

        save_config(cfg, out / "config.yaml")
    steps = GRPOSteps(model=model, tokenizer=tokenizer, rows=rows, engine=engine, reward=reward,
                      sampler=sampler, grpo=cfg.grpo, rollout=cfg.rollout, rewards_cfg=cfg.rewards,
                      num_steps=cfg.train.max_steps, seed=cfg.train.seed, seq_len=cfg.train.seq_len,
                      accelerator=acc, out_dir=out, ref_model=ref_model)
    acc.print(f"{cfg.stage}: {len(rows)} RL prompts ({sum(sampler.kept)} kept), {cfg.train.max_steps} steps x "
              f"{cfg.rollout.prompts_per_step} prompts x {cfg.rollout.group_size} samples, loss {cfg.grpo.loss_type}, "
              f"{cfg.rollout.backend} rollouts on {acc.num_processes} process(es)")
    try:
        result = train(model, steps, cfg, out_dir=out, tokenizer=tokenizer, accelerator=acc)
    finally:
        engine.close()  # before the process group goes (vLLM's clean-up needs it)
    if acc.is_main_process:
        result.model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    leave_process_group()
    return result, sampler


def check_rl_config(cfg) -> None:
    """Settings the RL stages cannot run with, as one ConfigError each."""
    if cfg.train.max_steps < 1:
        raise ConfigError(f"{cfg.stage}: train.max_steps={cfg.train.max_steps}; RL runs a set number of optimizer "
                          f"steps: set train.max_steps (e.g. train.max_steps=100)")
    if cfg.lora.enabled and cfg.rollout.backend == "local":
        # the local sampler decodes MLA with kv_b_proj's weight absorbed, which skips an adapter on it
        raise ConfigError(f"{cfg.stage}: lora.enabled with rollout.backend=local is not supported: the local "
                          f"sampler reads the attention weights directly and would sample without the adapters; "
                          f"use rollout.backend=vllm (the engine is served the merged weights)")


def held_out_comparison(cfg, out, init_dir, data_dir) -> tuple[str, str]:
    """Evaluate the stage's checkpoint (eval.json) and compare with its starting checkpoint's
    evaluation (re-run with evaluate_init, else the eval.json the starting stage wrote)."""
    from rlpipe.evaluate import close_engines, evaluate_checkpoint
    from rlpipe.plots import plot_pass_at_k

    try:
        after = evaluate_checkpoint(out, data_dir, out / "eval.json", cfg.eval)
        before = None
        if cfg.evaluate_init:
            before = evaluate_checkpoint(init_dir, data_dir, out / "eval_init.json", cfg.eval)
        elif (init_dir / "eval.json").is_file():  # the starting stage's own evaluation, as it was written
            before = json.loads((init_dir / "eval.json").read_text())
    finally:
        close_engines()
    text = comparison_table(before, after, cfg.init_from, cfg.stage)
    if cfg.logging.plots and plot_pass_at_k({cfg.init_from: before, cfg.stage: after} if before else {cfg.stage: after},
                                            out / "pass_at_k.png"):
        text += "\n\n![pass@k against k](pass_at_k.png)"
    return f"Held-out evaluation ({cfg.eval.split}, {after['overall']['n']} prompts)", text


def run(cfg) -> None:
    from rlpipe.plots import plot_stage
    from rlpipe.train import make_accelerator

    init_dir = require_stage(cfg, cfg.init_from)
    check_rl_config(cfg)
    acc = make_accelerator(cfg.train)  # threads and the process group exist before any engine
    data_dir = ensure_data(cfg, acc, build_if_missing=False)
    rows = [dict(r) for r in load_split(cfg, cfg.split)]
    check_rl_rows(rows, cfg.data_path / cfg.split)
    result, sampler = run_grpo(cfg, rows, build_reward(cfg), init_dir, acc)
    if not acc.is_main_process:
        return
    out = cfg.out_dir
    sections = [("Input", f"- initialised from `{init_dir}`\n- {len(rows)} RL prompts from `{cfg.data_path / cfg.split}`"),
                ("Reinforcement learning", rl_section(result, cfg, sampler))]
    if cfg.eval.enabled:
        sections.append(held_out_comparison(cfg, out, init_dir, data_dir))
    if cfg.logging.plots:
        plot_stage(out)
    write_report(cfg, "Stage 2: reasoning RL (GRPO)", sections)
    print((out / "report.md").read_text())
    print(f"stage-2 written to {out}")


def rl_section(result, cfg, sampler) -> str:
    m, g, r = result.last_metrics, cfg.grpo, cfg.rollout
    lines = [
        f"- {result.step} optimizer steps (resumed from {result.resumed_from}), {result.seconds / 60:.1f} min here; "
        f"{r.prompts_per_step} prompts x {r.group_size} samples per step, {r.backend} rollouts at temperature "
        f"{r.temperature}, at most {r.max_new_tokens} new tokens",
        f"- loss `{g.loss_type}` (eps {g.eps_low}/{g.eps_high}, beta {g.beta}, mu {g.mu}), advantages scaled by "
        f"`{g.scale_rewards}`, mismatch correction `{g.mismatch_mode}` (cap {g.mismatch_cap}), dynamic sampling "
        f"{'on' if g.dynamic_sampling else 'off'}, overlong `{g.overlong}`, expert bias `{g.expert_bias}`, routing "
        f"replay {'on' if g.routing_replay else 'off'}",
        f"- rewards: " + ", ".join(f"{k} x {v:g}" for k, v in cfg.rewards.weights.items())
        + (f", Kimi length penalty x {cfg.rewards.length_penalty:g} after step {cfg.rewards.length_penalty_warmup}"
           if cfg.rewards.length_penalty else ""),
        f"- sampler: curriculum `{cfg.sampler.curriculum}`, "
        f"priority {cfg.sampler.weighting if cfg.sampler.priority else 'off'} (floor {cfg.sampler.floor}, "
        f"cell prior {'on' if cfg.sampler.cell_prior else 'off'}); dropped {sampler.dropped}",
    ]
    if m:
        keys = [("reward/mean", "reward"), ("accuracy", "rollout accuracy"), ("completion_length/mean", "length"),
                ("entropy", "entropy"), ("mismatch/logp_diff_max", "max |rollout - trainer logprob|"),
                ("push_seconds", "weight push s"), ("step_seconds", "step s")]
        lines.append("- last step: " + ", ".join(f"{name} {m[k]:.4g}" for k, name in keys if k in m))
    return "\n".join(lines)


def comparison_table(before: dict | None, after: dict, before_name: str, after_name: str = "stage-2") -> str:
    """Before/after held-out table: overall figures, then greedy accuracy per task and level."""
    from rlpipe.evaluate import markdown_table

    if before is None:
        return markdown_table(after)
    keys = [("accuracy", "greedy accuracy"), ("pass_at_k", f"pass@{after['overall']['k']}"),
            ("maj_at_n", f"maj@{after['overall'].get('n_samples', 'n')}"),
            ("format_rate", "format"), ("language_consistency", "language consistency"),
            ("mixing_rate", "language mixing"), ("mean_length", "mean length (tokens)"),
            ("mixed_groups", "mixed groups"), ("slip_rate", "greedy answers with an arithmetic slip")]
    lines = [f"| | {before_name} | {after_name} | change |", "|---|---|---|---|"]
    for key, name in keys:
        if key not in before["overall"] or key not in after["overall"]:
            continue  # an eval.json written before the metric existed
        b, a = before["overall"][key], after["overall"][key]
        lines.append(f"| {name} | {b:.3f} | {a:.3f} | {a - b:+.3f} |")
    if before["overall"].get("n_samples") == after["overall"].get("n_samples"):  # the estimator depends on n
        curve_b, curve_a = before["overall"].get("pass_at_k_curve", {}), after["overall"].get("pass_at_k_curve", {})
        lines += [f"| pass@{k} | {curve_b[k]:.3f} | {curve_a[k]:.3f} | {curve_a[k] - curve_b[k]:+.3f} |"
                  for k in curve_a if k in curve_b]
    lines += ["", f"Greedy accuracy per task and level, {before_name} -> {after_name}:", ""]
    levels = sorted({d for t in after["by_task"].values() for d in t}, key=int)
    lines.append("| task | " + " | ".join(f"level {d}" for d in levels) + " |")
    lines.append("|---|" + "---|" * len(levels))
    for task, cells in after["by_task"].items():
        row = []
        for d in levels:
            b = before["by_task"].get(task, {}).get(d)
            a = cells.get(d)
            row.append(f"{b['accuracy']:.2f} -> {a['accuracy']:.2f}" if a and b else "-")
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    lines += ["", f"{after_name} detail:", "", markdown_table(after)]
    return "\n".join(lines)


__all__ = ["build_reward", "check_rl_rows", "check_rl_config", "comparison_table", "held_out_comparison", "run", "run_grpo"]
