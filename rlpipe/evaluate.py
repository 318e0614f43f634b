"""Held-out evaluation of a checkpoint: the one `eval.json` shape every stage writes.

- Greedy accuracy per task and difficulty, pass@k (unbiased estimator of Chen et al. 2021 over
  `n_samples >= k` samples at `temperature`) and maj@n (majority vote: the most frequent final
  answer among the n samples, whitespace-normalised, is graded; no answer does not vote).
- Format compliance (`rewards.format`), R1 language consistency and the language-mixing rate
  (`rewards.language`), mean response length in tokens, and the slip rate: the share of greedy
  responses that state a wrong arithmetic result on the way (`rewards.steps`), right answer or not.
- Correctness is decided by the project's rule-based graders, chosen per row from its columns:
  rows with `tests` go to the code sandbox, rows with `numbers` to the countdown checker, the rest
  to the math checker against `answer`. The same graders give the RL rewards, so a stage's
  evaluation and its training signal never disagree.
- Generation goes through the rollout interface (`rlpipe.rollout`): vLLM, or with `backend: local`
  the model's own latent-cache sampler.

`eval.json`:
    {"checkpoint": str,
     "overall": {"accuracy", "pass_at_k", "k", "maj_at_n", "n_samples", "format_rate", "language_consistency",
                 "mixing_rate", "mean_length", "mixed_groups", "pass_at_k_curve", "slip_rate", "n"},
     "by_task": {task: {difficulty: {"accuracy": float, "pass_at_k": float, "maj_at_n": float,
                                     "mixed_groups": float, "n": int}}}}
(`mixing_rate` is language mixing; `mixed_groups` the share of prompts with mixed sampled outcomes;
`pass_at_k_curve` is {"1": pass@1, "2": pass@2, "4": ..., str(n_samples): pass@n} over all prompts.)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

from rlpipe.errors import StageInputError


@dataclass
class EvalConfig:
    k: int = 4                    # pass@k
    n_samples: int = 4            # samples per prompt for pass@k (>= k)
    temperature: float = 1.0      # sampling temperature for the pass@k samples
    top_p: float = 1.0
    max_new_tokens: int = 320
    limit: int = 0                # evaluate only the first N rows (0 = all)
    backend: str = "vllm"         # vllm | local
    seed: int = 0
    split: str = "eval"           # the folder under the data dir
    enabled: bool = True          # the stage evaluates when it ends (false: skip, e.g. in benchmarks)

    def __post_init__(self) -> None:
        if self.backend not in ("vllm", "local"):
            raise ValueError(f"eval.backend={self.backend!r}: valid choices are 'vllm', 'local'")
        if self.k < 1 or self.n_samples < self.k:
            raise ValueError(f"eval.k={self.k}, eval.n_samples={self.n_samples}: need 1 <= k <= n_samples")

    @classmethod
    def coerce(cls, cfg: "EvalConfig | Mapping[str, Any] | Any | None") -> "EvalConfig":
        """Accept an EvalConfig, a mapping, or any object with the same attribute names."""
        if cfg is None:
            return cls()
        if isinstance(cfg, cls):
            return cfg
        names = [f.name for f in fields(cls)]
        if isinstance(cfg, Mapping):
            return cls(**{k: v for k, v in cfg.items() if k in names})
        return cls(**{k: getattr(cfg, k) for k in names if hasattr(cfg, k)})


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n-c, k) / C(n, k)."""
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


def pass_at_k_curve(n_correct: Sequence[int], n_samples: int) -> dict[str, float]:
    """Mean pass@k over prompts for k = 1, 2, 4, ... and n_samples (keys are k as strings, for JSON).

    Compared between a checkpoint and the one RL started from, the curve tells sharpening from reach
    (Yue et al. 2025, "Does RL really incentivize reasoning capacity beyond the base model?"): a gain
    only at small k means RL moved probability onto answers the start could already sample, and the
    start's pass@n is then about the most such RL can give greedy decoding; a gain at large k means
    it solves prompts the start never did within n samples."""
    ks = sorted({2 ** i for i in range(n_samples.bit_length())} | {n_samples})  # powers of 2 up to n, and n
    n = max(len(n_correct), 1)
    return {str(k): sum(pass_at_k(n_samples, c, k) for c in n_correct) / n for k in ks}


