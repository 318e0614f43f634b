"""Rule-based rewards for R1/Kimi-style RL, and the registry that names and combines them.

Every reward is a plain function `f(prompts, completions, **dataset_columns) -> list[float | None]`
(TRL's signature; completions are strings or chat-message lists; None = not applicable to that
sample), so they plug into this pipeline's trainer and into other trainers.

- `REGISTRY`: name -> reward function. Entries are `"module:function"` strings resolved on first
  use, so importing `rewards` does not import the math checker (sympy) or the code sandbox.
- `get(name, **options)`: the function, with options (e.g. `max_length=` for `overlong`) bound.
- `combine({name_or_fn: weight}, options=None)`: one reward function returning the weighted sum per
  sample. A key is a registry name or any reward function (a learned reward model, a custom
  rule), named in the breakdown and in `options` by its `__name__`.
  A term that returns None for a sample is skipped for that sample (weights are NOT renormalised:
  a format term still counts fully on a row where accuracy does not apply); a sample where every
  term is None gets None. The per-term values of the last call are in `.last_breakdown`;
  `.with_breakdown(...)` returns (totals, breakdown) without shared state.
  `rewards.parallel.ParallelReward` computes the same combination in worker threads, with a
  timeout per call and failing terms contained.
  Terms that need correctness (`kimi_length`) get a `correct` column derived from the correctness
  terms (task_accuracy, code, countdown, accuracy; most specific first) of the same combination
  unless the caller passes `correct`.
- `task_accuracy_reward` ("task_accuracy"): per row, the grader its columns call for (code tests,
  countdown numbers, else the math answer, in the form the row's `task` asks for), 1.0 or 0.0;
  the correctness reward for mixed-task batches, and evaluation's grader. `TASK_ACCURACY_COLUMNS`
  are the dataset columns it reads: a caller that builds the columns itself passes all of them.
- `rewards.steps` is not a sequence reward: it locates wrong arithmetic steps inside a completion,
  for the trainer's per-token slip penalty and evaluation's slip rate (a per-sample "right steps"
  score would pay for padding a trace with easy sums).
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

# The dataset columns task_accuracy reads (evaluation must pass them all, or it grades differently).
TASK_ACCURACY_COLUMNS = ("answer", "tests", "entry_point", "numbers", "target", "task")

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
    """A weighted sum of reward terms, itself a reward function (see the module docstring)."""

    def __init__(self, weights: Mapping[str | RewardFn, float],
                 options: Mapping[str, Mapping[str, Any]] | None = None):
        if not weights:
            raise ValueError("rewards.combine: no rewards given; pass {name: weight}")
        self.weights: dict[str, float] = {}
        self.callables: dict[str, RewardFn] = {}
        for key, weight in weights.items():
            name = key if isinstance(key, str) else _callable_name(key)
            if name in self.weights or (not isinstance(key, str) and name in REGISTRY):
                raise ValueError(
                    f"rewards.combine: more than one term named {name!r} (registered rewards count); "
                    "give the function another __name__"
                )
            if not isinstance(key, str):
                self.callables[name] = key
            self.weights[name] = float(weight)
        options = dict(options or {})
        unknown = sorted(set(self.weights) - set(REGISTRY) - set(self.callables)) + \
            sorted(set(options) - set(self.weights))
        if unknown:
            raise ValueError(
                f"rewards.combine: unknown or unweighted reward name(s) {unknown}; "
                f"known rewards: {', '.join(sorted(REGISTRY))}, or pass a reward function as a key"
            )
        self.options = {name: dict(options.get(name, {})) for name in self.weights}
        # Correctness terms first so their values can feed the terms that need them.
        order = list(self.weights)
        self.names = sorted(order, key=lambda n: (not self.is_correctness(n), order.index(n)))
        self.last_breakdown: dict[str, list[float | None]] = {}
        self.__name__ = "combined(" + ",".join(f"{n}={w:g}" for n, w in self.weights.items()) + ")"

    # A function term never shares a registry name, so these name-based rules never apply to one.
    def is_correctness(self, name: str) -> bool:
        return name in CORRECTNESS_REWARDS

    def needs_correctness(self, name: str) -> bool:
        return name in NEEDS_CORRECTNESS

    def call_term(self, name: str, prompts: Sequence[Any], completions: Sequence[Any],
                  columns: Mapping[str, Any], breakdown: Mapping[str, list]) -> list[float | None]:
        """One term's values for one batch; `breakdown` holds the correctness terms' values
        already computed for the same samples (fed to terms that need them)."""
        kwargs = dict(columns)
        if self.needs_correctness(name) and "correct" not in kwargs:
            kwargs["correct"] = self._correctness(breakdown, len(completions), name)
        kwargs.update(self.options[name])
        fn = self.callables[name] if name in self.callables else REGISTRY[name]
        values = list(fn(prompts, completions, **kwargs))
        if len(values) != len(completions):
            raise ValueError(
                f"reward {name!r} returned {len(values)} values for {len(completions)} completions"
            )
        return values

    def totals(self, breakdown: Mapping[str, list[float | None]], n: int) -> list[float | None]:
        """The weighted sum per sample over the terms that apply to it (None where none does)."""
        totals: list[float | None] = []
        for i in range(n):
            terms = [(self.weights[t], breakdown[t][i]) for t in self.names if breakdown[t][i] is not None]
            totals.append(sum(w * float(v) for w, v in terms) if terms else None)
        return totals

    def with_breakdown(
        self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any
    ) -> tuple[list[float | None], dict[str, list[float | None]]]:
        """(weighted totals, {name: that term's raw values}) for one batch."""
        breakdown: dict[str, list[float | None]] = {}
        for name in self.names:
            breakdown[name] = self.call_term(name, prompts, completions, columns, breakdown)
        return self.totals(breakdown, len(completions)), {name: breakdown[name] for name in self.weights}

    def _correctness(self, breakdown: Mapping[str, list], n: int, name: str) -> list[float | None]:
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


def _callable_name(fn: Any) -> str:
    name = getattr(fn, "__name__", None)
    if not callable(fn) or not isinstance(name, str) or not name or name == "<lambda>":
        raise ValueError(
            f"rewards.combine: a key must be a reward name or a reward function with a __name__ "
            f"(it names the term in the breakdown); got {fn!r}. For a lambda or functools.partial, "
            "set `fn.__name__ = '...'` first"
        )
    return name


def select_rows(columns: Mapping[str, Any], idx: Sequence[int], n: int) -> dict[str, Any]:
    """The dataset columns of the samples `idx` of an n-sample batch: per-sample columns (lists or
    tuples of length n) are subset, anything else (a scalar option) is passed unchanged."""
    return {key: [col[i] for i in idx] if isinstance(col, (list, tuple)) and len(col) == n else col
            for key, col in columns.items()}


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
    `numbers` -> countdown, otherwise the math checker against `answer` (only a plain number for
    rows whose `task` asks for one: `rewards.math.NUMBER_TASKS`). None where that grader does not
    apply. The reward for mixed-task batches: summing `accuracy` and `countdown` instead
    would also pay the math checker's verdict on countdown rows (a bare "60" matches the target
    while breaking the countdown rule). Code rows score 1.0 only when every test passes, as
    evaluation counts them: passed/total would pay the prompt's example hard-coded (it is one of
    the tests) a sure fraction. The `code` term keeps passed/total for recipes that want it, and
    `all_or_nothing=False` passed here does the same."""
    n = len(completions)
    rows: dict[str, list[int]] = {}
    for i in range(n):
        rows.setdefault(_task_of(i, columns), []).append(i)
    out: list = [None] * n
    for name, idx in rows.items():
        sub = select_rows(columns, idx, n)
        if name == "accuracy" and "answer" not in sub:
            continue  # no gold answer at all: not applicable
        if name == "code":
            sub.setdefault("all_or_nothing", True)
        values = REGISTRY[name]([prompts[i] for i in idx], [completions[i] for i in idx], **sub)
        for i, value in zip(idx, values):
            out[i] = value
    return out


def combine(
    weights: Mapping[str | RewardFn, float], options: Mapping[str, Mapping[str, Any]] | None = None
) -> CombinedReward:
    """One reward function: the weighted sum of the given rewards (see the module docstring).

    Keys are registry names or reward functions: `combine({"task_accuracy": 1.0, "format": 0.5,
    reward_model: 0.5})` names the last term `reward_model.__name__` in the breakdown.
    `options` gives keyword arguments per term name, e.g. `{"overlong": {"max_length": 1024,
    "cache_length": 256}, "repetition": {"ngram_size": 4}}`.
    """
    return CombinedReward(weights, options)


__all__ = ["REGISTRY", "CORRECTNESS_REWARDS", "TASK_ACCURACY_COLUMNS", "CombinedReward", "combine", "get", "select_rows",
           "task_accuracy_reward"]
