"""The calculator behind the slip penalty (`rewards.steps`): it finds the wrong arithmetic results a
policy writes in its chain of thought, points at the first wrong character, and never calls a right
step wrong.

Cases: completions our stage-2 policy wrote (runs/t2/stage-2/completions.jsonl, copied verbatim),
the builders' reference traces in both languages (thousands of right steps, none flagged), and text
that only looks like arithmetic (algebra, calls, comparisons, code, thousands separators)."""

import random

import pytest

from data import arithmetic, countdown, equations
from data.problem import make_row
from rewards.steps import MAX_STATEMENT_CHARS, arithmetic_slips, arithmetic_statements

# (completion written by the stage-2 policy, [(wrong statement, right result, the character pointed at)])
POLICY_OUTPUTS = [
    ("<think>\n把含 x 的项移到左边：6x - 8x = x。\n把常数移到右边：18 - 13 = 4。\n4x = 4.\n"
     "两边同时除以 4：x = 4 / 4 = 1。\n所以 x = 1。\n</think> <answer>x = 1</answer>",
     [("18 - 13 = 4", "5", "4")]),
    ("<think>\nMove the x terms to the left: 4x - 8x = -4x.\nMove the numbers to the right: -9 - 9 = 3.\n"
     "4x = 3.\nDivide both sides by 4: x = 3 / 4 = 1.\nSo x = 1.\n</think> <answer>x = 1</answer>",
     [("-9 - 9 = 3", "-18", "3"), ("3 / 4 = 1", "0.75", "1")]),
    ("<think>\n97 - 50：个位 7 - 0 = 7；十位 9 - 5 = 4。所以 97 - 50 = 48。\n所以答案是 48。\n</think> "
     "<answer>48</answer>",
     [("97 - 50 = 48", "47", "8")]),
    ("<think>\nNumbers: 2, 9, 9. Target: 16.\n最后一步 + 9：凑出 16 - 9 = 7。\n7 is bigger than 9, so try + or *.\n"
     "Try 2 + 9 = 11, target 7: no.\nTry 2 * 9 = 18, target 7: no.\nLast step - 9: make 16 + 9 = 25.\n"
     "So 2 * 9 - 9 = 19.\n</think> <answer>2 * 9 - 9</answer>",
     [("2 * 9 - 9 = 19", "9", "1")]),
    ("<think>\nExpand the left side: 4(x + 4) = 4x + 12.\nExpand the right side: (x + 6) = x + 6.\n"
     "4x + 18 = x + 6.\nMove the x terms to the left: 4x - x = 3x.\nMove the numbers to the right: 6 - 18 = -7.\n"
     "4x = -7.\nSo x = -7.\n</think> <answer>x = -7</answer>",
     [("6 - 18 = -7", "-12", "7")]),
    ("<think>\n把常数移到右边：-17 + 2 = -8。\n3x = -8.\nDivide both sides by 3: x = -8 / 3 = -1.\n"
     "所以 x = -1。\n</think> <answer>x = -1</answer>",
     [("-17 + 2 = -8", "-15", "8"), ("-8 / 3 = -1", "-2.66667", "1")]),
    ("<think>\nAdd and subtract from left to right.\n4 + 6 = 10.\nNow we have 10 - 9.\n"
     "10 - 9: ones 0 - 9 is negative, borrow: 10 - 9 = 1; tens 0 - 0 - 1 = 0. So 10 - 9 = 1.\n"
     "So the answer is 1.\n</think> <answer>1</answer>",
     [("0 - 0 - 1 = 0", "-1", "0")]),
    ("<think>\n9 + 7 = 16.\nSo the answer is 16.\n</think> <answer>16</answer>", []),
    ("<think>\n9 + 7 = 15.\n</think> <answer>15</answer>", [("9 + 7 = 15", "16", "5")]),  # right after a tag
]


@pytest.mark.parametrize("text, expected", POLICY_OUTPUTS)
def test_policy_slips_are_found_and_pointed_at(text, expected):
    slips = arithmetic_slips(text)
    assert [(s.statement, s.right, text[s.start]) for s in slips] == expected
    for s in slips:  # the offset is inside the stated result, on its first wrong character
        assert text[s.start - len(s.stated):s.start + len(s.stated)].count(s.stated) >= 1


def test_first_wrong_character_and_cut_short_results():
    assert [(s.stated, s.start) for s in arithmetic_slips("12 + 4 = 17.")] == [("17", 10)]
    # "= 12" for 120: the model ended the number too soon; the character after it is what was wrong
    text = "12 * 10 = 12."
    (slip,) = arithmetic_slips(text)
    assert (slip.right, text[slip.start]) == ("120", ".")
    (slip,) = arithmetic_slips("12 * 10 = 12")  # at the end of the text: its last digit
    assert slip.start == len("12 * 10 = 1")
    (slip,) = arithmetic_slips("3 × 4 = 13")
    assert slip.right == "12"