def grade(rows: Sequence[Mapping[str, Any]], completions: Sequence[str]) -> list[bool]:
    """Correctness of completions[i] for rows[i], by the grader that row's columns call for
    (`rewards.task_accuracy_reward`: code tests, countdown rule, or math answer)."""
    from rewards import TASK_ACCURACY_COLUMNS, task_accuracy_reward

    columns = {key: [row.get(key) for row in rows] for key in TASK_ACCURACY_COLUMNS}
    columns["entry_point"] = [e or None for e in columns["entry_point"]]
    scores = task_accuracy_reward([r["prompt"] for r in rows], list(completions), **columns)
    # Code scores are passed/total: only a full pass counts as solved.
    return [s is not None and s >= 1.0 - 1e-9 for s in scores]


def majority_correct(texts: Sequence[str], correct: Sequence[bool]) -> bool:
    """maj@n of one prompt: is the most frequent final answer among its samples right? Answers are
    the `<answer>` text, whitespace-normalised; a sample without one does not vote; a tie goes to
    the answer seen first."""
    from rewards.format import answer_text

    votes: dict[str, list[int]] = {}
    for i, text in enumerate(texts):
        answer = answer_text(text)
        if answer is not None and answer.strip():
            votes.setdefault(" ".join(answer.split()), []).append(i)
    if not votes:
        return False
    winner = max(votes.values(), key=len)  # max keeps the first of equal counts (insertion order)
    return bool(correct[winner[0]])


