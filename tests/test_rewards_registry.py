"""Reward registry and weighted combination: lazy lookup, None handling, breakdown, correctness feed."""

import subprocess
import sys

import pytest

import rewards
from rewards import REGISTRY, combine, get
from rewards.countdown import countdown_reward
from rewards.format import format_prefilled_reward, format_reward

GOOD = "<think>try</think> <answer>1+2</answer>"
BAD = "1+2"


def test_names_resolve_to_functions():
    assert REGISTRY["format"] is format_reward
    assert REGISTRY["format_prefilled"] is format_prefilled_reward
    assert REGISTRY["countdown"] is countdown_reward
    for name in ("format", "format_prefilled", "tag_count", "tag_count_prefilled", "language",
                 "countdown", "repetition", "kimi_length", "overlong"):
        assert callable(REGISTRY[name]), name
    assert REGISTRY.target("accuracy") == "rewards.math:accuracy_reward"
    assert REGISTRY.target("code") == "rewards.code:code_reward"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(KeyError, match="known rewards: .*format"):
        REGISTRY["nope"]
    with pytest.raises(ValueError, match="unknown or unweighted reward name"):
        combine({"format": 1.0, "nope": 1.0})
    with pytest.raises(ValueError, match="unknown or unweighted"):
        combine({"format": 1.0}, options={"overlong": {"max_length": 4}})


