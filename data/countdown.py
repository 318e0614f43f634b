"""Countdown puzzles: reach a target with the given numbers, each used exactly once, with + - * /.

Levels (difficulty):
1. two 1-digit numbers, one operation;
2. three 1-digit numbers, two operations;
3. three numbers up to 25, target up to 100;
4. four numbers up to 50, target 10..100 (the TinyZero setting).

Every intermediate value is a positive integer (divisions are exact). The `answer` column holds one
valid expression; `numbers` and `target` hold the puzzle. Level 1 traces compare the target with the
larger number (above: + or *, below: - or /) and try those two, so they rest on at most two 1-digit
facts; higher levels show up to a few failed attempts (each computed correctly and ending in
"not <target>") before the successful chain, the way a person searches.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from data.problem import Problem
from data.traces import Step

TASK = "countdown"
LEVELS = (1, 2, 3, 4)
PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


@dataclass(frozen=True)
class Term:
    """A value built so far and the expression that builds it."""

    value: int
    expr: str
    prec: int = 3  # 3 = atom


def combine(x: Term, op: str, y: Term) -> Term | None:
    """`x op y` as a new term, or None when the result would not be a positive integer."""
    if op == "+":
        v = x.value + y.value
    elif op == "-":
        v = x.value - y.value
    elif op == "*":
        v = x.value * y.value
    else:
        if y.value == 0 or x.value % y.value:
            return None
        v = x.value // y.value
    if v <= 0:
        return None
    p = PRECEDENCE[op]
    left = f"({x.expr})" if x.prec < p else x.expr
    # Right operand of - or / needs brackets at equal precedence: a - (b + c), a / (b * c).
    right = f"({y.expr})" if y.prec < p or (y.prec == p and op in "-/") else y.expr
    return Term(v, f"{left} {op} {right}", p)


def _random_chain(rng: random.Random, numbers: list[int], limit: int):
    """Combine the numbers pairwise at random until one value remains. Returns (final term,
    list of (x, op, y, result)) or None if a step is invalid or exceeds `limit`."""
    pool = [Term(n, str(n)) for n in numbers]
    rng.shuffle(pool)
    chain = []
    while len(pool) > 1:
        i, j = rng.sample(range(len(pool)), 2)
        x, y = pool[i], pool[j]
        op = rng.choice("+-*/")
        if op in "-/" and x.value < y.value:
            x, y = y, x
        r = combine(x, op, y)
        if r is None or r.value > limit:
            return None
        chain.append((x, op, y, r))
        pool = [t for k, t in enumerate(pool) if k not in (i, j)] + [r]
    return pool[0], chain


def _chain_text(chain, target: int, language: str) -> str:
    parts = [f"{x.value} {op} {y.value} = {r.value}" for x, op, y, r in chain]
    final = chain[-1][3].value
    sep = ", " if language == "en" else "，"
    if final == target:
        end = "That works!" if language == "en" else "成功！"
    else:
        end = f"Not {target}." if language == "en" else f"不是 {target}。"
    head = "Try " if language == "en" else "试 "
    return head + sep.join(parts) + (". " if language == "en" else "。") + end


def _chain_step(chain, target: int) -> Step:
    return Step(_chain_text(chain, target, "en"), _chain_text(chain, target, "zh"))


SPEC = {  # difficulty -> (how many numbers, largest number, largest target, smallest target)
    1: (2, 9, 81, 1),
    2: (3, 9, 50, 2),
    3: (3, 25, 100, 10),
    4: (4, 50, 100, 10),
}


def _level_one_steps(numbers: list[int], target: int) -> tuple[list[Step], Term]:
    """Compare the target with the larger number first (no arithmetic): above it only + or * can
    reach it, below it only - or /, equal to it only * 1. Then try those operations in that order
    (larger number first for - and /), so the trace needs at most two 1-digit facts."""
    big, small = Term(max(numbers), str(max(numbers))), Term(min(numbers), str(min(numbers)))
    first, second = Term(numbers[0], str(numbers[0])), Term(numbers[1], str(numbers[1]))
    if target > big.value:
        steps = [Step(f"{target} is bigger than {big.value}, so try + or *.",
                      f"{target} 比 {big.value} 大，所以试 + 或 *。")]
        tries = (("+", first, second), ("*", first, second))
    elif target < big.value:
        steps = [Step(f"{target} is smaller than {big.value}, so try - or /.",
                      f"{target} 比 {big.value} 小，所以试 - 或 /。")]
        tries = (("-", big, small), ("/", big, small))
    else:
        steps = [Step(f"{target} equals {big.value}, so multiply by 1.", f"{target} 等于 {big.value}，所以乘以 1。")]
        tries = (("*", big, small),)
    for op, x, y in tries:
        r = combine(x, op, y)
        if r is None:
            steps.append(Step(f"{x.value} {op} {y.value} does not work.", f"{x.value} {op} {y.value} 不行。"))
            continue
        steps.append(_chain_step([(x, op, y, r)], target))
        if r.value == target:
            return steps, r
    raise AssertionError("level-1 target is always reachable by one operation")


PROMPTS_EN = (
    "Using the numbers {nums}, make {t}. Use each number exactly once with +, -, *, /.",
    "Reach {t} with the numbers {nums}, each used exactly once, using +, -, * and /.",
)
PROMPTS_ZH = (
    "用数字 {nums} 凑出 {t}，每个数字恰好用一次，可以用 +、-、*、/。",
    "用 {nums} 这些数各一次，通过 +、-、*、/ 得到 {t}。",
)


def generate(rng: random.Random, difficulty: int) -> Problem:
    """One countdown puzzle at `difficulty`, built from a random valid chain (so it is solvable)."""
    count, largest, max_target, min_target = SPEC[difficulty]
    while True:
        numbers = [rng.randint(1 if difficulty <= 2 else 2, largest) for _ in range(count)]
        built = _random_chain(rng, numbers, limit=max(max_target, 200))
        if built is None:
            continue
        final, chain = built
        if min_target <= final.value <= max_target and (difficulty == 1 or final.value not in numbers):
            break
    target = final.value
    steps = [Step(f"Numbers: {', '.join(map(str, numbers))}. Target: {target}.",
                  f"数字：{'、'.join(map(str, numbers))}。目标：{target}。")]
    if difficulty == 1:
        tried, final = _level_one_steps(numbers, target)
        steps += tried
    else:
        fails, wanted = 0, rng.randint(0, difficulty - 1)
        for _ in range(20):
            if fails >= wanted:
                break
            attempt = _random_chain(rng, numbers, limit=10 * max_target)
            if attempt is not None and attempt[0].value != target:
                steps.append(_chain_step(attempt[1], target))
                fails += 1
        steps.append(_chain_step(chain, target))
    steps.append(Step(f"So {final.expr} = {target}.", f"所以 {final.expr} = {target}。"))
    t = rng.randrange(len(PROMPTS_EN))
    return Problem(
        task=TASK,
        difficulty=difficulty,
        key=f"{TASK}:{','.join(map(str, sorted(numbers)))}->{target}",
        prompt={"en": PROMPTS_EN[t].format(nums=", ".join(map(str, numbers)), t=target),
                "zh": PROMPTS_ZH[t].format(nums="、".join(map(str, numbers)), t=target)},
        steps=steps,
        answer=final.expr,
        numbers=numbers,
        target=target,
    )
