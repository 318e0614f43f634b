"""Rejection sampling (DeepSeek-R1 stage 3): keep only the RL model's verified, readable traces.

R1 samples its RL checkpoint on the reasoning prompts, keeps the completions a rule says are
right, filters out "chain-of-thought with mixed languages, long paragraphs, and code blocks", and
fine-tunes on what is left plus non-reasoning data. Here, per sampled completion, in this order
(the funnel counts every stage, per task and level):

1. `correct`: the row's grader (`rlpipe.evaluate.grade`: code tests, countdown rule or math
   answer: the one grader RL rewards and evaluation use) gives full marks;
2. `well_formed`: `<think>…</think> <answer>…</answer>` exactly (`rewards.format`);
3. `clean`: not language-mixed (`rewards.language.is_language_mixed` at the row's language), not
   repetitive (word 3-gram repetition penalty above `max_repetition`), not cut at the token limit
   and not longer than `max_length` tokens;
4. `kept`: exact duplicates removed, then at most `keep_per_prompt` per prompt, chosen to differ
   from each other (greedy farthest point on word-set Jaccard distance, starting from the shortest:
   readable first, then the most different way of solving it).

`select(rows, rollouts, cfg)` returns the verdict of every sample; `funnel(...)` the counts;
`rejection_rows(...)` the SFT rows with provenance columns (source checkpoint, each check's
value, length, sample index). `nonreasoning_rows(...)` draws the non-reasoning share.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

STAGES = ("sampled", "correct", "well_formed", "clean", "kept")
_WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class RejectionConfig:
    """The `rejection:` section of stage 3."""

    split: str = "rl"  # prompts sampled (the RL prompts, as R1 does)
    max_prompts: int = 0  # sample only the first N prompts of the split, in a seeded order (0 = all)
    n_samples: int = 4  # completions per prompt
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    keep_per_prompt: int = 2  # at most this many kept completions per prompt
    max_repetition: float = 0.25  # drop when more than this share of word 3-grams repeat
    max_length: int = 0  # drop completions longer than this many tokens (0 = only cut ones are dropped)
    nonreasoning_share: float = 0.2  # share of the SFT set drawn from the non-reasoning split
    nonreasoning_split: str = "nonreasoning"
    backend: str = "vllm"  # vllm | local
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_samples < 1 or self.keep_per_prompt < 1:
            raise ValueError(f"rejection.n_samples={self.n_samples}, rejection.keep_per_prompt="
                             f"{self.keep_per_prompt}: both must be >= 1")
        if not 0.0 <= self.nonreasoning_share < 1.0:
            raise ValueError(f"rejection.nonreasoning_share={self.nonreasoning_share}: must be in [0, 1)")
        if not 0.0 <= self.max_repetition <= 1.0:
            raise ValueError(f"rejection.max_repetition={self.max_repetition}: a share of repeated 3-grams, "
                             f"in [0, 1]")
        if self.backend not in ("vllm", "local"):
            raise ValueError(f"rejection.backend={self.backend!r}: valid choices are 'vllm', 'local'")


@dataclass
class Verdict:
    """What the filter decided about one sample (`stage`: the last check it passed)."""

    row: int  # index into the prompt rows
    sample: int  # index of the sample within its prompt's group
    text: str
    length: int  # completion tokens, EOS not counted
    correct: bool
    format: float
    language: float | None  # R1 language consistency of the CoT (None: no countable words)
    mixed: bool
    repetition: float  # share of repeated word 3-grams, 0 = none
    truncated: bool
    stage: str = "sampled"  # sampled | correct | well_formed | clean | kept
    reason: str = ""  # why it was dropped ("" when kept)


def repetition_share(text: str) -> float:
    """Share of repeated word 3-grams (0 none, -> 1 a loop): the `rewards.length` penalty, sign flipped."""
    from rewards.length import repetition_penalty

    return -repetition_penalty(text, ngram_size=3, max_penalty=-1.0)


def judge(rows: Sequence[Mapping[str, Any]], texts: Sequence[str], lengths: Sequence[int],
          truncated: Sequence[bool], cfg: RejectionConfig) -> list[Verdict]:
    """Checks 1-3 for flat samples (rows[i] is sample i's prompt row). Sample indices are set by the caller."""
    from rewards.format import format_reward
    from rewards.language import is_language_mixed, language_reward
    from rlpipe.evaluate import grade

    prompts = [r["prompt"] for r in rows]
    languages = [r.get("language") for r in rows]
    correct = grade(rows, texts)
    formats = format_reward(prompts, list(texts))
    consistency = language_reward(prompts, list(texts), language=languages)
    verdicts = []
    for i, text in enumerate(texts):
        v = Verdict(row=-1, sample=-1, text=text, length=int(lengths[i]), correct=bool(correct[i]),
                    format=float(formats[i] or 0.0), language=consistency[i],
                    mixed=is_language_mixed(text, languages[i] or None), repetition=repetition_share(text),
                    truncated=bool(truncated[i]))
        if not v.correct:
            v.reason = "wrong"
        else:
            v.stage = "correct"
            if v.format < 1.0:
                v.reason = "malformed"
            else:
                v.stage = "well_formed"
                if v.mixed:
                    v.reason = "mixed_language"
                elif v.repetition > cfg.max_repetition:
                    v.reason = "repetitive"
                elif v.truncated or (cfg.max_length and v.length > cfg.max_length):
                    v.reason = "overlong"
                else:
                    v.stage = "clean"
        verdicts.append(v)
    return verdicts


def _words(text: str) -> frozenset[str]:
    return frozenset(w.lower() for w in _WORD.findall(text))


def diverse_subset(texts: Sequence[str], lengths: Sequence[int], k: int) -> list[int]:
    """Up to k indices: exact duplicates removed, the shortest first, then each next the one farthest
    (word-set Jaccard distance) from those already chosen; ties go to the shorter, then the earlier."""
    seen, unique = set(), []
    for i, t in enumerate(texts):
        if t.strip() not in seen:
            seen.add(t.strip())
            unique.append(i)
    if not unique:
        return []
    words = {i: _words(texts[i]) for i in unique}
    chosen = [min(unique, key=lambda i: (lengths[i], i))]
    while len(chosen) < min(k, len(unique)):
        def distance(i: int) -> float:
            return min(1.0 - len(words[i] & words[j]) / max(1, len(words[i] | words[j])) for j in chosen)

        rest = [i for i in unique if i not in chosen]
        chosen.append(max(rest, key=lambda i: (distance(i), -lengths[i], -i)))
    return chosen


def select(rows: Sequence[Mapping[str, Any]], texts_by_prompt: Sequence[Sequence[str]],
           lengths_by_prompt: Sequence[Sequence[int]], truncated_by_prompt: Sequence[Sequence[bool]],
           cfg: RejectionConfig) -> list[Verdict]:
    """The verdict of every sample (prompt-major), the kept ones marked `stage == "kept"`."""
    flat_rows = [rows[i] for i, group in enumerate(texts_by_prompt) for _ in group]
    flat = judge(flat_rows, [t for g in texts_by_prompt for t in g], [n for g in lengths_by_prompt for n in g],
                 [x for g in truncated_by_prompt for x in g], cfg)
    at = 0
    for i, group in enumerate(texts_by_prompt):
        verdicts = flat[at:at + len(group)]
        at += len(group)
        for j, v in enumerate(verdicts):
            v.row, v.sample = i, j
        clean = [j for j, v in enumerate(verdicts) if v.stage == "clean"]
        keep = set(clean[c] for c in diverse_subset([verdicts[j].text for j in clean],
                                                   [verdicts[j].length for j in clean], cfg.keep_per_prompt))
        for j in clean:
            if j in keep:
                verdicts[j].stage = "kept"
            else:
                verdicts[j].reason = "duplicate" if verdicts[j].text.strip() in {
                    verdicts[k].text.strip() for k in keep} else "over_per_prompt_cap"
    return flat


def funnel(rows: Sequence[Mapping[str, Any]], verdicts: Sequence[Verdict]) -> dict:
    """{"overall": {stage: count}, "by_cell": {"task/level": {stage: count}}, "dropped": {reason: count}}:
    a sample counts at every stage it reached."""
    order = {s: i for i, s in enumerate(STAGES)}
    overall: Counter = Counter()
    cells: dict[str, Counter] = {}
    for v in verdicts:
        row = rows[v.row]
        cell = cells.setdefault(f"{row.get('task')}/{row.get('difficulty')}", Counter())
        for stage in STAGES[:order[v.stage] + 1]:
            overall[stage] += 1
            cell[stage] += 1
    dropped = Counter(v.reason for v in verdicts if v.reason)
    return {"overall": {s: overall[s] for s in STAGES},
            "by_cell": {k: {s: c[s] for s in STAGES} for k, c in sorted(cells.items())},
            "dropped": dict(sorted(dropped.items())),
            "prompts_with_a_kept_sample": len({v.row for v in verdicts if v.stage == "kept"})}


def rejection_rows(rows: Sequence[Mapping[str, Any]], verdicts: Sequence[Verdict], source: str) -> list[dict]:
    """The kept samples as SFT rows: the prompt row's columns, `solution` = the completion, provenance."""
    out = []
    for v in verdicts:
        if v.stage != "kept":
            continue
        row = dict(rows[v.row])
        row.update(solution=v.text, source=source, origin="rejection_sampling", sample_index=v.sample,
                   length=v.length, reward_accuracy=float(v.correct), reward_format=v.format,
                   reward_language=v.language, repetition=v.repetition)
        out.append(row)
    return out


def nonreasoning_rows(rows: Sequence[Mapping[str, Any]], n_reasoning: int, share: float, seed: int,
                      source: str) -> list[dict]:
    """round(share / (1 - share) * n_reasoning) rows of the non-reasoning split (all of it at most),
    drawn in a seeded order, with the same provenance columns (the checks do not apply: None)."""
    want = min(len(rows), int(round(share / (1.0 - share) * n_reasoning))) if share > 0 else 0
    order = np.random.default_rng([seed, 3]).permutation(len(rows))[:want]
    out = []
    for i in sorted(order.tolist()):
        row = dict(rows[i])
        row.update(source=source, origin="nonreasoning", sample_index=-1, length=-1, reward_accuracy=None,
                   reward_format=None, reward_language=None, repetition=None)
        out.append(row)
    return out


def funnel_table(f: Mapping[str, Any]) -> str:
    """report.md table: the funnel overall and per task/level, then the drop reasons."""
    head = "| | " + " | ".join(STAGES) + " | kept / sampled |"
    lines = [head, "|---|" + "---|" * (len(STAGES) + 1)]

    def line(name: str, counts: Mapping[str, int]) -> str:
        share = counts["kept"] / max(1, counts["sampled"])
        return f"| {name} | " + " | ".join(str(counts[s]) for s in STAGES) + f" | {share:.2f} |"

    lines.append(line("all", f["overall"]))
    lines += [line(cell, counts) for cell, counts in f["by_cell"].items()]
    lines += ["", "Dropped: " + (", ".join(f"{reason} {n}" for reason, n in f["dropped"].items()) or "none")]
    return "\n".join(lines)


__all__ = ["RejectionConfig", "STAGES", "Verdict", "diverse_subset", "funnel", "funnel_table", "judge",
           "nonreasoning_rows", "rejection_rows", "repetition_share", "select"]
