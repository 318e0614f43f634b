"""Evaluation arithmetic: the pass@k estimator and the report table."""

import math

import pytest

from rlpipe.evaluate import EvalConfig, markdown_table, pass_at_k, pass_at_k_curve, per_cell


def test_pass_at_k_matches_the_combinatorial_definition():
    # n=4 samples, c=1 correct: P(at least one of 2 drawn is correct) = 1 - C(3,2)/C(4,2) = 1/2.
    assert pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert pass_at_k(4, 0, 4) == 0.0
    assert pass_at_k(4, 1, 4) == 1.0
    # pass@1 is the plain success rate.
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(16, 5, 8) == pytest.approx(1 - math.comb(11, 8) / math.comb(16, 8))


def test_pass_at_k_curve_over_powers_of_two_and_n():
    # Two prompts, n=6 samples: one solved in 1 of 6, one never. k = 1, 2, 4 and 6 (n itself).
    curve = pass_at_k_curve([1, 0], 6)
    assert list(curve) == ["1", "2", "4", "6"]
    assert curve["1"] == pytest.approx((1 / 6) / 2)            # the sampled success rate
    assert curve["2"] == pytest.approx((1 - 10 / 15) / 2)      # 1 - C(5,2)/C(6,2) for the first prompt
    assert curve["4"] == pytest.approx((1 - 5 / 15) / 2)       # 1 - C(5,4)/C(6,4)
    assert curve["6"] == pytest.approx(0.5)                    # the solved-ever share
    # Non-decreasing in k, and pass@n is the share of prompts with any correct sample.
    c = pass_at_k_curve([0, 3, 8, 1, 5], 8)
    assert list(c) == ["1", "2", "4", "8"] and c["8"] == pytest.approx(4 / 5)
    assert all(a <= b for a, b in zip(list(c.values()), list(c.values())[1:]))


def test_eval_config_rejects_k_above_samples():
    with pytest.raises(ValueError, match="n_samples"):
        EvalConfig(k=8, n_samples=4)
    with pytest.raises(ValueError, match="backend"):
        EvalConfig(backend="tgi")


def test_eval_config_coerces_mappings_and_objects():
    assert EvalConfig.coerce({"k": 2, "n_samples": 2, "unrelated": 1}).k == 2
    assert EvalConfig.coerce(None) == EvalConfig()


def test_markdown_table_has_a_row_per_task_and_a_column_per_level():
    result = {"overall": {"accuracy": 0.5, "pass_at_k": 0.75, "k": 4, "format_rate": 1.0,
                          "language_consistency": 0.9, "mixing_rate": 0.1, "mean_length": 42.0, "n": 4},
              "by_task": {"arithmetic": {"1": {"accuracy": 1.0, "pass_at_k": 1.0, "n": 2},
                                         "3": {"accuracy": 0.0, "pass_at_k": 0.5, "n": 1}},
                          "countdown": {"2": {"accuracy": 1.0, "pass_at_k": 1.0, "n": 1}}}}
    table = markdown_table(result)
    assert "| arithmetic | 1.00 / 1.00 (n=2) | - | 0.00 / 0.50 (n=1) |" in table
    assert "| countdown | - | 1.00 / 1.00 (n=1) | - |" in table
    assert "pass@4" in table
    assert "| 42.0 | - | 4 |" in table  # no slip rate in an eval.json written before it existed
    result["overall"]["slip_rate"] = 0.125
    assert "| 42.0 | 0.125 | 4 |" in markdown_table(result)
    assert "pass@k over" not in table
    result["overall"].update(n_samples=4, pass_at_k_curve={"1": 0.5, "2": 0.625, "4": 0.75})
    assert "pass@k over 4 samples a prompt: pass@1 0.500, pass@2 0.625, pass@4 0.750" in markdown_table(result)


def test_per_cell_counts_mixed_groups_per_task_and_level():
    rows = [{"task": "countdown", "difficulty": 1}] * 3 + [{"task": "countdown", "difficulty": 4}] * 2
    # Correct samples out of 4 per prompt: all, some, none | some, none.
    cells = per_cell(rows, [True, True, False, False, False], [4, 1, 0, 2, 0], n_samples=4, k=2)
    easy, hard = cells["countdown"]["1"], cells["countdown"]["4"]
    assert easy["accuracy"] == pytest.approx(2 / 3) and easy["n"] == 3
    assert easy["mixed_groups"] == pytest.approx(1 / 3)  # only the prompt with 1 of 4 right
    assert easy["pass_at_k"] == pytest.approx((1.0 + pass_at_k(4, 1, 2) + 0.0) / 3)
    assert hard["accuracy"] == 0.0 and hard["mixed_groups"] == pytest.approx(0.5)
    assert list(cells["countdown"]) == ["1", "4"]


def test_markdown_table_shows_mixed_groups_when_present():
    result = {"overall": {"accuracy": 0.5, "pass_at_k": 0.75, "k": 4, "format_rate": 1.0,
                          "language_consistency": 0.9, "mixing_rate": 0.1, "mean_length": 42.0, "n": 2},
              "config": {"n_samples": 8},
              "by_task": {"equations": {"4": {"accuracy": 0.0, "pass_at_k": 0.5, "mixed_groups": 0.25, "n": 2}}}}
    table = markdown_table(result)
    assert "| equations | 0.00 / 0.50 / 0.25 (n=2) |" in table and "8 samples" in table


def test_majority_vote_grades_the_most_frequent_answer():
    from rlpipe.evaluate import majority_correct

    texts = ["<think>a</think> <answer>47</answer>", "<think>b</think> <answer> 47 </answer>",
             "<think>c</think> <answer>192</answer>", "no answer at all", "no answer either", "still none"]
    correct = [True, True, False, False, False, False]
    assert majority_correct(texts, correct)  # 47 twice beats 192 once; answerless samples do not vote
    assert not majority_correct(texts[2:], correct[2:])
    assert not majority_correct(["x", "y"], [False, False])  # nobody answered
    tie = ["<think>a</think> <answer>192</answer>", "<think>b</think> <answer>47</answer>"]
    assert not majority_correct(tie, [False, True])  # a tie goes to the answer seen first


def test_per_cell_and_table_carry_maj_at_n():
    rows = [{"task": "arithmetic", "difficulty": 1}] * 2
    cells = per_cell(rows, [True, False], [3, 1], n_samples=4, k=2, majority=[True, False])
    assert cells["arithmetic"]["1"]["maj_at_n"] == 0.5
    result = {"overall": {"accuracy": 0.5, "pass_at_k": 0.75, "k": 4, "maj_at_n": 0.625, "n_samples": 8,
                          "format_rate": 1.0, "language_consistency": 0.9, "mixing_rate": 0.1, "mean_length": 42.0,
                          "n": 2}, "by_task": {}}
    table = markdown_table(result)
    assert "maj@8" in table and "| 0.500 | 0.750 | 0.625 |" in table
