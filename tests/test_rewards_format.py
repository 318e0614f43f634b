"""The R1 format reward: strict structure, prefilled templates, and the soft tag-count variant."""

import pytest

from rewards.format import (
    answer_blocks,
    answer_text,
    check_format,
    completion_text,
    format_prefilled_reward,
    format_reward,
    response_region,
    split_response,
    tag_count_prefilled_reward,
    tag_count_reward,
    think_text,
)

GOOD = "<think>2 + 3 = 5</think> <answer>5</answer>"


def score(text, **kw):
    return format_reward(["p"], [text], **kw)[0]


@pytest.mark.parametrize(
    "text",
    [
        GOOD,
        "<think>a</think><answer>b</answer>",
        "\n  <think>\nline one\nline two\n</think>\n\n<answer>\n42\n</answer>\n",
        GOOD + "<|eos|>",
        GOOD + " <|eos|><|pad|><|pad|>",
        GOOD + "</s>",
        GOOD + "<|im_end|>\n",
        "<think>x < y and y > z</think> <answer>x < z</answer>",  # comparison signs are not tags
    ],
)
def test_well_formed_scores_one(text):
    assert score(text) == 1.0


@pytest.mark.parametrize(
    "text, reason",
    [
        ("<think>a</think> <answer>5</answer> So the answer is 5.", "text after </answer>"),
        ("<think>a</think> <answer>5</answer><|eos|> trailing", "text after </answer>"),
        ("<think>a</think> <answer></answer>", "empty answer"),
        ("<think>a</think> <answer>  \n </answer>", "empty answer"),
        ("<think>  </think> <answer>5</answer>", "empty think"),
        ("<think>a</think><think>b</think><answer>5</answer>", "exactly once"),
        ("<think>a</think><answer>5</answer><answer>6</answer>", "exactly once"),
        ("<think>a <answer>5</answer></think><answer>5</answer>", "exactly once"),
        ("<think>a <think>b</think> c</think><answer>5</answer>", "exactly once"),
        ("<answer>5</answer><think>a</think>", "out of order"),
        ("<think>a</answer> <answer>5</think>", "out of order"),
        ("Sure! <think>a</think> <answer>5</answer>", "text before <think>"),
        ("<think>a</think> so <answer>5</answer>", "between"),
        ("<think>a</think> <answer>5", "exactly once"),
        ("<think>a <answer>5</answer>", "exactly once"),
        ("<THINK>a</THINK> <answer>5</answer>", "malformed tag"),
        ("<think>a</think> <answer>5</ answer>", "malformed tag"),
        ("<think>a</think> <answer>5</answer> <Answer>6</Answer>", "malformed tag"),
        ("The answer is 5.", "exactly once"),
        ("", "exactly once"),
    ],
)
def test_malformed_scores_zero_with_reason(text, reason):
    assert score(text) == 0.0
    verdict = check_format(text)
    assert not verdict.ok and reason in verdict.reason


def test_prefilled_template_completion_starts_inside_think():
    completion = "2 + 3 = 5</think> <answer>5</answer><|eos|>"
    # The plain rule would reject every completion of a prefilled template: the trap this avoids.
    assert score(completion) == 0.0
    assert score(completion, think_prefilled=True) == 1.0
    assert format_prefilled_reward(["p"], [completion]) == [1.0]


def test_prefilled_rejects_a_second_think_and_missing_close():
    assert format_prefilled_reward(["p"], ["<think>again</think> <answer>5</answer>"]) == [0.0]
    assert "prompt already opened" in check_format("<think>x</think><answer>5</answer>", think_prefilled=True).reason
    assert format_prefilled_reward(["p"], ["no close <answer>5</answer>"]) == [0.0]
    assert format_prefilled_reward(["p"], ["</think> <answer>5</answer>"]) == [0.0]  # empty think


def test_chat_message_completions():
    conv = [{"role": "assistant", "content": GOOD}]
    assert format_reward(["p"], [conv]) == [1.0]
    parts = [{"role": "assistant", "content": [{"type": "text", "text": GOOD}]}]
    assert completion_text(parts) == GOOD
    mixed = [{"role": "user", "content": "ignore me"}, {"role": "assistant", "content": GOOD}]
    assert completion_text(mixed) == GOOD


def test_batch_shape_and_no_none():
    out = format_reward(["a", "b", "c"], [GOOD, "bad", GOOD + " x"])
    assert out == [1.0, 0.0, 0.0]


@pytest.mark.parametrize(
    "text, expected",
    [
        (GOOD, 1.0),
        (GOOD + " trailing text", 1.0),  # soft: placement only
        ("<think>a</think> no answer tags", 0.5),
        ("<think>a no close <answer>5</answer>", 0.75),
        ("<answer>5</answer>", 0.5),
        ("<think>a</think><think>b</think><answer>5</answer>", 0.5),  # repeated think: no credit for it
        ("<answer>5</answer><think>a</think>", 0.0),  # every tag out of order with another
        ("plain text", 0.0),
    ],
)
def test_tag_count_partial_credit(text, expected):
    assert tag_count_reward(["p"], [text]) == [expected]


def test_tag_count_prefilled_credits_the_prompt_tag():
    assert tag_count_prefilled_reward(["p"], ["a</think> <answer>5</answer>"]) == [1.0]
    assert tag_count_reward(["p"], ["a</think> <answer>5</answer>"]) == [0.75]


def test_strict_pass_implies_full_tag_count():
    for text in [GOOD, GOOD + "<|eos|>", "<think>a</think><answer>b</answer>"]:
        assert score(text) == 1.0 and tag_count_reward(["p"], [text]) == [1.0]


def test_split_response_parts():
    assert split_response(GOOD) == ("2 + 3 = 5", "5")
    assert split_response("prefilled</think><answer>x</answer>") == ("prefilled", "x")
    assert answer_text("<answer>1</answer><answer>2</answer>") is None  # a hedge is no answer
    assert answer_text("no tags") is None
    assert think_text("reasoning only <answer>5</answer>") == "reasoning only "
    assert think_text("no tags at all") == "no tags at all"


def test_the_answer_is_read_from_the_final_part_only():
    assert answer_text("<think>draft <answer>4</answer></think> <answer>5</answer>") == "5"
    assert answer_text("<think>draft <answer>4</answer></think> done") is None
    assert answer_text("<think>unclosed <answer>4</answer>") is None
    assert answer_text("<think>a</think> <think><answer>4</answer>") is None  # reopened reasoning
    for broken in ("<answer><answer>4</answer></answer>", "<answer>4</answer></answer>",
                   "<answer>4</answer><answer>5", "<answer>4"):
        assert answer_blocks(broken) is None and answer_text(broken) is None, broken
    assert answer_blocks("<answer>1</answer> and <answer>2</answer>") == ["1", "2"]
    assert answer_blocks("no tags") == []
    assert response_region("<think>a</think>b<think>c") == "b"


def test_long_padding_and_tag_floods_are_cheap():
    import time

    t0 = time.perf_counter()
    assert score(GOOD + "<|pad|> " * 200_000) == 1.0
    assert score("<think>" * 200_000) == 0.0
    assert tag_count_reward(["p"], ["<think></think>" * 200_000]) == [0.0]
    assert time.perf_counter() - t0 < 2.0
