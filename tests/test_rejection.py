"""The stage-3 rejection filter on hand-made completions: one kept, and one dropped for each reason.

Rows are in the data builder's schema (arithmetic, countdown, a HumanEval-style code row graded in
the real sandbox); the completions are what a policy writes, right and wrong.
"""

import pytest

from rlpipe.rejection import (RejectionConfig, diverse_subset, funnel, funnel_table, nonreasoning_rows,
                              rejection_rows, repetition_share, select)

MATH = {"id": "rl-arith-1", "prompt": "Compute 29 + 3 * 6.", "answer": "47", "task": "arithmetic",
        "difficulty": 2, "language": "en", "tests": "", "entry_point": "", "numbers": [], "target": None}
MATH_ZH = {**MATH, "id": "rl-arith-zh", "prompt": "计算 29 + 3 * 6。", "language": "zh"}
COUNTDOWN = {"id": "rl-cd-1", "prompt": "Reach 16 with the numbers 5, 2, 6, each used exactly once, using +, -, * "
             "and /.", "answer": "5 * 2 + 6", "task": "countdown", "difficulty": 2, "language": "en", "tests": "",
             "entry_point": "", "numbers": [5, 2, 6], "target": 16}
CODE = {"id": "rl-code-1", "prompt": "Write a Python function `double(nums)` that returns each number times 2.",
        "answer": "", "task": "code", "difficulty": 1, "language": "en",
        "tests": "def check(candidate):\n    assert candidate([1, 2]) == [2, 4]\n    assert candidate([]) == []\n",
        "entry_point": "double", "numbers": [], "target": None}

GOOD = "<think>\n3 * 6 = 18. Then 29 + 18 = 47.\n</think> <answer>47</answer>"
GOOD_OTHER_WAY = "<think>\nMultiply first: 3 times 6 is 18, and adding 29 gives 47.\n</think> <answer>47</answer>"
WRONG = "<think>\n29 + 3 = 32, 32 * 6 = 192.\n</think> <answer>192</answer>"
ECHO = "<think>\nThe expression is the answer.\n</think> <answer>29 + 3 * 6</answer>"
MALFORMED = "3 * 6 = 18. Then 29 + 18 = 47. <answer>47</answer>"
MIXED = "<think>\n先算乘法 3 * 6 = 18，然后 29 + 18 = 47，所以答案是四十七。\n</think> <answer>47</answer>"
REPETITIVE = "<think>\n" + "3 * 6 = 18 and 29 + 18 = 47 so " * 12 + "\n</think> <answer>47</answer>"
CUT = "<think>\n3 * 6 = 18. Then 29 + 18 = 47.\n</think> <answer>47</answer>"  # same text, but flagged as cut
CD_GOOD = "<think>\n5 * 2 = 10, 10 + 6 = 16.\n</think> <answer>5 * 2 + 6</answer>"
CD_REUSE = "<think>\n6 + 6 + 2 + 2 = 16.\n</think> <answer>6 + 6 + 2 + 2</answer>"
CODE_GOOD = "<think>\nMultiply each number by 2.\n</think> <answer>def double(nums):\n    return [2 * n for n in nums]</answer>"
CODE_CONST = "<think>\nReturn the example.\n</think> <answer>def double(nums):\n    return [2, 4]</answer>"


def verdicts_for(rows, groups, truncated=None, **cfg):
    cfg = RejectionConfig(**cfg)
    lengths = [[len(t.split()) for t in g] for g in groups]
    truncated = truncated or [[False] * len(g) for g in groups]
    return select(rows, groups, lengths, truncated, cfg)


def test_each_reason_to_drop_and_the_one_to_keep():
    groups = [[GOOD, WRONG, ECHO, MALFORMED, MIXED, REPETITIVE, CUT]]
    truncated = [[False, False, False, False, False, False, True]]
    v = verdicts_for([MATH], groups, truncated)
    assert [x.reason for x in v] == ["", "wrong", "wrong", "malformed", "mixed_language", "repetitive", "overlong"]
    assert [x.stage for x in v] == ["kept", "sampled", "sampled", "correct", "well_formed", "well_formed",
                                    "well_formed"]
    assert v[0].correct and v[0].format == 1.0 and v[0].language == pytest.approx(1.0)


