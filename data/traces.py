"""R1-format chain-of-thought writer, English and Chinese, with controlled language mixing.

- A trace is a list of `Step`s; each step carries the same reasoning line in English and in Chinese
  (lines that are pure arithmetic are the same in both).
- `write_response` renders the steps in the prompt's language as the R1 response
  `<think>\\n...\\n</think> <answer>...</answer>` (the trainer appends `<|eos|>`).
- Language mixing (the defect DeepSeek-R1 reports in R1-Zero and removes with a language-consistency
  reward): a mixed trace writes about a third of its wordy steps in the other language. The builder
  decides which rows are mixed, at a configured rate, so later stages have mixing to remove.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from rlpipe.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

LANGUAGES = ("en", "zh")


@dataclass(frozen=True)
class Step:
    """One line of reasoning in both languages."""

    en: str
    zh: str

    def text(self, language: str) -> str:
        return self.en if language == "en" else self.zh


def math_step(line: str) -> Step:
    """A step with no words (e.g. `3 + 5 = 8.`): identical in both languages."""
    return Step(line, line)


def other_language(language: str) -> str:
    return "zh" if language == "en" else "en"


def mixed_step_indices(steps: list[Step], rng: random.Random) -> set[int]:
    """Pick the steps a mixed trace writes in the other language: about a third of the steps whose
    two versions differ (at least one, never all of them, so the trace stays mostly in its language
    when it has more than one wordy step)."""
    wordy = [i for i, s in enumerate(steps) if s.en != s.zh]
    if not wordy:
        return set()
    n = max(1, round(len(wordy) / 3))
    if len(wordy) > 1:
        n = min(n, len(wordy) - 1)
    return set(rng.sample(wordy, n))


def reasoning_text(steps: list[Step], language: str, switched: set[int] = frozenset()) -> str:
    """The reasoning lines, each in `language` except the `switched` ones."""
    lines = []
    for i, s in enumerate(steps):
        lines.append(s.text(other_language(language) if i in switched else language))
    return "\n".join(lines)


def r1_response(reasoning: str, answer_text: str) -> str:
    """`<think>\\nreasoning\\n</think> <answer>answer</answer>` -- the R1 response format."""
    think = f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}" if reasoning else f"{THINK_OPEN}\n{THINK_CLOSE}"
    return f"{think} {ANSWER_OPEN}{answer_text}{ANSWER_CLOSE}"


def write_response(
    steps: list[Step], answer_text: str, language: str, mixed: bool, rng: random.Random
) -> tuple[str, bool]:
    """Render a full response; returns (response, actually_mixed). A trace with no wordy step
    cannot be mixed, so `actually_mixed` can be False even when `mixed` was asked for."""
    switched = mixed_step_indices(steps, rng) if mixed else set()
    return r1_response(reasoning_text(steps, language, switched), answer_text), bool(switched)
