"""Held-out evaluation problems and training problems with no overlap between them.

- Every problem has a `key`: its identity independent of language and phrasing (the expression, the
  equation, the countdown numbers and target, the code template with its name, constant and example).
- `held_out` draws distinct keys per (task, difficulty) first; `training` then draws problems whose
  key is not held out. So no eval prompt -- in either language, in any phrasing -- appears in sft,
  rl or pretrain.
- Small problem spaces (level-1 countdown has a few hundred keys) would be emptied by a large eval
  set, so `held_out` never takes more than a quarter of the distinct keys it can find.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from data import arithmetic, code_tasks, countdown, equations
from data.problem import Problem

FAMILIES: dict[str, Callable[[random.Random, int], Problem]] = {
    "arithmetic": arithmetic.generate,
    "equations": equations.generate,
    "countdown": countdown.generate,
    "code": code_tasks.generate_function,
    "code_io": code_tasks.generate_io,
}
LEVELS = (1, 2, 3, 4)
# How many draws `held_out` spends looking for distinct keys before it decides the space is small.
PROBE_DRAWS = 1500


def held_out(rng: random.Random, task: str, difficulty: int, n: int) -> list[Problem]:
    """Up to `n` problems with distinct keys, at most a quarter of the distinct keys found in
    PROBE_DRAWS draws (so training keeps most of a small space)."""
    gen = FAMILIES[task]
    found: dict[str, Problem] = {}
    for _ in range(PROBE_DRAWS):
        p = gen(rng, difficulty)
        found.setdefault(p.key, p)
        if len(found) >= 4 * n:
            break
    keys = sorted(found)
    rng.shuffle(keys)
    return [found[k] for k in keys[: min(n, len(found) // 4)]]


def training(rng: random.Random, task: str, difficulty: int, n: int, excluded: set[str]) -> list[Problem]:
    """`n` problems whose keys are not in `excluded` (repeats allowed: small spaces repeat)."""
    gen = FAMILIES[task]
    out: list[Problem] = []
    tries = 0
    while len(out) < n:
        p = gen(rng, difficulty)
        tries += 1
        if p.key not in excluded:
            out.append(p)
        elif tries > 100 * (n + 10):
            raise RuntimeError(f"{task} level {difficulty}: the held-out keys cover almost every problem")
    return out