def per_cell(rows: Sequence[Mapping[str, Any]], correct: Sequence[bool], n_correct: Sequence[int],
             n_samples: int, k: int, majority: Sequence[bool] | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """{task: {difficulty: {"accuracy", "pass_at_k", "maj_at_n", "mixed_groups", "n"}}} from the greedy
    verdicts, the number of correct samples (of `n_samples`) and the majority-vote verdict per row.
    A cell at 0 greedy can still hold the groups GRPO learns from: `mixed_groups` is the share of
    prompts whose samples were neither all right nor all wrong (a group of `n_samples` rollouts
    with a non-zero advantage)."""
    majority = majority if majority is not None else [False] * len(rows)
    counts: dict[str, dict[str, dict[str, float]]] = {}
    for row, ok, c, maj in zip(rows, correct, n_correct, majority, strict=True):
        cell = counts.setdefault(row["task"], {}).setdefault(str(row["difficulty"]),
                                                             {"correct": 0, "pass": 0.0, "maj": 0, "mixed": 0,
                                                              "n": 0})
        cell["correct"] += int(ok)
        cell["pass"] += pass_at_k(n_samples, c, k)
        cell["maj"] += int(maj)
        cell["mixed"] += int(0 < c < n_samples)
        cell["n"] += 1
    return {task: {d: {"accuracy": c["correct"] / c["n"], "pass_at_k": c["pass"] / c["n"],
                       "maj_at_n": c["maj"] / c["n"], "mixed_groups": c["mixed"] / c["n"], "n": c["n"]}
                   for d, c in sorted(levels.items(), key=lambda kv: int(kv[0]))}
            for task, levels in sorted(counts.items())}


def _generate(model_dir: str, prompt_ids: list[list[int]], cfg: EvalConfig, *, n: int,
              temperature: float) -> tuple[list[list[str]], list[list[int]]]:
    """n completions per prompt through the rollout interface -> (texts [P][n], token lengths [P][n])."""
    from rlpipe.rollout import Sampling

    rollouts = engine_for(model_dir, cfg.backend, cfg.seed).generate(
        prompt_ids, n, Sampling(temperature=temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens))
    lengths = rollouts.lengths
    return rollouts.texts_by_prompt(), [[lengths[k] for k in g] for g in rollouts.groups()]


_ENGINES: dict[tuple[str, str], Any] = {}


def engine_for(model_dir: str, backend: str, seed: int = 0):
    """One rollout engine per checkpoint and backend per process: vLLM start-up (~20 s on CPU)
    dominates small evaluations."""
    key = (backend, str(model_dir))
    if key not in _ENGINES:
        from rlpipe.rollout import make_engine

        _ENGINES[key] = make_engine(backend, model_dir, seed=seed)
    return _ENGINES[key]


def close_engines() -> None:
    """Shut down cached engines (before a process group is destroyed, or to free memory)."""
    for engine in _ENGINES.values():
        engine.close()
    _ENGINES.clear()


def evaluate_checkpoint(model_dir: str | os.PathLike, data_dir: str | os.PathLike,
                        out_path: str | os.PathLike | None = None,
                        cfg: "EvalConfig | Mapping[str, Any] | None" = None) -> dict:
    """Evaluate `model_dir` on `data_dir/<cfg.split>`; write `out_path` (eval.json) if given."""
    import datasets

    from rewards.format import format_reward
    from rewards.language import is_language_mixed, language_reward
    from rewards.steps import arithmetic_slips
    from rlpipe.tokenizer import load_tokenizer, prompt_ids

    cfg = EvalConfig.coerce(cfg)
    model_dir, data_dir = str(model_dir), str(data_dir)
    split_dir = Path(data_dir) / cfg.split
    if not split_dir.exists():
        raise StageInputError(f"{split_dir}: no evaluation split; build it with "
                                f"`rlpipe data build --out {data_dir}` (or `make stage-0`)")
    if not (Path(model_dir) / "config.json").exists():
        raise StageInputError(f"{model_dir}/config.json: not a checkpoint folder")
    rows = datasets.load_from_disk(str(split_dir))
    if cfg.limit:
        rows = rows.select(range(min(cfg.limit, len(rows))))
    rows = [dict(r) for r in rows]
    tokenizer = load_tokenizer(model_dir)
    ids = prompt_ids(tokenizer, [r["prompt"] for r in rows])

    t0 = time.perf_counter()
    greedy_texts, greedy_lengths = _generate(model_dir, ids, cfg, n=1, temperature=0.0)
    greedy = [t[0] for t in greedy_texts]
    correct = grade(rows, greedy)
    sample_texts, _ = _generate(model_dir, ids, cfg, n=cfg.n_samples, temperature=cfg.temperature)
    flat_rows = [r for r in rows for _ in range(cfg.n_samples)]
    flat_correct = grade(flat_rows, [t for per in sample_texts for t in per])
    n_correct = [sum(flat_correct[i * cfg.n_samples:(i + 1) * cfg.n_samples]) for i in range(len(rows))]
    majority = [majority_correct(sample_texts[i], flat_correct[i * cfg.n_samples:(i + 1) * cfg.n_samples])
                for i in range(len(rows))]

    prompts = [r["prompt"] for r in rows]
    languages = [r.get("language") for r in rows]
    formats = format_reward(prompts, greedy)
    consistency = [c for c in language_reward(prompts, greedy, language=languages) if c is not None]
    mixed = [is_language_mixed(text, lang) for text, lang in zip(greedy, languages)]

    by_task = per_cell(rows, correct, n_correct, cfg.n_samples, cfg.k, majority)
    n = len(rows)
    result = {
        "checkpoint": model_dir,
        "overall": {
            "accuracy": sum(correct) / max(n, 1),
            "pass_at_k": sum(pass_at_k(cfg.n_samples, c, cfg.k) for c in n_correct) / max(n, 1),
            "k": cfg.k,
            "maj_at_n": sum(majority) / max(n, 1),
            "n_samples": cfg.n_samples,
            "format_rate": sum(1 for f in formats if f == 1.0) / max(n, 1),
            "language_consistency": sum(consistency) / len(consistency) if consistency else 0.0,
            "mixing_rate": sum(mixed) / max(n, 1),
            "mean_length": sum(l[0] for l in greedy_lengths) / max(n, 1),
            "mixed_groups": sum(0 < c < cfg.n_samples for c in n_correct) / max(n, 1),
            "pass_at_k_curve": pass_at_k_curve(n_correct, cfg.n_samples),
            "slip_rate": sum(bool(arithmetic_slips(text)) for text in greedy) / max(n, 1),
            "n": n,
        },
        "by_task": by_task,
        "config": asdict(cfg),
        "seconds": round(time.perf_counter() - t0, 1),
        "samples": [{"prompt": r["prompt"], "answer": r["answer"], "completion": g, "correct": ok}
                    for r, g, ok in list(zip(rows, greedy, correct))[:20]],
    }
    if out_path is not None:
        Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(str(out_path) + ".tmp")
        tmp.write_text(json.dumps(result, indent=2, ensure_ascii=False))
        tmp.replace(out_path)
    return result


def solution_loss(model, tokenizer, rows: Sequence[Mapping[str, Any]]) -> dict:
    """Held-out next-token loss of each row's reference `solution` given its prompt, in nats per
    solution token (EOS included), overall and per task: how well a base model has learned the tasks
    before anything is sampled. Stage 0 reports it on the eval split; README "Stage 0" relates it to
    the stage-1 accuracy the base later reaches.

    {"loss": float, "by_task": {task: float}, "tokens": int, "n": int}"""
    import torch

    from rlpipe.tokenizer import prompt_ids

    prompts = prompt_ids(tokenizer, [r["prompt"] for r in rows])
    solutions = tokenizer([r["solution"] + tokenizer.eos_token for r in rows], add_special_tokens=False)["input_ids"]
    nats: dict[str, float] = {}
    tokens: dict[str, int] = {}
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for p, s, row in zip(prompts, solutions, rows):
            # token_logprobs[:, t] scores token t + 1: the solution starts at position len(p).
            logp = model.token_logprobs(torch.tensor([p + s]))[0, len(p) - 1:]
            task = row.get("task") or "?"
            nats[task] = nats.get(task, 0.0) - logp.double().sum().item()
            tokens[task] = tokens.get(task, 0) + len(s)
    model.train(was_training)
    total = sum(tokens.values())
    return {"loss": sum(nats.values()) / max(total, 1), "by_task": {t: nats[t] / tokens[t] for t in sorted(nats)},
            "tokens": total, "n": len(rows)}


def markdown_table(result: Mapping[str, Any]) -> str:
    """The report.md table: overall figures, then greedy accuracy / pass@k per task x difficulty."""
    o = result["overall"]
    maj = f"{o['maj_at_n']:.3f}" if "maj_at_n" in o else "-"
    slips = f"{o['slip_rate']:.3f}" if "slip_rate" in o else "-"  # eval.json files written before it existed
    lines = [
        f"| accuracy | pass@{o['k']} | maj@{o.get('n_samples', 'n')} | format | lang. consistency | mixing | "
        f"mean length | arithmetic slips | n |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {o['accuracy']:.3f} | {o['pass_at_k']:.3f} | {maj} | {o['format_rate']:.3f} | "
        f"{o['language_consistency']:.3f} | {o['mixing_rate']:.3f} | {o['mean_length']:.1f} | {slips} | {o['n']} |",
        "",
    ]
    if o.get("pass_at_k_curve"):
        lines += [f"pass@k over {o.get('n_samples', 'n')} samples a prompt: "
                  + ", ".join(f"pass@{k} {v:.3f}" for k, v in o["pass_at_k_curve"].items()), ""]
    levels = sorted({d for t in result["by_task"].values() for d in t}, key=int)
    lines.append(f"Greedy accuracy / pass@{o['k']} / mixed groups (prompts whose "
                 f"{result.get('config', {}).get('n_samples', 'n')} samples were neither all right nor all wrong) "
                 f"per task and level:")
    lines.append("")
    lines.append("| task | " + " | ".join(f"level {d}" for d in levels) + " |")
    lines.append("|---|" + "---|" * len(levels))

    def cell(c: Mapping[str, Any]) -> str:
        mixed = f" / {c['mixed_groups']:.2f}" if "mixed_groups" in c else ""
        return f"{c['accuracy']:.2f} / {c['pass_at_k']:.2f}{mixed} (n={c['n']})"

    for task, cells in result["by_task"].items():
        row = [cell(cells[d]) if d in cells else "-" for d in levels]
        lines.append(f"| {task} | " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlpipe eval", description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="checkpoint folder (HF format + tokenizer)")
    parser.add_argument("--data", required=True, help="data folder written by `rlpipe data build`")
    parser.add_argument("--out", required=True, help="where to write eval.json")
    for f in fields(EvalConfig):
        parser.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    args = parser.parse_args(argv)
    cfg = EvalConfig(**{f.name: getattr(args, f.name) for f in fields(EvalConfig)})
    try:
        result = evaluate_checkpoint(args.model, args.data, args.out, cfg)
    finally:
        close_engines()
    print(markdown_table(result))
    print(f"wrote {args.out}")
    return 0