@pytest.mark.parametrize("text, expected", [
    ("12 + 4 = 17.", "6"),  # the calculator's digit where the first wrong one stands
    ("47 - 2 = 35", "4"),
    ("12 * 10 = 12.", "0"),  # cut short: the next digit of 120
    ("-2 - 5 = 7", "-"),  # the sign is the first wrong character
    ("3 / 4 = 1", "0"),  # of 0.75
    ("4 * 4 = 160", ""),  # the result should have ended: no character to name
    ("12 * 10 = 12", ""),  # the text ends inside the result: nothing after it to name
])
def test_each_slip_names_the_character_that_belongs_there(text, expected):
    (slip,) = arithmetic_slips(text)
    assert slip.expected == expected
    if expected:  # replacing the wrong character by it starts the right result
        fixed = text[:slip.start] + expected
        assert (fixed[fixed.rindex("=") + 1:].strip()) == slip.right[:len(fixed) - fixed.rindex("=") - 2]


@pytest.mark.parametrize("text, wrong", [
    ("10 / 3 = 3.33", False),  # rounded to its own digits
    ("10 / 3 = 3.34", True),
    ("7 / 2 = 3.5", False),
    ("7 / 2 = 3", True),  # an integer result must be exact
    ("(3 + 4) * 2 = 14", False),
    ("(3 + 4) * 2 = 15", True),
    ("29 + 3 * 6 = 47", False),  # precedence
    ("29 + 3 * 6 = 192", True),
    ("-7 + 3 = -4", False),
    ("-7 + 3 = 4", True),
    ("4 ÷ 2 = 2", False),
])
def test_results_are_checked_exactly(text, wrong):
    statements = arithmetic_statements(text)
    assert len(statements) == 1 and statements[0].ok is not wrong


@pytest.mark.parametrize("text", [
    "9x + 14 + 2 = 20",  # the sum continues an algebraic term
    "2x - 4 = 10", "4x = 16", "x = 16", "9x - 7x = 2x",
    "f(3) + 1 = 8", "grow(-8) = -34", "x2 + 1 = 5",  # calls and names
    "if x % 2 == 0:", "return n * 2 + 1 == m", "2 * 3 == 6", "a <= 3 + 4 = 8", "n + 1 >= 3", "x != 2 + 2",
    "1,000 + 5 = 1005", "3 + 4 = 1,005",  # thousands separators
    "4 + 6 = 10 - 9",  # the result goes on as an expression
    "25 - 7 = 18 (too big)", "3 + 4 = 7x",
    "12 + 4 = 16 = 17",  # "16 = 17" has no operator: not a calculation
    "5 / 0 = 1",  # no value
    "",
])
def test_text_that_only_looks_like_arithmetic_is_not_a_slip(text):
    assert arithmetic_slips(text) == []


def test_statements_longer_than_the_window_are_not_judged_from_a_cut_number():
    long_sum = " + ".join(["123456"] * 40)  # far past MAX_STATEMENT_CHARS
    assert len(long_sum) > MAX_STATEMENT_CHARS
    assert arithmetic_slips(f"{long_sum} = 1") == []
    assert arithmetic_slips(f"So {long_sum} = 1. And 2 + 2 = 5.")[0].statement == "2 + 2 = 5"


def test_no_reward_for_right_steps_and_hostile_text_is_cheap():
    # Padding a trace with right statements yields statements but no slip: the penalty has nothing to pay.
    padded = " ".join(f"{i} + 1 = {i + 1}." for i in range(500))
    assert len(arithmetic_statements(padded)) == 500 and arithmetic_slips(padded) == []
    hostile = "=" * 20000 + "1+" * 20000 + "1 = 3" + "(" * 5000
    assert arithmetic_slips(hostile) == []


@pytest.mark.parametrize("language", ["en", "zh"])
def test_reference_traces_are_all_right_and_are_checked(language):
    """Every builder trace of the three calculating tasks has checkable steps and none is flagged."""
    rng = random.Random(11)
    for generate in (arithmetic.generate, equations.generate, countdown.generate):
        checked = 0
        for difficulty in (1, 2, 3, 4):
            for _ in range(60):
                row = make_row(generate(rng, difficulty), language, False, rng, "")
                assert arithmetic_slips(row["solution"]) == [], row["solution"]
                checked += len(arithmetic_statements(row["solution"]))
        assert checked >= 240, (generate.__module__, checked)  # at least one step a trace on average
