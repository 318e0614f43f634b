"""Preference pairs (prompt, chosen, rejected) for the stage-4 reward model.

The chosen response is always the correct, well-formatted, single-language response. The rejected
one differs in exactly one way (the `kind` column), so the reward model learns each preference:
- `wrong_answer`: the same reasoning with another problem's answer in `<answer>`;
- `malformed`: the tags are broken (no `<think>` block, answer outside the tags, or no `<answer>`);
- `mixed_language`: the reasoning switches language part of the way through;
- `wrong_language`: (non-reasoning prompts) the reply is in the other language.
"""

from __future__ import annotations

import random

from data.problem import Problem
from data.traces import r1_response, reasoning_text, write_response
from rlpipe.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

KINDS = ("wrong_answer", "malformed", "mixed_language")


def _answer_text(p: Problem) -> str:
    return p.answer if p.answer_text is None else p.answer_text


def _malformed(p: Problem, language: str, rng: random.Random) -> str:
    reasoning, answer = reasoning_text(p.steps, language), _answer_text(p)
    variant = rng.randrange(3)
    if variant == 0:  # no think block at all
        return f"{reasoning}\n{ANSWER_OPEN}{answer}{ANSWER_CLOSE}"
    if variant == 1:  # answer left outside the tags
        return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE} {answer}"
    return f"{THINK_OPEN}\n{reasoning}\n{answer}"  # never closed, no answer tag


def pair(p: Problem, other: Problem, language: str, kind: str, rng: random.Random) -> dict | None:
    """One preference row for problem `p`; `other` supplies a wrong answer of the same task.
    Returns None when `kind` cannot be made for `p` (e.g. no wordy step to mix, equal answers)."""
    chosen, _ = write_response(p.steps, _answer_text(p), language, mixed=False, rng=rng)
    if kind == "wrong_answer":
        if other.answer == p.answer:
            return None
        rejected = r1_response(reasoning_text(p.steps, language), _answer_text(other))
    elif kind == "malformed":
        rejected = _malformed(p, language, rng)
    elif kind == "mixed_language":
        rejected, mixed = write_response(p.steps, _answer_text(p), language, mixed=True, rng=rng)
        if not mixed:
            return None
    else:
        raise ValueError(f"unknown preference kind {kind!r}; choose one of {KINDS}")
    return {"prompt": p.prompt[language], "chosen": chosen, "rejected": rejected, "task": p.task,
            "language": language, "kind": kind}


def chat_pair(p: Problem, other: Problem, language: str, wrong_language_answer: str | None,
              rng: random.Random) -> dict | None:
    """A preference row for a non-reasoning prompt: the correct reply against a wrong reply
    (another prompt's answer) or, when the reply depends on the language, the other language's reply."""
    reasoning = reasoning_text(p.steps, language)
    chosen = r1_response(reasoning, p.answer)
    if wrong_language_answer is not None and rng.random() < 0.5:
        rejected, kind = r1_response(reasoning, wrong_language_answer), "wrong_language"
    elif other.answer != p.answer:
        rejected, kind = r1_response(reasoning, other.answer), "wrong_answer"
    else:
        return None
    return {"prompt": p.prompt[language], "chosen": chosen, "rejected": rejected, "task": p.task,
            "language": language, "kind": kind}
