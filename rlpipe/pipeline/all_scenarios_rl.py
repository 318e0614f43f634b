"""Stage 4 (DeepSeek-R1): RL for all scenarios, rule rewards for reasoning and a learned reward model.

1. The preference reward model (`rlpipe.train.reward_model`): a scalar head on a stage checkpoint's
   backbone (`reward_model.init_from`, stage 3 by default), trained Bradley-Terry on the
   `preferences` split into `stage-4/reward_model/` (held-out pair accuracy per kind in
   rm_eval.json); a rerun reuses a finished one.
2. The prompt mix: the `rl` split's reasoning prompts and, at `general_share` of all prompts, the
   non-reasoning split's general prompts (`general_held_out` of them kept back to measure the RM
   score before and after). A general row's gold answer moves to `reference`: no rule grades it.
3. The reward: the stage-2 rule rewards (task accuracy only where a rule applies; format and
   language on every row) plus the RM on general prompts only (`reward_model.weight`, paid from
   `reward_model.start_step` on: R1 warns that long RM-driven training invites reward hacking).
   A second copy of the RM, weight 0, scores the reasoning completions (`rm_probe`): logged, never
   paid, so the report can set the RM's opinion beside the rule's verdict on the same completions.
4. GRPO with the stage-2 trainer (`reasoning_rl.run_grpo`), temperature 0.7 by default.
5. Evaluation: the held-out reasoning split as every stage (eval.json, compared with the starting
   checkpoint's), the RM score of greedy answers to the held-out general prompts before and after
   (general_eval.json), and the RM-vs-rule guard from completions.jsonl (rm_vs_rule.json + PNG).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rlpipe.errors import ConfigError, DataError
from rlpipe.pipeline.common import ensure_data, load_split, require_stage, write_report
from rlpipe.pipeline.reasoning_rl import (build_reward, check_rl_rows, check_rl_config, held_out_comparison, rl_section,
                                          run_grpo)

RM_DIR = "reward_model"
PROBE = "rm_probe"


def scenario_rows(reasoning: list[dict], general: list[dict], share: float, held_out: int,
                  seed: int) -> tuple[list[dict], list[dict]]:
    """(RL rows, held-out general rows). All reasoning rows, plus as many general rows as make them
    `share` of the total (all there are at most, after `held_out` are kept back); every row gets a
    `scenario` column, general rows lose their gold answer to `reference`."""
    order = np.random.default_rng([seed, 4]).permutation(len(general)).tolist()
    kept_back = [general[i] for i in order[:held_out]]
    want = int(round(share / (1.0 - share) * len(reasoning))) if share > 0 else 0
    chosen = [general[i] for i in order[held_out:held_out + want]]
    rows = [{**r, "scenario": "reasoning"} for r in reasoning]
    rows += [{**r, "scenario": "general", "reference": r.get("answer"), "answer": None, "tests": "",
              "numbers": [], "target": None} for r in chosen]
    return rows, kept_back


def build_rewards(cfg, rm_dir: Path, general_tasks: set[str], reasoning_tasks: set[str]):
    """The stage-4 reward: rule rewards + RM on general prompts (paid from `reward_model.start_step`) +
    RM probe on reasoning ones (weight 0); also the same RM ungated, the judge of held-out general answers."""
    from rlpipe.train.reward_model import RewardModelReward

    rm = cfg.reward_model
    paid = RewardModelReward(str(rm_dir), tasks=general_tasks, start_step=rm.start_step)
    probe = RewardModelReward(paid.model, paid.tokenizer, tasks=reasoning_tasks)
    probe.__name__ = PROBE
    judge = RewardModelReward(paid.model, paid.tokenizer, tasks=general_tasks)
    return build_reward(cfg, {paid: rm.weight, probe: 0.0}), judge


def general_scores(model_dir, rows: list[dict], rm, cfg) -> dict:
    """Mean RM score (standardised) of the greedy answers of `model_dir` to held-out general prompts,
    and their exact-match rate against the reference answer (a rule check beside the RM's view)."""
    from rewards.format import answer_text
    from rlpipe.evaluate import engine_for
    from rlpipe.rollout import Sampling
    from rlpipe.tokenizer import load_tokenizer, prompt_ids

    tokenizer = load_tokenizer(model_dir)
    ids = prompt_ids(tokenizer, [r["prompt"] for r in rows])
    texts = engine_for(str(model_dir), cfg.eval.backend, cfg.eval.seed).generate(
        ids, 1, Sampling(temperature=0.0, max_new_tokens=cfg.eval.max_new_tokens)).text
    scores = rm([r["prompt"] for r in rows], texts, task=[r["task"] for r in rows])
    exact = [" ".join((answer_text(t) or "").split()) == " ".join(str(r.get("answer", "")).split())
             for t, r in zip(texts, rows)]
    return {"checkpoint": str(model_dir), "rm_score": float(np.mean(scores)), "exact_match": float(np.mean(exact)),
            "n": len(rows), "samples": [{"prompt": r["prompt"], "completion": t, "rm_score": s}
                                        for r, t, s in list(zip(rows, texts, scores))[:10]]}


def rm_vs_rule(completions_path: Path) -> dict:
    """Per logged step, on reasoning completions: mean RM score of the rule-correct and the
    rule-wrong ones and the RM's pairwise accuracy at telling them apart (AUC). An RM that drifts
    from the rule (wrong answers scoring as high as right ones, or the AUC falling) is being gamed."""
    by_step: dict[int, list[tuple[float, float]]] = {}
    if completions_path.exists():
        for line in completions_path.read_text().splitlines():
            row = json.loads(line)
            rm, rule = row["parts"].get(PROBE), row["parts"].get("task_accuracy")
            if rm is not None and rule is not None:
                by_step.setdefault(int(row["step"]), []).append((float(rm), float(rule)))
    steps = []
    for step, pairs in sorted(by_step.items()):
        right = [s for s, c in pairs if c >= 1.0 - 1e-9]
        wrong = [s for s, c in pairs if c < 1.0 - 1e-9]
        auc = None
        if right and wrong:
            r, w = np.array(right)[:, None], np.array(wrong)[None, :]
            auc = float(((r > w) + 0.5 * (r == w)).mean())
        steps.append({"step": step, "rm_right": float(np.mean(right)) if right else None,
                      "rm_wrong": float(np.mean(wrong)) if wrong else None, "auc": auc,
                      "n_right": len(right), "n_wrong": len(wrong)})
    return {"steps": steps}


def run(cfg) -> None:
    from rlpipe.plots import plot_rm_vs_rule, plot_stage
    from rlpipe.train import make_accelerator
    from rlpipe.train.reward_model import accuracy_table, train_reward_model

    init_dir = require_stage(cfg, cfg.init_from)
    check_rl_config(cfg)
    if not 0.0 <= cfg.general_share < 1.0:
        raise ConfigError(f"{cfg.stage}: general_share={cfg.general_share}; the share of general prompts is in [0, 1)")
    acc = make_accelerator(cfg.train)
    data_dir = ensure_data(cfg, acc, build_if_missing=False)
    out = cfg.out_dir
    rm_dir = out / RM_DIR
    if not (rm_dir / "rm_eval.json").is_file():
        train_reward_model(cfg, init_dir=require_stage(cfg, cfg.reward_model.init_from), data_dir=data_dir,
                           out_dir=rm_dir, accelerator=acc)
    rm_report = json.loads((rm_dir / "rm_eval.json").read_text())

    reasoning = [dict(r) for r in load_split(cfg, cfg.split)]
    check_rl_rows(reasoning, cfg.data_path / cfg.split)
    general = [dict(r) for r in load_split(cfg, cfg.general_split)]
    if cfg.general_share > 0 and (not general or "prompt" not in general[0]):
        raise DataError(f"{cfg.data_path / cfg.general_split}: general prompts need a `prompt` column; rebuild the "
                        f"data with `rlpipe data build`")
    rows, held_general = scenario_rows(reasoning, general, cfg.general_share, cfg.general_held_out, cfg.train.seed)
    reward, rm = build_rewards(cfg, rm_dir, {r["task"] for r in general}, {r["task"] for r in reasoning})
    result, sampler = run_grpo(cfg, rows, reward, init_dir, acc)
    if not acc.is_main_process:
        return
    n_general = sum(r["scenario"] == "general" for r in rows)
    sections = [
        ("Input", f"- initialised from `{init_dir}`\n- {len(rows) - n_general} reasoning prompts from "
                  f"`{cfg.data_path / cfg.split}` + {n_general} general prompts from "
                  f"`{cfg.data_path / cfg.general_split}` ({len(held_general)} more held out)"),
        (f"Reward model (`{rm_dir}`, Bradley-Terry on `{cfg.reward_model.split}`, from "
         f"`{cfg.reward_model.init_from}`)", accuracy_table(rm_report)),
        ("Reinforcement learning", rl_section(result, cfg, sampler)
         + f"\n- reward model on general prompts x {cfg.reward_model.weight:g} from step {cfg.reward_model.start_step}"),
    ]
    guard = rm_vs_rule(out / "completions.jsonl")
    (out / "rm_vs_rule.json").write_text(json.dumps(guard, indent=1))
    sections.append(("Reward model vs the rule on reasoning completions", rm_vs_rule_table(guard)))
    if cfg.eval.enabled:
        sections.append(held_out_comparison(cfg, out, init_dir, data_dir))
        from rlpipe.evaluate import close_engines

        try:
            before = general_scores(init_dir, held_general, rm, cfg)
            after = general_scores(out, held_general, rm, cfg)
        finally:
            close_engines()
        (out / "general_eval.json").write_text(json.dumps({"before": before, "after": after}, indent=1,
                                                          ensure_ascii=False))
        sections.append((f"General prompts ({len(held_general)} held out, greedy)",
                         "| | " + cfg.init_from + f" | {cfg.stage} |\n|---|---|---|\n"
                         f"| RM score (standardised) | {before['rm_score']:.3f} | {after['rm_score']:.3f} |\n"
                         f"| exact match with the reference | {before['exact_match']:.3f} | "
                         f"{after['exact_match']:.3f} |"))
    if cfg.logging.plots:
        plot_stage(out)
        plot_rm_vs_rule(guard, out / "rm_vs_rule.png")
    write_report(cfg, "Stage 4: RL for all scenarios (rule rewards + reward model)", sections)
    print((out / "report.md").read_text())
    print(f"{cfg.stage} written to {out}")


def rm_vs_rule_table(guard: dict) -> str:
    rows = [s for s in guard["steps"] if s["auc"] is not None]
    if not rows:
        return "No logged step had both rule-right and rule-wrong reasoning completions."
    lines = ["| step | RM score, rule-right | RM score, rule-wrong | AUC (RM ranks right above wrong) | n right / wrong |",
             "|---|---|---|---|---|"]
    lines += [f"| {s['step']} | {s['rm_right']:.3f} | {s['rm_wrong']:.3f} | {s['auc']:.3f} | "
              f"{s['n_right']} / {s['n_wrong']} |" for s in rows]
    return "\n".join(lines)


__all__ = ["build_rewards", "general_scores", "rm_vs_rule", "rm_vs_rule_table", "run", "scenario_rows"]
