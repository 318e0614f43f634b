"""Rule-checked arithmetic steps: where a chain of thought states a wrong result.

A small policy's wrong answers are mostly slips inside a right method: "12 + 4 = 17", then the
rest of the trace builds on 17. An outcome reward charges the slip to all ~90 tokens of the
sample alike; the rule here finds the character where the arithmetic went wrong, so the trainer
(rlpipe/train/rl.py) can put a penalty on that one token (`grpo.slip_penalty`) or teach the right
character there (`grpo.slip_correction`). It is process supervision by a calculator, not by a
learned model: it pays nothing for right steps (so writing more of them earns nothing) and it
cannot be argued with.

A *statement* is `LHS = RHS` where LHS is integer arithmetic (literals, + - * / or `×` `÷`,
parentheses, at least one operator) and RHS one number, e.g. `ones 7 + 5 = 12,`,
`x = 16 / 4 = 4.` (the part `16 / 4 = 4`), `25 - 7 = 18`. Text that only looks like arithmetic is
left alone, because a false slip would punish a right step:
- an LHS that continues an algebraic term to its left (`9x + 14 = 20`: the `14` follows `+`),
  touches a letter or a call (`f(3) = 7`, `x2`) or a thousands comma (`1,000 + 5`);
- an RHS that goes on as an expression (`= 10 - 9`) or as a term (`= 7x`, `= 1,005`);
- LHS with decimals, division by zero, anything longer than `MAX_STATEMENT_CHARS`.
The LHS is evaluated exactly (`rewards.countdown.evaluate`: Fractions, never `eval`), with the
usual precedence. A decimal RHS is right when it is the value rounded to its own digits
(`10 / 3 = 3.33`); an integer RHS must be exact (`7 / 2 = 3` is a slip).

`arithmetic_statements(text) -> list[Statement]`: every checkable statement, right or wrong;
`arithmetic_slips(text)`: the wrong ones, each with the offset of its first wrong
character: the first character where the stated result and the right one differ, or, when the
stated result is a cut-short prefix of the right one (`= 16` for 160), the character just after
it (the model chose to end the number there); and the character that belongs there (`expected`:
the calculator's correction, which `grpo.slip_correction` teaches at that token).
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import regex

from rewards.countdown import CountdownError, evaluate

MAX_STATEMENT_CHARS = 200

_NUMBER = r"\d+"
_OPERAND = rf"\(*\s*-?{_NUMBER}\s*\)*"
_OP = r"[-+*/×÷]"
# LHS ending right at the end of the text before "=" (anchored by the caller with \s*$).
_LHS = regex.compile(rf"(?<![\w.,)])({_OPERAND}(?:\s*{_OP}\s*{_OPERAND})+)\s*$", regex.ASCII)
# RHS: one number, not followed by more of a number, a term or an expression.
_RHS = regex.compile(r"\s*(-?\d+(?:\.\d+)?)(?!\d|\.\d|,\d|\s*[-+*/×÷^(]|[A-Za-z_])")


class Statement(NamedTuple):
    # offset in the text of the first wrong character (or of the one after a cut-short result);
    # for a right statement, of its result's first character
    start: int
    statement: str  # "12 + 4 = 17"
    stated: str  # "17"
    right: str  # "16"
    ok: bool
    # the character a right statement has at `start` ("6"); "" when there is none to name: the
    # stated result should have ended there ("160" for 16), or the text ends inside the result
    expected: str = ""


def _right_result(value: Fraction, stated: str) -> tuple[bool, str]:
    """Whether `stated` is the value (rounded to its own decimals when it has any), and the right text."""
    if "." in stated:
        digits = len(stated) - stated.index(".") - 1
        scale = 10 ** digits
        rounded = Fraction(round(value * scale), scale)
        right = f"{float(rounded):.{digits}f}"
        return Fraction(stated) == rounded, right
    if value.denominator == 1:
        return int(stated) == value.numerator, str(value.numerator)
    return False, f"{float(value):.6g}"


def _first_wrong(stated: str, right: str) -> int:
    """Index in `stated` of the first differing character (len(stated) when it is a prefix of `right`)."""
    for i, (a, b) in enumerate(zip(stated, right)):
        if a != b:
            return i
    return min(len(stated), len(right))


def arithmetic_slips(text: str) -> list[Statement]:
    """Every arithmetic statement in `text` whose stated result is wrong, in order (see the module doc)."""
    return [s for s in arithmetic_statements(text) if not s.ok]


def arithmetic_statements(text: str) -> list[Statement]:
    """Every checkable arithmetic statement in `text`, right or wrong, in order."""
    found: list[Statement] = []
    for eq in regex.finditer("=", text):
        p = eq.start()
        rhs = _RHS.match(text, p + 1)
        if rhs is None:
            continue
        before = text[max(0, p - MAX_STATEMENT_CHARS):p]
        lhs = _LHS.search(before)
        if lhs is None or (lhs.start() == 0 and p > MAX_STATEMENT_CHARS):
            continue  # none, or it may run on past the window (its first number cut): not judged
        lead = before[:lhs.start()].rstrip()
        if lead and lead[-1] in "+-*/×÷^(":
            continue  # the arithmetic goes on to the left, into a term: 9x + 14 + 2 = 20
        if lead.endswith(("<=", ">=", "!=", "==")):
            continue  # a comparison, not a chain of equalities (x = 16 / 4 = 4)
        expression = lhs.group(1).replace("×", "*").replace("÷", "/")
        try:
            value, _ = evaluate(expression)
        except (CountdownError, ZeroDivisionError):
            continue
        stated = rhs.group(1)
        ok, right = _right_result(value, stated)
        wrong = 0 if ok else _first_wrong(stated, right)
        start = rhs.start(1) + wrong
        expected = right[wrong] if wrong < len(right) else ""
        if start >= len(text):
            start, expected = rhs.end(1) - 1, ""  # the text ends with the cut-short number: its last digit
        found.append(Statement(start, f"{lhs.group(1).strip()} = {stated}", stated, right, ok, expected))
    return found