def test_chinese_prompt_keeps_a_chinese_trace_and_drops_an_english_one():
    zh = "<think>\n先算乘法：3 * 6 = 18，再算加法：29 + 18 = 47。\n</think> <answer>47</answer>"
    v = verdicts_for([MATH_ZH], [[zh, GOOD]])
    assert [x.reason for x in v] == ["", "mixed_language"]


def test_countdown_and_code_use_their_own_graders():
    v = verdicts_for([COUNTDOWN, CODE], [[CD_GOOD, CD_REUSE], [CODE_GOOD, CODE_CONST]])
    assert [x.reason for x in v] == ["", "wrong", "", "wrong"]
    assert [x.row for x in v] == [0, 0, 1, 1] and [x.sample for x in v] == [0, 1, 0, 1]


def test_cap_per_prompt_prefers_the_shortest_then_the_most_different():
    near_copy = GOOD.replace("Then", "And then")  # one word longer, same words
    v = verdicts_for([MATH], [[GOOD_OTHER_WAY, near_copy, GOOD, GOOD]], keep_per_prompt=2)
    kept = [x.sample for x in v if x.stage == "kept"]
    # GOOD (shortest) first; its exact duplicate is dropped; GOOD_OTHER_WAY shares fewer words than near_copy.
    assert kept == [0, 2]
    assert [x.reason for x in v] == ["", "over_per_prompt_cap", "", "duplicate"]


def test_max_length_drops_long_but_finished_samples():
    v = verdicts_for([MATH], [[GOOD, GOOD_OTHER_WAY]], max_length=14)
    assert [x.reason for x in v] == ["", "overlong"]


def test_diverse_subset_edge_cases():
    assert diverse_subset([], [], 3) == []
    assert diverse_subset(["a b", "a b", " a b "], [2, 2, 2], 3) == [0]
    assert diverse_subset(["x y z", "x y", "p q"], [3, 2, 2], 2) == [1, 2]


def test_repetition_share():
    assert repetition_share("one two three four five") == 0.0
    assert repetition_share("a b c " * 20) > 0.9


def test_funnel_counts_every_stage_reached_and_the_rows_carry_provenance():
    rows = [MATH, COUNTDOWN]
    v = verdicts_for(rows, [[GOOD, WRONG, MALFORMED], [CD_GOOD, CD_REUSE, CD_GOOD]])
    f = funnel(rows, v)
    assert f["overall"] == {"sampled": 6, "correct": 4, "well_formed": 3, "clean": 3, "kept": 2}
    assert f["by_cell"]["arithmetic/2"] == {"sampled": 3, "correct": 2, "well_formed": 1, "clean": 1, "kept": 1}
    assert f["dropped"] == {"duplicate": 1, "malformed": 1, "wrong": 2}
    assert f["prompts_with_a_kept_sample"] == 2
    assert "| all | 6 | 4 | 3 | 3 | 2 | 0.33 |" in funnel_table(f)
    out = rejection_rows(rows, v, source="runs/x/stage-2")
    assert [r["id"] for r in out] == ["rl-arith-1", "rl-cd-1"]
    assert out[0]["solution"] == GOOD and out[0]["source"] == "runs/x/stage-2"
    assert out[0]["origin"] == "rejection_sampling" and out[0]["sample_index"] == 0
    assert out[0]["reward_accuracy"] == 1.0 and out[0]["reward_format"] == 1.0


def test_nonreasoning_share():
    rows = [{"id": f"n{i}", "prompt": "p", "solution": "s"} for i in range(100)]
    picked = nonreasoning_rows(rows, n_reasoning=80, share=0.2, seed=0, source="d")
    assert len(picked) == 20 and len({r["id"] for r in picked}) == 20
    assert all(r["origin"] == "nonreasoning" and r["reward_accuracy"] is None for r in picked)
    assert nonreasoning_rows(rows, 80, 0.2, 0, "d") == picked  # seeded
    assert len(nonreasoning_rows(rows, n_reasoning=1000, share=0.5, seed=0, source="d")) == 100  # all at most
    assert nonreasoning_rows(rows, 80, 0.0, 0, "d") == []


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="nonreasoning_share"):
        RejectionConfig(nonreasoning_share=1.0)
    with pytest.raises(ValueError, match="keep_per_prompt"):
        RejectionConfig(keep_per_prompt=0)
