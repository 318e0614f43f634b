"""R1 language-consistency reward: target share of CoT words, neutral tokens, detection, mixing."""

import time

import pytest

from rewards.language import (
    count_language,
    detect_language,
    is_language_mixed,
    iter_words,
    language_consistency,
    language_reward,
    normalize_language,
)

EN = ("First, we need to find the value such that the equation holds. Since the sum of the roots "
      "equals negative b over a, we can conclude that there are exactly two solutions.")
FR = ("D'abord, nous devons trouver la valeur telle que l'équation soit vérifiée. Puisque la somme "
      "des racines est égale à moins b sur a, nous pouvons conclure qu'il y a exactement deux solutions.")
DE = ("Zuerst müssen wir den Wert finden, sodass die Gleichung gilt. Da die Summe der Wurzeln gleich "
      "minus b durch a ist, können wir schließen, dass es genau zwei Lösungen gibt.")
ZH = "首先我们需要求出方程的解，然后验证答案是否正确。"


def reward(cot, language=None, prompt="p"):
    return language_reward([prompt], [f"<think>{cot}</think> <answer>1</answer>"],
                           language=None if language is None else [language])[0]


def test_pure_english_and_chinese_score_one():
    assert reward(ZH, "zh") == 1.0
    assert reward("Let us add the two numbers and check the result.", "en") == 1.0


def test_chinese_counts_per_han_character():
    # 6 Han characters + 2 English words: 6/8 for zh, 2/8 for en.
    cot = "我们计算一下 then check"
    assert reward(cot, "zh") == pytest.approx(6 / 8)
    assert reward(cot, "en") == pytest.approx(2 / 8)


def test_numbers_math_and_code_are_neutral():
    cot = ("设 x = 3, 则 $x^2 + 1 = 10$, 且 \\frac{a}{b} 用 `print(x)` 与 sqrt(2), "
           "sin x, my_var, camelCase, x1, np.array 检查 123 ```\nfor i in range(3): pass\n```")
    c = count_language(cot, "zh")
    assert c.foreign == 0, c.foreign_words
    assert c.target == 7  # 设 则 且 用 与 检 查: only the Han characters count
    assert reward(cot, "zh") == 1.0


def test_no_words_is_none():
    assert reward("123 + 456 = 579, $x^2$", "en") is None
    assert reward("", "zh") is None
    assert language_consistency("x = y + 2", "en") is None


def test_same_script_languages_are_told_apart():
    assert language_consistency(EN, "en") >= 0.9
    assert language_consistency(FR, "fr") >= 0.9
    assert language_consistency(DE, "de") >= 0.9
    assert language_consistency(FR, "en") <= 0.2
    assert language_consistency(DE, "en") <= 0.2
    assert language_consistency(EN, "fr") <= 0.2


def test_english_sentence_inside_french_cot_lowers_the_share():
    mixed = FR + " " + EN
    share = language_consistency(mixed, "fr")
    assert 0.35 < share < 0.65


def test_target_from_column_overrides_detection_and_detection_uses_the_question():
    cot = "we compute the sum"
    assert reward(cot, "zh") == 0.0
    # R1-Zero template text is English; the question inside it is Chinese.
    prompt = "A conversation between User and Assistant. ... User: 求方程的解。 Assistant:"
    assert reward(cot, None, prompt=prompt) == 0.0
    chat = [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": "计算两数之和"}]
    assert reward("首先相加", None, prompt=chat) == 1.0
    assert reward("first add them", None, prompt="<|user|>Add 2 and 3.<|assistant|>") == 1.0


@pytest.mark.parametrize(
    "text, expected",
    [(EN, "en"), (FR, "fr"), (DE, "de"), (ZH, "zh"), ("xの値を求めなさい", "ja"),
     ("Найдите значение выражения", "ru"), ("", "en"), ("12 + 3", "en")],
)
def test_detect_language(text, expected):
    assert detect_language(text) == expected


def test_language_codes_are_normalised_and_unknown_is_a_clear_error():
    assert normalize_language("EN") == "en"
    assert normalize_language("zh-CN") == "zh"
    assert normalize_language("zh_Hans") == "zh"
    with pytest.raises(ValueError, match="language column|'language'"):
        reward("hello world", "klingon")


def test_other_scripts_are_foreign():
    assert reward("we check Найдите", "en") == pytest.approx(2 / 3)
    assert reward("확인 check", "ko") == pytest.approx(1 / 2)


def test_is_language_mixed():
    assert not is_language_mixed(f"<think>{EN}</think><answer>1</answer>", "en")
    assert is_language_mixed(f"<think>{EN} 所以答案是</think><answer>1</answer>", "en")
    assert is_language_mixed(f"<think>{ZH} so the final answer is</think><answer>1</answer>", "zh")
    assert not is_language_mixed(f"<think>{ZH}</think><answer>1</answer>")  # detected from the CoT
    assert not is_language_mixed("<think>1 + 1 = 2</think><answer>2</answer>", "en")  # no words
    # Only the CoT counts: an English answer block does not make a Chinese CoT mixed.
    assert not is_language_mixed(f"<think>{ZH}</think><answer>the answer is two</answer>", "zh")


def test_threshold_controls_mixing():
    text = f"<think>{EN} 答</think>"  # one foreign character among ~28 English words
    assert is_language_mixed(text, "en", threshold=0.99)
    assert not is_language_mixed(text, "en", threshold=0.9)


def test_tokens_carry_scripts():
    tokens = list(iter_words("值为3 and x1"))
    assert tokens == [("值", "Han"), ("为", "Han"), ("3", None), ("and", "Latin"), ("x1", None)]


def test_fast_enough_for_rollout_batches():
    reward(EN, "en")  # warm the word-list cache
    batch = [f"<think>{EN * 20}</think><answer>1</answer>"] * 64
    t0 = time.perf_counter()
    out = language_reward(["p"] * 64, batch, language=["en"] * 64)
    elapsed = time.perf_counter() - t0
    assert all(v >= 0.9 for v in out)
    assert elapsed < 2.0, f"{elapsed:.2f}s for 64 CoTs of ~580 words"


@pytest.mark.parametrize("hostile", ["\\[" * 100_000, "$$" * 100_000 + "$", "`" * 100_000, "\\(" * 100_000 + "a b"])
def test_unclosed_math_and_code_openers_cost_linear_time(hostile):
    t0 = time.perf_counter()
    reward(hostile + " we check", "en")
    assert time.perf_counter() - t0 < 2.0  # a lazy-regex span matcher took 15 s on the first


def test_typeset_math_and_code_spans_are_dropped_but_unclosed_inline_ones_are_not():
    c = count_language("we $x + y$ check `foo bar` the \\[ a \\] sum ```\ncode here\n``` and cost $5\nonly", "en")
    assert c.foreign == 0
    # we, check, the, sum, and, cost, only: the `$5\n` does not open a span across the newline.
    assert c.target == 7