def test_importing_rewards_does_not_import_math_or_code():
    code = ("import sys, rewards; rewards.REGISTRY['format']; "
            "bad = [m for m in ('rewards.math', 'rewards.code', 'rewards.sandbox', 'sympy', 'rlpipe', 'torch') "
            "if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_get_binds_options():
    overlong = get("overlong", max_length=20, cache_length=10)
    assert overlong(["p", "p"], ["a", "b"], completion_lengths=[5, 15]) == [0.0, -0.5]
    assert overlong.__name__ == "overlong_reward"
    assert get("format") is format_reward


def test_weighted_sum_skips_not_applicable_terms():
    fn = combine({"countdown": 2.0, "format": 0.5})
    completions = [GOOD, BAD, GOOD]
    totals = fn(["p"] * 3, completions, numbers=[[1, 2], [1, 2], []], target=[3, 3, 3])
    # row 0: 2*1 + 0.5*1; row 1: 2*0 + 0.5*0; row 2: countdown N/A -> format only, not renormalised.
    assert totals == [2.5, 0.0, 0.5]
    assert fn.last_breakdown == {"countdown": [1.0, 0.0, None], "format": [1.0, 0.0, 1.0]}


def test_all_none_gives_none_and_breakdown_is_returned_without_state():
    fn = combine({"countdown": 1.0})
    totals, breakdown = fn.with_breakdown(["p"], [GOOD], numbers=[[]], target=[None])
    assert totals == [None] and breakdown == {"countdown": [None]}
    assert fn.last_breakdown == {}  # with_breakdown leaves the shared attribute alone


def test_combined_reward_has_a_name_for_trainer_logs():
    assert combine({"format": 1.0, "countdown": 2.0}).__name__ == "combined(format=1,countdown=2)"


def test_kimi_length_gets_correctness_from_the_correctness_term():
    fn = combine({"kimi_length": 1.0, "countdown": 1.0})
    short_right = "<think>a</think><answer>1+2</answer>"
    long_right = "<think>" + "a" * 40 + "</think><answer>2+1</answer>"
    long_wrong = "<think>" + "a" * 40 + "</think><answer>1*2</answer>"
    totals = fn(["q"] * 3, [short_right, long_right, long_wrong], numbers=[[1, 2]] * 3, target=[3] * 3)
    b = fn.last_breakdown
    assert b["countdown"] == [1.0, 1.0, 0.0]
    # Lengths (characters) 36, 76, 76: lambda 0.5, -0.5, and min(0, -0.5) for the wrong one.
    assert b["kimi_length"] == pytest.approx([0.5, -0.5, -0.5])
    assert totals == pytest.approx([1.5, 0.5, -0.5])


def test_kimi_length_without_a_correctness_source_is_a_clear_error():
    with pytest.raises(ValueError, match="needs per-sample correctness"):
        combine({"kimi_length": 1.0, "format": 1.0})(["p"], [GOOD])
    # A caller-supplied `correct` column works without a correctness term.
    out = combine({"kimi_length": 1.0})(["p", "p"], ["ab", "abcd"], correct=[True, True])
    assert out == [0.5, -0.5]


def test_options_reach_their_term_only():
    fn = combine({"repetition": 1.0, "format": 1.0}, options={"repetition": {"ngram_size": 1}})
    totals = fn(["p"], ["<think>go go</think> <answer>go</answer>"])
    # unigrams go, go, go: 1 distinct of 3 -> -(2/3); format 1.0.
    assert totals == pytest.approx([1 - 2 / 3])


def test_accuracy_and_code_resolve_when_their_modules_exist():
    pytest.importorskip("rewards.math")
    pytest.importorskip("rewards.code")
    from rewards.code import code_reward
    from rewards.math import accuracy_reward

    assert REGISTRY["accuracy"] is accuracy_reward
    assert REGISTRY["code"] is code_reward
    fn = combine({"accuracy": 1.0, "format": 0.5})
    totals = fn(["p", "p"], ["<think>t</think> <answer>\\frac{1}{2}</answer>", "<think>t</think> <answer>3</answer>"],
                answer=["0.5", "4"])
    assert totals == [1.5, 0.5]


def test_public_api():
    assert set(rewards.__all__) >= {"REGISTRY", "combine", "get"}


def test_task_accuracy_routes_each_row_to_its_grader():
    # A countdown row that also carries `answer`: the countdown rule decides, so a bare "3" that
    # breaks the rule earns nothing even though it equals the target.
    rows = dict(numbers=[[1, 2], [1, 2]], target=[3, 3], answer=["3", "3"], tests=["", ""])
    out = REGISTRY["task_accuracy"](["p", "p"], ["<answer>3</answer>", "<answer>1+2</answer>"], **rows)
    assert out == [0.0, 1.0]
    # No grader applies: no numbers, no tests, no answer column.
    assert REGISTRY["task_accuracy"](["p"], ["<answer>3</answer>"]) == [None]


def test_task_accuracy_math_rows_and_kimi_correctness():
    pytest.importorskip("rewards.math")
    rows = dict(numbers=[[], [1, 2], [], []], target=[None, 3, None, None], answer=["4", "3", "4", "4"])
    completions = ["<answer>4</answer>", "<answer>3</answer>",
                   "<think>" + "x" * 20 + "</think><answer>4</answer>", "<answer>5</answer>"]
    fn = combine({"task_accuracy": 1.0, "kimi_length": 0.5})
    totals = fn(["q1", "q2", "q1", "q1"], completions, **rows)
    assert fn.last_breakdown["task_accuracy"] == [1.0, 0.0, 1.0, 0.0]
    # Group q1 lengths 18, 53, 18: correct short 0.5, correct long -0.5, wrong short min(0, 0.5) = 0.
    # Group q2 has one sample: max = min -> 0.
    assert fn.last_breakdown["kimi_length"] == pytest.approx([0.5, 0.0, -0.5, 0.0])
    assert totals == pytest.approx([1.25, 0.0, 0.75, 0.0])


def test_task_accuracy_code_rows_go_to_the_sandbox():
    pytest.importorskip("rewards.code")
    tests = "def check(candidate):\n    assert candidate(2) == 4\n    assert candidate(3) == 9\n"
    right = "<think>t</think><answer>\n```python\ndef sq(x):\n    return x * x\n```\n</answer>"
    wrong = "<think>t</think><answer>\n```python\ndef sq(x):\n    return x + x\n```\n</answer>"
    rows = dict(tests=[tests, tests], entry_point=["sq", "sq"], numbers=[[], []], answer=["", ""])
    out = REGISTRY["task_accuracy"](["p", "p"], [right, wrong], **rows)
    assert out[0] == 1.0 and out[1] < 1.0


def test_combine_accepts_reward_functions_named_by_their_name():
    def reward_model(prompts, completions, scale=1.0, **columns):
        return [scale * 0.25 * len(c) for c in completions]

    fn = combine({"countdown": 1.0, reward_model: 2.0})
    totals, breakdown = fn.with_breakdown(["p", "p"], [GOOD, BAD], numbers=[[1, 2], [1, 2]], target=[3, 3])
    n = len(GOOD)
    assert breakdown == {"countdown": [1.0, 0.0], "reward_model": [0.25 * n, 0.75]}
    assert totals == [1.0 + 0.5 * n, 1.5]
    assert fn.__name__ == "combined(countdown=1,reward_model=2)"
    # Options reach a function's term by its name; a function feeds `kimi_length` no correctness.
    scaled = combine({reward_model: 1.0}, options={"reward_model": {"scale": 2}})
    assert scaled(["p"], [BAD]) == [1.5]
    with pytest.raises(ValueError, match="needs per-sample correctness"):
        combine({"kimi_length": 1.0, reward_model: 1.0})(["p"], [GOOD])


def test_combine_refuses_unnamed_or_clashing_functions():
    def format(prompts, completions, **columns):  # noqa: A001 - the clash is the point
        return [1.0] * len(completions)

    with pytest.raises(ValueError, match="more than one term named 'format'"):
        combine({"format": 1.0, format: 1.0})
    with pytest.raises(ValueError, match="__name__"):
        combine({lambda p, c, **k: [1.0] * len(c): 1.0})
    import functools

    with pytest.raises(ValueError, match="__name__"):
        combine({functools.partial(format): 1.0})
