"""Countdown reward: reach the target with the given numbers.

The task (TinyZero's countdown): given `numbers` (list[int]) and a `target` (int), write an
arithmetic expression that evaluates to the target. The rule this module enforces exactly:

- the `<answer>` block (exactly one) holds ONLY an expression: non-negative integer literals,
  `+ - * /`, parentheses and whitespace (unary minus allowed; no `=`, no other symbols, no words);
- the multiset of literals is contained in the multiset `numbers`: each given number used at most
  once (a number given twice may be used twice); with `use_all=True`, exactly once. The reward
  defaults to `use_all=True` because this project's prompts (data/countdown.py) say "use each
  number exactly once"; `check_countdown` keeps the looser rule unless asked;
- the value, computed exactly with `Fraction` (so `7/2*2` is 7 and `1/3*3` is 1, with no float
  rounding), equals `target`. Division by zero fails.

Model text is never `eval`-ed: a small tokenizer and a recursive-descent parser build the value;
input length and nesting depth are bounded so hostile answers cost microseconds.
`countdown_reward` gives 1.0 / 0.0, and None for rows without `numbers` or `target`.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Sequence

import regex

from rewards.format import answer_text, completion_text

MAX_EXPRESSION_CHARS = 512
MAX_DEPTH = 64  # parentheses plus unary minus nesting; far beyond any honest answer

_TOKEN = regex.compile(r"\s*(?:([0-9]+)|([-+*/()]))")  # ASCII digits only


class CountdownError(ValueError):
    """Why an answer is not a valid countdown expression."""


def tokenize(expression: str) -> list[str]:
    """Split into integer literals and the six allowed symbols; any other character is an error."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise CountdownError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    tokens: list[str] = []
    pos = 0
    stripped_end = len(expression.rstrip())
    while pos < stripped_end:
        m = _TOKEN.match(expression, pos)
        if not m:
            bad = expression[pos:].lstrip()[:1]
            raise CountdownError(f"character {bad!r} is not allowed (only digits, + - * / and parentheses)")
        tokens.append(m.group(1) or m.group(2))
        pos = m.end()
    return tokens


@dataclass
class _Parser:
    """expr := term (('+'|'-') term)* ; term := unary (('*'|'/') unary)* ;
    unary := '-' unary | atom ; atom := INT | '(' expr ')'"""

    tokens: list[str]
    pos: int = 0
    depth: int = 0

    def parse(self) -> tuple[Fraction, list[int]]:
        self.literals: list[int] = []
        if not self.tokens:
            raise CountdownError("empty expression")
        value = self._expr()
        if self.pos != len(self.tokens):
            raise CountdownError(f"unexpected {self.tokens[self.pos]!r} after a complete expression")
        return value, self.literals

    def _peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise CountdownError("expression ends early")
        self.pos += 1
        return token

    def _expr(self) -> Fraction:
        value = self._term()
        while self._peek() in ("+", "-"):
            op = self._take()
            rhs = self._term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def _term(self) -> Fraction:
        value = self._unary()
        while self._peek() in ("*", "/"):
            op = self._take()
            rhs = self._unary()
            if op == "*":
                value *= rhs
            elif rhs == 0:
                raise CountdownError("division by zero")
            else:
                value /= rhs
        return value

    def _unary(self) -> Fraction:
        if self._peek() == "-":
            self._take()
            with self._nested():
                return -self._unary()
        return self._atom()

    def _atom(self) -> Fraction:
        token = self._take()
        if token == "(":
            with self._nested():
                value = self._expr()
            if self._take() != ")":
                raise CountdownError("unbalanced parentheses")
            return value
        if token[0] in "0123456789":
            self.literals.append(int(token))
            return Fraction(int(token))
        raise CountdownError(f"unexpected {token!r}")

    @contextmanager
    def _nested(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise CountdownError(f"nesting deeper than {MAX_DEPTH}")
        try:
            yield
        finally:
            self.depth -= 1


def evaluate(expression: str) -> tuple[Fraction, list[int]]:
    """Exact value of a countdown expression and the integer literals it uses, in order."""
    return _Parser(tokenize(expression)).parse()


@dataclass(frozen=True)
class CountdownVerdict:
    ok: bool
    reason: str
    value: Fraction | None = None


def check_countdown(
    expression: str, numbers: Sequence[int], target: int, *, use_all: bool = False
) -> CountdownVerdict:
    """Verdict and reason for one expression against the given numbers and target.

    `use_all` tightens "at most once" to "exactly once" (every given number used)."""
    try:
        value, literals = evaluate(expression)
    except CountdownError as err:
        return CountdownVerdict(False, str(err))
    used, given = Counter(literals), Counter(int(n) for n in numbers)
    overused = used - given
    if overused:
        return CountdownVerdict(
            False, f"uses numbers not given or more often than given: {sorted(overused.elements())}", value
        )
    unused = given - used
    if use_all and unused:
        return CountdownVerdict(False, f"does not use every given number: {sorted(unused.elements())} unused", value)
    if value != target:
        return CountdownVerdict(False, f"evaluates to {value}, not {target}", value)
    return CountdownVerdict(True, "ok", value)


def countdown_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    numbers: Sequence[Sequence[int] | None] | None = None,
    target: Sequence[int | None] | None = None,
    use_all: bool = True,
    **dataset_columns: Any,
) -> list[float | None]:
    """1.0 when the single `<answer>` expression reaches `target` under the countdown rule, else 0.0;
    None for rows without `numbers` or `target`. `use_all=True` (the default, matching the prompts)
    demands every number exactly once; `use_all=False` (e.g. through
    `rewards.combine(..., options={"countdown": {"use_all": False}})`) allows leaving some out."""
    rewards: list[float | None] = []
    for i, completion in enumerate(completions):
        row_numbers = numbers[i] if numbers is not None else None
        row_target = target[i] if target is not None else None
        if not row_numbers or row_target is None:
            rewards.append(None)
            continue
        answer = answer_text(completion_text(completion))
        if answer is None:
            rewards.append(0.0)
            continue
        rewards.append(1.0 if check_countdown(answer, row_numbers, int(row_target), use_all=use_all).ok else 0.0)
    return rewards
