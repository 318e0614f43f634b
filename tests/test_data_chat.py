"""Non-reasoning rows and preference pairs: correct replies, the right language, and rejected
responses that differ from the chosen one in the stated way."""

import random
import re

import pytest

from data import chat, preferences, splits
from data.problem import make_row
from rlpipe.tokenizer import ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.mark.parametrize("n,en,zh", [
    (0, "zero", "零"), (7, "seven", "七"), (10, "ten", "十"), (15, "fifteen", "十五"), (20, "twenty", "二十"),
    (47, "forty-seven", "四十七"), (105, "one hundred five", "一百零五"), (110, "one hundred ten", "一百一十"),
    (1010, "one thousand ten", "一千零一十"), (2003, "two thousand three", "二千零三"),
    (9999, "nine thousand nine hundred ninety-nine", "九千九百九十九"),
])
def test_number_words(n, en, zh):
    assert chat.number_to_english(n) == en
    assert chat.number_to_chinese(n) == zh


def test_nonreasoning_rows_answer_directly_in_the_prompt_language():
    rng = random.Random(0)
    kinds = set()
    for i in range(400):
        language = ("en", "zh")[i % 2]
        p, _ = chat.generate(rng, language)
        row = make_row(p, language, False, rng, "n")
        kinds.add(row["task"])
        think, answer = re.fullmatch(rf"{THINK_OPEN}\n(.+)\n{THINK_CLOSE} {ANSWER_OPEN}(.+)</answer>",
                                     row["solution"], re.S).groups()
        assert answer == row["answer"] and "\n" not in think  # one line, no working
        assert bool(CJK.search(think)) == (language == "zh")
        assert bool(CJK.search(row["prompt"])) == (language == "zh") or row["task"] == "translate"
        if row["task"] == "greeting" or p.key.startswith("number_words:to_words"):
            assert bool(CJK.search(row["answer"])) == (language == "zh")
        if p.key.startswith("formatting:sort_numbers"):
            nums = [int(v) for v in row["answer"].split()]
            assert nums == sorted(nums)
        if p.key.startswith("number_words:to_digits"):
            n = int(row["answer"])
            assert chat.number_to_english(n) in row["prompt"] or chat.number_to_chinese(n) in row["prompt"]
    assert kinds == {"number_words", "translate", "formatting", "greeting"}


def test_translation_pairs_go_both_ways():
    rng = random.Random(1)
    seen = set()
    for _ in range(200):
        p, _ = chat.generate(rng, "en")
        if p.task == "translate":
            direction = p.key.split(":")[1]
            seen.add(direction)
            assert bool(CJK.search(p.answer)) == (direction == "to_zh")
    assert seen == {"to_zh", "to_en"}


def test_preference_pairs_differ_in_the_stated_way():
    rng = random.Random(2)
    counts = {k: 0 for k in preferences.KINDS}
    for i in range(150):
        task = list(splits.FAMILIES)[i % 5]
        language = ("en", "zh")[i % 2]
        p, other = splits.training(rng, task, 1 + i % 4, 2, set())
        kind = preferences.KINDS[i % 3]
        row = preferences.pair(p, other, language, kind, rng)
        if row is None:
            continue
        counts[kind] += 1
        assert row["chosen"] != row["rejected"] and row["kind"] == kind
        chosen, rejected = row["chosen"], row["rejected"]
        assert chosen == make_row(p, language, False, random.Random(0), "x")["solution"]
        if kind == "wrong_answer":
            assert chosen.split(ANSWER_OPEN)[0] == rejected.split(ANSWER_OPEN)[0]  # same reasoning
        elif kind == "malformed":
            ok = re.fullmatch(r"<think>\n.*\n</think> <answer>.*</answer>", rejected, re.S)
            assert not ok
        else:
            other_script = (lambda t: CJK.search(t)) if language == "en" else (lambda t: re.search("[A-Za-z]{3,}", t))
            assert other_script(rejected.split(THINK_CLOSE)[0])
    assert all(v > 20 for v in counts.values()), counts
