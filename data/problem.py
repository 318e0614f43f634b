"""The task-row record every builder produces, and its `datasets` schema.

- `Problem`: one verifiable problem, language-independent at its core (`key`), with its prompt in
  English and Chinese, the reasoning steps, the reference answer, and the code-task test data.
- `make_row` turns a problem into a task row in one language (solution written, mixed or not).
- `TASK_FEATURES`: the column types of the task splits (sft, rl, eval); `target` is a nullable
  int64 (None for every task but countdown).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from data.traces import Step, write_response


@dataclass
class Problem:
    task: str
    difficulty: int
    key: str  # identity of the problem across languages and phrasings: splits hold out by key
    prompt: dict[str, str]  # language -> prompt text
    steps: list[Step]
    answer: str  # reference answer (the `answer` column)
    answer_text: str | None = None  # what the solution writes inside <answer>; defaults to `answer`
    tests: str = ""
    entry_point: str = ""
    numbers: list[int] = field(default_factory=list)
    target: int | None = None


def make_row(problem: Problem, language: str, mixed: bool, rng: random.Random, row_id: str) -> dict:
    answer_text = problem.answer if problem.answer_text is None else problem.answer_text
    solution, is_mixed = write_response(problem.steps, answer_text, language, mixed, rng)
    return {
        "id": row_id,
        "key": problem.key,
        "prompt": problem.prompt[language],
        "answer": problem.answer,
        "task": problem.task,
        "difficulty": problem.difficulty,
        "language": language,
        "tests": problem.tests,
        "entry_point": problem.entry_point,
        "numbers": list(problem.numbers),
        "target": problem.target,
        "solution": solution,
        "mixed_language": is_mixed,
    }


def task_features():
    from datasets import Features, Sequence, Value

    return Features(
        {
            "id": Value("string"),
            "key": Value("string"),
            "prompt": Value("string"),
            "answer": Value("string"),
            "task": Value("string"),
            "difficulty": Value("int64"),
            "language": Value("string"),
            "tests": Value("string"),
            "entry_point": Value("string"),
            "numbers": Sequence(Value("int64")),
            "target": Value("int64"),
            "solution": Value("string"),
            "mixed_language": Value("bool"),
        }
    )
