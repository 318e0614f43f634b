"""Countdown puzzles: reach a target with the given numbers, each used exactly once, with + - * /.

Levels (difficulty) -- each level is one more step of the same search, so a small model that has
learned level 1 has learned the inner loop of every level:
1. two 1-digit numbers, one operation;
2. three 1-digit numbers: the first two combined by any operation, then the third added or taken away;
3. four 1-digit numbers, the last two each added or taken away;
4. five 1-digit numbers, the last three each added or taken away; half the puzzles need one
   two-number search, a quarter two, a quarter three (`SEARCHES`).

The puzzles of levels 2-4 are built as a chain in the order the numbers are listed, so the search in
the trace is complete for them: keep the last number for the last step, and for `+ n` then `- n`
work out what the other numbers must make (`target - n`, `target + n`) and solve that smaller puzzle
the same way. Two numbers are the level-1 search: compare the value wanted with the larger number
(above it only + or * can reach it, below it only - or /) and try those two operations. Failed
branches stay in the trace, computed correctly and checked against the value wanted ("= 11,
target 7: no"), the way a person searches. Every value is a positive integer (divisions are exact)
and the values wanted stay within the pretraining fact tables (up to 69). The `answer` column holds
the expression the search finds.
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


def _random_pair(rng: random.Random, numbers: list[int]) -> Term | None:
    """The two numbers combined by a random operation (larger first for - and /), or None when the
    result is not a positive integer."""
    x, y = Term(numbers[0], str(numbers[0])), Term(numbers[1], str(numbers[1]))
    op = rng.choice("+-*/")
    if op in "-/" and x.value < y.value:
        x, y = y, x
    return combine(x, op, y)


def _ordered_chain(rng: random.Random, numbers: list[int]) -> Term | None:
    """Levels 2-4: the first two numbers combined by any operation, then each later number added or
    taken away, in the listed order. None when a value is not a positive integer."""
    term = _random_pair(rng, numbers[:2])
    for n in numbers[2:]:
        if term is None:
            return None
        term = combine(term, rng.choice("+-"), Term(n, str(n)))
    return term


def _try_text(x: Term, op: str, y: Term, r: Term, wanted: int) -> Step:
    # The verdict comes after the result and the wanted value stand side by side ("= 11, target 7:
    # no"). Measured with "= 11. Not 7." (the verdict before the wanted value is written), 7 of 17
    # level-1 misses of the tiny model were "That works!" after a wrong result.
    if r.value == wanted:
        return Step(f"Try {x.value} {op} {y.value} = {r.value}, target {wanted}: yes, that works!",
                    f"试 {x.value} {op} {y.value} = {r.value}，目标 {wanted}：对，成功！")
    return Step(f"Try {x.value} {op} {y.value} = {r.value}, target {wanted}: no.",
                f"试 {x.value} {op} {y.value} = {r.value}，目标 {wanted}：不对。")


def comparison(a: int, b: int) -> tuple[str, str]:
    """`a` against `b` in words (en, zh): the trace's comparison step and the corpus's comparison
    facts share this wording."""
    if a > b:
        return f"{a} is bigger than {b}", f"{a} 比 {b} 大"
    if a < b:
        return f"{a} is smaller than {b}", f"{a} 比 {b} 小"
    return f"{a} equals {b}", f"{a} 等于 {b}"


def _pair_search(numbers: list[int], wanted: int) -> tuple[list[Step], Term | None]:
    """Make `wanted` from two numbers. Compare it with the larger number first (no arithmetic):
    above it only + or * can reach it, below it only - or /, equal to it only * (by 1). Then try
    those operations in that order (larger number first for - and /), so the search rests on at
    most two 1-digit facts. Returns (steps, the term that works or None)."""
    big, small = Term(max(numbers), str(max(numbers))), Term(min(numbers), str(min(numbers)))
    first, second = Term(numbers[0], str(numbers[0])), Term(numbers[1], str(numbers[1]))
    en, zh = comparison(wanted, big.value)
    if wanted > big.value:
        steps = [Step(f"{en}, so try + or *.", f"{zh}，所以试 + 或 *。")]
        tries = (("+", first, second), ("*", first, second))
    elif wanted < big.value:
        steps = [Step(f"{en}, so try - or /.", f"{zh}，所以试 - 或 /。")]
        tries = (("-", big, small), ("/", big, small))
    else:
        steps = [Step(f"{en}, so try * (by 1).", f"{zh}，所以试 *（乘以 1）。")]
        tries = (("*", big, small),)
    for op, x, y in tries:
        r = combine(x, op, y)
        if r is None:
            steps.append(Step(f"{x.value} {op} {y.value} does not work.", f"{x.value} {op} {y.value} 不行。"))
            continue
        steps.append(_try_text(x, op, y, r, wanted))
        if r.value == wanted:
            return steps, r
    return steps, None


def _listed(numbers: list[int], language: str) -> str:
    return (", " if language == "en" else "、").join(map(str, numbers))


def search(numbers: list[int], wanted: int) -> tuple[list[Step], Term | None, int]:
    """The trace's search: two numbers by `_pair_search`; more by keeping the last number for the
    last step and solving `wanted - last` (then `wanted + last`) from the others. Returns (steps,
    the expression that makes `wanted` or None, how many two-number searches it ran); failed
    branches stay in the steps."""
    if len(numbers) == 2:
        return (*_pair_search(numbers, wanted), 1)
    *rest, last = numbers
    steps: list[Step] = []
    pair_searches = 0
    for op, need, sign in (("+", wanted - last, "-"), ("-", wanted + last, "+")):
        if need <= 0:
            steps.append(Step(f"Last step {op} {last}: {wanted} {sign} {last} is not positive.",
                              f"最后一步 {op} {last}：{wanted} {sign} {last} 不是正数。"))
            continue
        # The others are always the first len(rest) numbers listed, so the line need not repeat them.
        steps.append(Step(f"Last step {op} {last}: make {wanted} {sign} {last} = {need}.",
                          f"最后一步 {op} {last}：凑出 {wanted} {sign} {last} = {need}。"))
        sub_steps, term, n = search(rest, need)
        steps += sub_steps
        pair_searches += n
        if term is not None:
            return steps, combine(term, op, Term(last, str(last))), pair_searches
    return steps, None, pair_searches


PROMPTS_EN = (
    "Using the numbers {nums}, make {t}. Use each number exactly once with +, -, *, /.",
    "Reach {t} with the numbers {nums}, each used exactly once, using +, -, * and /.",
)
PROMPTS_ZH = (
    "用数字 {nums} 凑出 {t}，每个数字恰好用一次，可以用 +、-、*、/。",
    "用 {nums} 这些数各一次，通过 +、-、*、/ 得到 {t}。",
)


COUNT = {1: 2, 2: 3, 3: 4, 4: 5}  # difficulty -> how many numbers
MAX_WANTED = 69  # largest value any step of the search may ask for (the fact tables reach 60 + 9)
# Two-number searches per trace (the rest are failed branches). Levels 1-3 keep the share that
# random chains give (at level 3: 1, 2 or 3 searches). Level 4 draws its count from `SEARCHES[4]`
# (so half the puzzles need one search, a quarter two, a quarter three). Measured on the tiny model:
# - left to chance with at most two searches, 69 % of five-number chains need one (every `+` branch
#   works at once), and level 4 was solved more often than level 3 (0.41 and 0.38 against 0.28 on
#   two data seeds);
# - exactly two searches (the first branch always failing): 0.47 and 0.31 -- a fixed shape of search
#   gives the shape of the answer away;
# - one, two and three searches a third each: 0.06, with 1 prompt in 32 of mixed outcomes (seed 0;
#   the model lost track of the numbers when backing out of three levels of search).
SEARCHES = {1: (1,), 2: (1, 2), 3: (1, 2, 3), 4: (1, 1, 2, 3)}
DRAW_SEARCHES = {4}  # levels whose search count is drawn from `SEARCHES` rather than left to chance
# Trace lines, the numbers and the closing line included: 16 keeps a completion within 256 tokens
# (measured with the tiny tokenizer: 16 lines at most 255 tokens, 17 lines up to 270).
MAX_TRACE_LINES = 16


def generate(rng: random.Random, difficulty: int) -> Problem:
    """One countdown puzzle at `difficulty`: random 1-digit numbers and a random valid chain over
    them (so it is solvable), kept when the search finds a solution with the level's number of
    two-number searches (`SEARCHES`, drawn first at level 4) within `MAX_TRACE_LINES`."""
    count = COUNT[difficulty]
    allowed = (rng.choice(SEARCHES[difficulty]),) if difficulty in DRAW_SEARCHES else SEARCHES[difficulty]
    while True:
        numbers = [rng.randint(1, 9) for _ in range(count)]
        term = _random_pair(rng, numbers) if difficulty == 1 else _ordered_chain(rng, numbers)
        if term is None or (difficulty > 1 and term.value in numbers):
            continue
        target = term.value
        if target + sum(numbers[2:]) > MAX_WANTED:
            continue
        tried, final, pair_searches = search(numbers, target)
        if final is not None and pair_searches in allowed and len(tried) + 2 <= MAX_TRACE_LINES:
            break
    steps = [Step(f"Numbers: {_listed(numbers, 'en')}. Target: {target}.",
                  f"数字：{_listed(numbers, 'zh')}。目标：{target}。")]
    steps += tried
    steps.append(Step(f"So {final.expr} = {target}.", f"所以 {final.expr} = {target}。"))
    t = rng.randrange(len(PROMPTS_EN))
    return Problem(
        task=TASK,
        difficulty=difficulty,
        key=f"{TASK}:{','.join(map(str, sorted(numbers)))}->{target}",
        prompt={"en": PROMPTS_EN[t].format(nums=_listed(numbers, "en"), t=target),
                "zh": PROMPTS_ZH[t].format(nums=_listed(numbers, "zh"), t=target)},
        steps=steps,
        answer=final.expr,
        numbers=numbers,
        target=target,
    )


# Passes over the comparison facts in the pretraining corpus. Measured on the tiny model (run t6):
# 7 of the 12 level-1 misses began with a wrong comparison of close numbers ("5 is smaller than 4,
# so try - or /"), the one fact the search takes on trust. All 621 facts (~7 tokens each) 12 times,
# and the 162 with a value wanted under 19 another 24 times: ~80k tokens, ~4 % of the corpus.
COMPARISON_REPEATS = 12
CLOSE_COMPARISON_REPEATS = 24


def comparison_lines(largest: int = MAX_WANTED) -> list[tuple[str, str]]:
    """(en, zh) for every comparison the search makes: a value wanted (1..largest) against a
    1-digit number, as sentences in the words of the trace's comparison step."""
    lines = []
    for a in range(1, largest + 1):
        for b in range(1, 10):
            en, zh = comparison(a, b)
            lines.append((en + ".", zh + "。"))
    return lines


def comparison_facts(rng: random.Random) -> list[str]:
    """Pretraining documents: `comparison_lines` over and over (the close ones more often), in a
    fresh random order each pass, eight to a document, each document in one language."""
    passes = [comparison_lines()] * COMPARISON_REPEATS + [comparison_lines(18)] * CLOSE_COMPARISON_REPEATS
    docs = []
    for lines in passes:
        order = rng.sample(lines, len(lines))
        for i in range(0, len(order), 8):
            language = rng.randrange(2)
            docs.append((" " if language == 0 else "").join(pair[language] for pair in order[i:i + 8]))
    return docs
