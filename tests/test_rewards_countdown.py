"""Countdown reward: exact Fraction evaluation, the at-most-once multiset rule, hostile answers."""

import time

import pytest

from rewards.countdown import CountdownError, check_countdown, countdown_reward, evaluate


def reward(answer, numbers, target, wrap=True):
    text = f"<think>search</think> <answer>{answer}</answer>" if wrap else answer
    return countdown_reward(["p"], [text], numbers=[numbers], target=[target])[0]


@pytest.mark.parametrize(
    "expression, numbers, target",
    [
        ("(25 - 5) * 3", [25, 5, 3], 60),
        ("25*3 - 5*3", [25, 5, 3, 3], 60),  # 3 given twice may be used twice
        ("7 / 2 * 2", [7, 2, 2], 7),  # exact: 7/2 is kept as a fraction
        ("(1/3) * 3 + 4", [1, 3, 3, 4], 5),  # no float rounding (0.333.. * 3)
        ("-(3 - 10)", [3, 10], 7),  # unary minus
        ("((((8))))", [8], 8),
        (" 6*7 ", [6, 7], 42),
    ],
)
def test_valid_answers_score_one(expression, numbers, target):
    assert reward(expression, numbers, target) == 1.0


@pytest.mark.parametrize(
    "expression, numbers, target, why",
    [
        ("25 - 5 * 3", [25, 5, 3], 60, "evaluates to 10"),
        ("(25 - 5) * 3 * 1", [25, 5, 3], 60, "not given"),
        ("25*3 - 5*3", [25, 5, 3], 60, "more often"),
        ("2 ** 5", [2, 5], 32, "unexpected"),
        ("(25 - 5) * 3 = 60", [25, 5, 3], 60, "'='"),
        ("60", [25, 5, 3], 60, "not given"),
        ("1 / (3 - 3)", [1, 3, 3], 0, "division by zero"),
        ("2.5 * 4", [2, 5, 4], 10, "'.'"),
        ("25 5", [25, 5], 30, "unexpected"),
        ("(25 - 5", [25, 5], 20, "ends early"),
        ("25 - 5)", [25, 5], 20, "unexpected"),
        ("", [1], 1, "empty"),
        ("__import__('os').system('echo hi')", [1], 1, "not allowed"),
        ("sum([25, 5, 3])", [25, 5, 3], 33, "not allowed"),
        ("٢٥ + 5", [25, 5], 30, "not allowed"),  # non-ASCII digits
        ("25 × 3", [25, 3], 75, "not allowed"),
        ("(" * 200 + "1" + ")" * 200, [1], 1, "nesting"),
        ("-" * 200 + "1", [1], 1, "nesting"),
        ("1+" * 400 + "1", [1], 1, "longer than"),
    ],
)
def test_invalid_answers_score_zero_with_reason(expression, numbers, target, why):
    assert reward(expression, numbers, target) == 0.0
    verdict = check_countdown(expression, numbers, target)
    assert not verdict.ok and why in verdict.reason


def test_rows_without_numbers_or_target_are_not_applicable():
    out = countdown_reward(
        ["p"] * 3, ["<answer>1+2</answer>"] * 3, numbers=[[1, 2], [], None], target=[3, 3, 3]
    )
    assert out == [1.0, None, None]
    assert countdown_reward(["p"], ["<answer>1+2</answer>"], numbers=[[1, 2]], target=[None]) == [None]
    assert countdown_reward(["p"], ["<answer>1+2</answer>"]) == [None]  # no countdown columns at all


def test_answer_block_is_required_and_single():
    assert reward("1 + 2", [1, 2], 3, wrap=False) == 0.0
    two = "<answer>1+2</answer><answer>2+1</answer>"
    assert countdown_reward(["p"], [two], numbers=[[1, 2]], target=[3]) == [0.0]
    conv = [{"role": "assistant", "content": "<think>t</think><answer>1+2</answer>"}]
    assert countdown_reward(["p"], [conv], numbers=[[1, 2]], target=[3]) == [1.0]


def test_evaluate_precedence_and_literals():
    value, literals = evaluate("2 + 3 * 4 - 10 / 5")
    assert value == 12 and literals == [2, 3, 4, 10, 5]
    assert evaluate("8 / 3")[0].denominator == 3
    with pytest.raises(CountdownError):
        evaluate("3 +")


def test_hostile_answers_are_cheap():
    t0 = time.perf_counter()
    for expression in ["(" * 100_000, "9" * 100_000, "1" + "*9999999" * 60, "\x00" * 1000]:
        assert reward(expression, [1, 9], 9) == 0.0
    assert time.perf_counter() - t0 < 1.0


def test_use_all_demands_every_number_exactly_once():
    rows = dict(numbers=[[4, 100, 7]], target=[25])
    # The default is the prompts' rule (every number exactly once); use_all=False loosens it.
    assert countdown_reward(["p"], ["<answer>100 / 4</answer>"], use_all=False, **rows) == [1.0]
    assert countdown_reward(["p"], ["<answer>100 / 4</answer>"], **rows) == [0.0]
    assert countdown_reward(["p"], ["<answer>100 / 4 + 7 - 7</answer>"], use_all=True, **rows) == [0.0]
    assert countdown_reward(["p"], ["<answer>(100 + 7 - 7) / 4</answer>"], use_all=True,
                            numbers=[[4, 100, 7, 7]], target=[25]) == [1.0]
    assert "unused" in check_countdown("100 / 4", [4, 100, 7], 25, use_all=True).reason
