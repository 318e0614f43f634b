"""Length shaping: Kimi k1.5 group length penalty, DAPO overlong punishment, n-gram repetition.
Expected values are computed by hand from the formulas in recipes.md sections 2 and 4."""

import pytest

from rewards.length import (
    kimi_length_penalty,
    kimi_length_reward,
    overlong_penalty,
    overlong_reward,
    repetition_penalty,
    repetition_reward,
)


def test_kimi_penalty_hand_computed():
    # min 100, max 300: lambda = 0.5 - (len - 100) / 200
    #   len 100 -> 0.5, 150 -> 0.25, 200 -> 0.0, 300 -> -0.5
    lengths = [100, 150, 200, 300, 150, 300]
    correct = [True, True, True, True, False, False]
    assert kimi_length_penalty(lengths, correct) == pytest.approx([0.5, 0.25, 0.0, -0.5, 0.0, -0.5])


def test_kimi_wrong_answers_never_gain():
    # A short wrong answer has lambda 0.5 but gets min(0, 0.5) = 0.
    assert kimi_length_penalty([10, 30], [False, False]) == [0.0, -0.5]


def test_kimi_equal_lengths_give_zero():
    assert kimi_length_penalty([7, 7, 7], [True, False, True]) == [0.0, 0.0, 0.0]


def test_kimi_reward_groups_by_group_ids():
    completions = ["a" * 10, "a" * 30, "a" * 20, "a" * 5, "a" * 15]
    out = kimi_length_reward(
        ["p"] * 5, completions,
        group_ids=[0, 0, 0, 1, 1],
        correct=[True, True, False, True, False],
    )
    # Group 0: min 10 max 30 -> 0.5, -0.5, min(0, 0.0)=0.0. Group 1: min 5 max 15 -> 0.5, min(0,-0.5).
    assert out == pytest.approx([0.5, -0.5, 0.0, 0.5, -0.5])


def test_kimi_reward_groups_by_prompt_or_id_when_no_group_ids():
    prompts = ["q1", "q2", "q1", "q2"]
    lengths = [100, 10, 200, 20]
    out = kimi_length_reward(prompts, ["x"] * 4, correct=[1.0, 1.0, 1.0, 0.0], completion_lengths=lengths)
    assert out == pytest.approx([0.5, 0.5, -0.5, -0.5])
    # The `id` column wins over prompt text: here all four are one group (min 10, max 200).
    out = kimi_length_reward(prompts, ["x"] * 4, correct=[True] * 4, completion_lengths=lengths,
                             id=["same"] * 4)
    assert out == pytest.approx([0.5 - 90 / 190, 0.5, -0.5, 0.5 - 10 / 190])


def test_kimi_token_lengths_from_completion_ids():
    out = kimi_length_reward(["p", "p"], ["long text here", "x"], correct=[True, True],
                             completion_ids=[[1, 2], [1, 2, 3, 4]])
    assert out == [0.5, -0.5]  # token counts, not characters, decide


def test_kimi_correctness_values_and_not_applicable():
    # Partial code credit (0.5) is not correct; None is not applicable but its length still counts.
    out = kimi_length_reward(["p"] * 3, ["x"] * 3, correct=[0.5, None, 1.0], completion_lengths=[0, 10, 20])
    assert out == [0.0, None, -0.5]


def test_kimi_without_correctness_is_a_clear_error():
    with pytest.raises(ValueError, match="correct"):
        kimi_length_reward(["p"], ["x"])


@pytest.mark.parametrize(
    "length, expected",
    [(0, 0.0), (768, 0.0), (769, -1 / 256), (896, -0.5), (1024, -1.0), (1025, -1.0), (5000, -1.0)],
)
def test_dapo_overlong_hand_computed(length, expected):
    # L_max 1024, cache 256: free up to 768, linear to -1 at 1024, -1 beyond.
    assert overlong_penalty(length, 1024, 256) == pytest.approx(expected)


def test_dapo_overlong_reward_needs_token_lengths():
    assert overlong_reward(["p"] * 2, ["a", "b"], max_length=20, cache_length=10,
                           completion_lengths=[5, 15]) == [0.0, -0.5]
    assert overlong_reward(["p"], ["a"], max_length=20, cache_length=10,
                           completion_ids=[list(range(25))]) == [-1.0]
    with pytest.raises(ValueError, match="completion_ids"):
        overlong_reward(["p"], ["a"], max_length=20, cache_length=10)
    with pytest.raises(ValueError, match="cache_length"):
        overlong_penalty(5, 10, 0)


def test_repetition_hand_computed():
    # 6 words -> 4 trigrams: (a b c) (b c a) (c a b) (a b c): 3 distinct of 4 -> -(1 - 3/4).
    assert repetition_penalty("a b c a b c", ngram_size=3) == pytest.approx(-0.25)
    # No repeated trigram -> 0.
    assert repetition_penalty("one two three four five", ngram_size=3) == 0.0
    # Too short for one n-gram -> 0.
    assert repetition_penalty("one two", ngram_size=3) == 0.0
    # "go go go go go" bigrams: 4, distinct 1 -> max_penalty * 3/4.
    assert repetition_penalty("go go go go go", ngram_size=2, max_penalty=-2.0) == pytest.approx(-1.5)


def test_repetition_counts_han_characters_and_ignores_case_and_punctuation():
    # 我 爱 我 爱: bigrams (我爱)(爱我)(我爱): 2 distinct of 3.
    assert repetition_penalty("我爱我爱", ngram_size=2) == pytest.approx(-1 / 3)
    assert repetition_penalty("Wait, wait. WAIT!", ngram_size=1) == pytest.approx(-2 / 3)


def test_repetition_reward_degenerate_loop_is_punished_hardest():
    loop = "<think>" + "Let me check again. " * 50 + "</think><answer>1</answer>"
    fresh = "<think>First add the numbers, then divide by two and round.</think><answer>1</answer>"
    loop_score, fresh_score = repetition_reward(["p", "p"], [loop, fresh])
    assert fresh_score == 0.0
    assert loop_score < -0.9
