"""Rule-based rewards for R1/Kimi-style RL, and the registry that names and combines them.

Every reward is a plain function `f(prompts, completions, **dataset_columns) -> list[float | None]`
(TRL's signature; completions are strings or chat-message lists; None = not applicable to that
sample), so they plug into this pipeline's trainer and into other trainers.

- `REGISTRY`: name -> reward function. Entries are `"module:function"` strings resolved on first
  use, so importing `rewards` does not import the math checker (sympy) or the code sandbox.
- `get(name, **options)`: the function, with options (e.g. `max_length=` for `overlong`) bound.
- `combine({name: weight}, options=None)`: one reward function returning the weighted sum per sample.
  A term that returns None for a sample is skipped for that sample (weights are NOT renormalised:
  a format term still counts fully on a row where accuracy does not apply); a sample where every
  term is None gets None. The per-term values of the last call are in `.last_breakdown`;
  `.with_breakdown(...)` returns (totals, breakdown) without shared state.
  Terms that need correctness (`kimi_length`) get a `correct` column derived from the correctness
  terms (task_accuracy, code, countdown, accuracy; most specific first) of the same combination
  unless the caller passes `correct`.
- `task_accuracy_reward` ("task_accuracy"): per row, the grader its columns call for (code tests,
  countdown numbers, else the math answer); the correctness reward for mixed-task batches.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Mapping
from typing import Any, Callable, Iterator, Sequence

RewardFn = Callable[..., list]

_ENTRIES: dict[str, str] = {
    "task_accuracy": "rewards:task_accuracy_reward",
    "accuracy": "rewards.math:accuracy_reward",
    "code": "rewards.code:code_reward",
    "countdown": "rewards.countdown:countdown_reward",
    "format": "rewards.format:format_reward",
    "format_prefilled": "rewards.format:format_prefilled_reward",
    "tag_count": "rewards.format:tag_count_reward",
    "tag_count_prefilled": "rewards.format:tag_count_prefilled_reward",
    "language": "rewards.language:language_reward",
    "kimi_length": "rewards.length:kimi_length_reward",
    "overlong": "rewards.length:overlong_reward",
    "repetition": "rewards.length:repetition_reward",
}

# Rewards that say whether a sample is right; their values feed `correct` for length shaping.
# Most specific first: a countdown or code row may also carry an `answer` column, and the math
# checker would accept a bare "60" for a countdown row that the countdown rule rejects.
CORRECTNESS_REWARDS = ("task_accuracy", "code", "countdown", "accuracy")
# Rewards that need a per-sample `correct` column.
NEEDS_CORRECTNESS = ("kimi_length",)


class _LazyRegistry(Mapping):
    """name -> reward function; imports the defining module on first lookup of a name."""

    def __init__(self, entries: dict[str, str]):
        self._entries = entries
        self._resolved: dict[str, RewardFn] = {}

    def __getitem__(self, name: str) -> RewardFn:
        if name not in self._entries:
            raise KeyError(
                f"unknown reward {name!r}; known rewards: {', '.join(sorted(self._entries))}"
            )
        if name not in self._resolved:
            module, attr = self._entries[name].split(":")
            self._resolved[name] = getattr(importlib.import_module(module), attr)
        return self._resolved[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def target(self, name: str) -> str:
        """The `module:function` a name resolves to, without importing it."""
        return self._entries[name]


REGISTRY = _LazyRegistry(_ENTRIES)


def get(name: str, **options: Any) -> RewardFn:
    """The reward function registered as `name`, with `options` bound as keyword arguments."""
    fn = REGISTRY[name]
    if not options:
        return fn
    bound = functools.partial(fn, **options)
    bound.__name__ = f"{name}_reward"  # type: ignore[attr-defined]  # trainers log by __name__
    return bound


class CombinedReward:
    """A weighted sum of registered rewards, itself a reward function (see the module docstring)."""

    def __init__(self, weights: Mapping[str, float], options: Mapping[str, Mapping[str, Any]] | None = None):
        options = dict(options or {})
        unknown = sorted(set(weights) - set(REGISTRY)) + sorted(set(options) - set(weights))
        if unknown:
            raise ValueError(
                f"rewards.combine: unknown or unweighted reward name(s) {unknown}; "
                f"known rewards: {', '.join(sorted(REGISTRY))}"
            )
        if not weights:
            raise ValueError("rewards.combine: no rewards given; pass {name: weight}")
        self.weights = {name: float(w) for name, w in weights.items()}
        self.options = {name: dict(options.get(name, {})) for name in self.weights}
        # Correctness terms first so their values can feed the terms that need them.
        self.names = sorted(self.weights, key=lambda n: (n not in CORRECTNESS_REWARDS, list(self.weights).index(n)))
        self.last_breakdown: dict[str, list[float | None]] = {}
        self.__name__ = "combined(" + ",".join(f"{n}={w:g}" for n, w in self.weights.items()) + ")"

    def with_breakdown(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> tuple[list[float | None], dict[str, list[float | None]]]:
        """(weighted totals, {name: that term's raw values}) for one batch."""
        breakdown: dict[str, list[float | None]] = {}
        for name in self.names:
            kwargs = dict(columns)
            if name in NEEDS_CORRECTNESS and "correct" not in kwargs:
                kwargs["correct"] = self._correctness(breakdown, len(completions), name)
            kwargs.update(self.options[name])
            values = list(REGISTRY[name](prompts, completions, **kwargs))
            if len(values) != len(completions):
                raise ValueError(
                    f"reward {name!r} returned {len(values)} values for {len(completions)} completions"
                )
            breakdown[name] = values
        totals: list[float | None] = []
        for i in range(len(completions)):
            terms = [(self.weights[n], breakdown[n][i]) for n in self.names if breakdown[n][i] is not None]
            totals.append(sum(w * float(v) for w, v in terms) if terms else None)
        return totals, {name: breakdown[name] for name in self.weights}

    def _correctness(self, breakdown: dict[str, list], n: int, name: str) -> list[float | None]:
        sources = [c for c in CORRECTNESS_REWARDS if c in breakdown]
        if not sources:
            raise ValueError(
                f"rewards.combine: {name!r} needs per-sample correctness; add a correctness reward "
                f"({', '.join(CORRECTNESS_REWARDS)}) to the combination or pass a `correct` column"
            )
        # A sample's correctness is its most specific applicable correctness reward.
        return [next((breakdown[c][i] for c in sources if breakdown[c][i] is not None), None) for i in range(n)]

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        totals, self.last_breakdown = self.with_breakdown(prompts, completions, **columns)
        return totals


def _task_of(row: int, columns: Mapping[str, Any]) -> str:
    def cell(name: str) -> Any:
        col = columns.get(name)
        return col[row] if isinstance(col, (list, tuple)) else None

    if cell("tests"):
        return "code"
    if cell("numbers"):
        return "countdown"
    return "accuracy"


def task_accuracy_reward(prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list:
    """Correctness by the grader each row's columns call for: `tests` -> code (sandboxed tests),
    `numbers` -> countdown, otherwise the math checker against `answer`. None where that grader
    does not apply. The reward for mixed-task batches: summing `accuracy` and `countdown` instead
    would also pay the math checker's verdict on countdown rows (a bare "60" matches the target
    while breaking the countdown rule)."""
    n = len(completions)
    rows: dict[str, list[int]] = {}
    for i in range(n):
        rows.setdefault(_task_of(i, columns), []).append(i)
    out: list = [None] * n
    for name, idx in rows.items():
        sub = {
            key: [col[i] for i in idx] if isinstance(col, (list, tuple)) and len(col) == n else col
            for key, col in columns.items()
        }
        if name == "accuracy" and "answer" not in sub:
            continue  # no gold answer at all: not applicable
        values = REGISTRY[name]([prompts[i] for i in idx], [completions[i] for i in idx], **sub)
        for i, value in zip(idx, values):
            out[i] = value
    return out


def combine(
    weights: Mapping[str, float], options: Mapping[str, Mapping[str, Any]] | None = None
) -> CombinedReward:
    """One reward function: the weighted sum of the named rewards (see the module docstring).

    `options` gives keyword arguments per name, e.g. `{"overlong": {"max_length": 1024,
    "cache_length": 256}, "repetition": {"ngram_size": 4}}`.
    """
    return CombinedReward(weights, options)


__all__ = ["REGISTRY", "CORRECTNESS_REWARDS", "CombinedReward", "combine", "get", "task_accuracy_reward"]
