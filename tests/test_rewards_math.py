"""Math accuracy reward: extraction, equivalence, false-positive traps, security and bounded cost.

The labelled pairs live in tests/data/math_cases_equal.jsonl, math_cases_heldout.jsonl,
math_cases_heldout2.jsonl (pred, gold, equal, tag; the two held-out files were written and labelled
by mathematical truth before the checker was run on them), math_cases_forms.jsonl (answer forms of
public datasets by category; `extract: true` rows hold a whole response read with the broad
extraction, `ordered: true` rows ask for an ordered list, `asymmetric: true` rows follow the
gold-precision rule, which depends on which side is the gold) and tests/data/math_cases_extract.jsonl
(text, answer, tag); the bench scores the same pairs.
Inputs too large or too binary for a JSONL file (5,000 nested brackets, 1 MB strings, NUL bytes)
are built here.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import pathlib
import random
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from rewards import _math_worker
from rewards.math import accuracy_reward, explain, extract_answer, is_number, math_equal

DATA = pathlib.Path(__file__).parent / "data"
REPO = pathlib.Path(__file__).resolve().parents[1]


def _load(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


EQUAL_CASES = [c for path in sorted(DATA.glob("math_cases*.jsonl")) for c in _load(path.name) if "pred" in c]
EXTRACT_CASES = _load("math_cases_extract.jsonl")


def test_case_files_are_large_and_balanced():
    assert len(EQUAL_CASES) + len(EXTRACT_CASES) >= 300
    positives = sum(c["equal"] for c in EQUAL_CASES)
    # enough of both labels that a checker answering always True or always False fails badly
    assert 0.3 < positives / len(EQUAL_CASES) < 0.8


@pytest.mark.parametrize("case", EQUAL_CASES, ids=lambda c: f"{c['tag']}:{c['pred'][:30]}|{c['gold'][:20]}")
def test_labelled_pairs(case):
    pred = extract_answer(case["pred"], broad=True) if case.get("extract") else case["pred"]
    verdict = explain(pred, case["gold"], ordered=bool(case.get("ordered")))
    assert verdict["equal"] is case["equal"], verdict


@pytest.mark.parametrize("case", EXTRACT_CASES, ids=lambda c: f"{c['tag']}:{c['text'][:40]}")
def test_labelled_extraction(case):
    assert extract_answer(case["text"]) == case["answer"]


# --- the false-positive traps named in the issue ------------------------------------------------

@pytest.mark.parametrize("pred,gold", [
    ("0.0000001", "0.0000002"),
    ("1/2004!", "1/2006!"),
    ("\\frac{1}{2004!}", "\\frac{1}{2006!}"),
    ("1/2^{99}", "1/2^{98}"),
    ("1000000", "1000001"),
    ("\\pi", "\\frac{355}{113}"),       # agrees to 7 digits, but both sides are exact
])
def test_near_misses_are_not_equal(pred, gold):
    assert not math_equal(pred, gold)
    assert not math_equal(gold, pred)


def test_tolerance_is_relative_not_absolute_rounding():
    # a decimal approximating an exact value is accepted within 1e-6 relative ...
    assert math_equal("0.3333333", "1/3")
    assert math_equal("3.14159265", "\\pi")
    # ... at any magnitude, where absolute rounding to 6 places would call these equal or not
    assert math_equal("1.5777218e-30", "1/2^{99}")
    assert not math_equal("1.5777218e-30", "1/2^{98}")
    assert math_equal("1.2676506e30", "2^{100}")
    assert not math_equal("1.2676e30", "2^{100}")


def _render(q, style: int, rng) -> str:
    """One exact rational written in one of several notations (all exact, no rounding)."""
    from fractions import Fraction
    sign = "-" if q < 0 else ""
    a = abs(q)
    if style == 0 or (style in (1, 3) and 10**12 % a.denominator):
        return f"{sign}\\frac{{{a.numerator}}}{{{a.denominator}}}" if a.denominator != 1 else f"{q}"
    if style == 1:                                   # terminating decimal, exact
        digits = 12
        text = f"{a.numerator * 10**digits // a.denominator}".rjust(digits + 1, "0")
        return f"{sign}{text[:-digits]}.{text[-digits:]}"
    if style == 2:                                   # a/b with a common factor
        k = rng.randint(2, 9)
        return f"{sign}{a.numerator * k}/{a.denominator * k}"
    if style == 3:                                   # scientific notation
        m = a * 10**12
        return f"{sign}{m.numerator // m.denominator} \\times 10^{{-12}}"
    whole, frac = divmod(a.numerator, a.denominator)   # mixed number
    if whole and frac:
        return f"{sign}{whole}\\frac{{{frac}}}{{{a.denominator}}}"
    return f"{sign}\\dfrac{{{a.numerator}}}{{{a.denominator}}}"


def test_random_rationals_in_many_notations_match_exactly():
    from fractions import Fraction
    rng = random.Random(1)
    for _ in range(600):
        den = rng.choice([1, 2, 4, 5, 8, 10, 16, 25, 3, 7, 12, 1000])
        a = Fraction(rng.randint(-5000, 5000), den)
        b = a if rng.random() < 0.5 else a + Fraction(rng.choice([1, -1]), rng.choice([den, 10**6, 2**40]))
        pa, gb = _render(a, rng.randrange(5), rng), _render(b, rng.randrange(5), rng)
        # the documented rule: exact, except a lone written decimal gets a relative 1e-6, and a
        # plain decimal gold (`12.5`, not `125 \times 10^{-1}`) holds the prediction to its last place
        one_decimal = ("." in pa) != ("." in gb)
        expected = a == b or (one_decimal and abs(a - b) < Fraction(1, 10**6) * max(abs(a), abs(b)))
        if expected and a != b and "." in gb and "times" not in gb:
            expected = abs(a - b) <= Fraction(1, 2 * 10 ** len(gb.partition(".")[2]))
        assert math_equal(pa, gb) is expected, (pa, gb, a, b)


def test_random_factored_vs_expanded_polynomials():
    rng = random.Random(2)
    for _ in range(40):
        a, b, c = (rng.randint(-9, 9) for _ in range(3))
        k = c if c not in (0, 1) else 2
        factored = f"{k}(x + {a})(x + {b})".replace("+ -", "- ")
        expanded = f"{k}x^2 + {k * (a + b)}x + {k * a * b}".replace("+ -", "- ")
        assert math_equal(factored, expanded), (factored, expanded)
        off_by_one = f"{k}x^2 + {k * (a + b)}x + {k * a * b + 1}".replace("+ -", "- ")
        assert not math_equal(factored, off_by_one), (factored, off_by_one)


def test_symmetric_on_all_labelled_pairs_sample():
    for case in EQUAL_CASES[::7]:
        if case.get("extract") or case.get("asymmetric"):
            continue            # a response is not a gold; the precision rule reads the gold's digits
        assert math_equal(case["gold"], case["pred"], ordered=bool(case.get("ordered"))) is case["equal"], case


# --- security and bounded cost -------------------------------------------------------------------

def test_no_eval_sympify_or_parse_expr_in_the_checker():
    for name in ("math.py", "_math_extract.py", "_math_parse.py", "_math_worker.py"):
        code = (REPO / "rewards" / name).read_text()
        code = re.sub(r'"""(?s:.*?)"""', "", code)          # docstrings may name them
        code = re.sub(r"#.*", "", code)
        for banned in (r"(?<![\w.])eval\(", r"(?<![\w.])exec\(", r"(?<![\w.])compile\(",
                       r"__import__", r"sympify", r"parse_expr", r"parse_latex", r"S\(", r"pickle"):
            assert not re.search(banned, code), f"{name} uses {banned}"


def test_injection_strings_do_not_run(tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        f"__import__('os').system('touch {marker}')",
        f"exec(\"open('{marker}', 'w')\")",
        f"\\boxed{{__import__('os').system('touch {marker}')}}",
        f"x = __import__('subprocess').call(['touch', '{marker}'])",
    ]
    for p in payloads:
        assert math_equal(p, "0") is False
        explain(p, p)  # identical text is allowed to match, but must not execute anything
    assert not marker.exists()


@pytest.mark.parametrize("pred,gold", [
    ("10**10**10", "1"),
    ("10**10**10", "10**10**11"),
    ("9^{9^{9^9}}", "9^{9^{9^9}}+1"),
    ("2^{2^{2^{2^{2^{2}}}}}", "3"),
    ("(10^{10})!", "1"),
    ("\\frac{1}{10^{10^{10}}}", "0"),
    ("x^{10^{10}}", "x^{10^{10}}+1"),
    ("\\binom{10^{9}}{5 \\cdot 10^{8}}", "1"),
    ("1e999999999", "1"),
    ("9" * 1500, "9" * 1499),
])
def test_huge_values_are_refused_fast(pred, gold):
    start = time.monotonic()
    assert math_equal(pred, gold) is False
    assert time.monotonic() - start < 1.0


def test_identical_huge_towers_still_match():
    assert math_equal("9^{9^{9^9}}", "9^{9^{9^9}}")
    assert math_equal("10^{10^{10}}", "10^{10^{10}}")


def test_deep_nesting_and_megabyte_inputs_are_bounded():
    cases = [
        ("(" * 5000 + "1" + ")" * 5000, "1"),
        ("{" * 5000 + "1" + "}" * 5000, "1"),
        ("\\sqrt{" * 3000 + "2" + "}" * 3000, "2"),
        ("1" * 1_000_000, "1" * 1_000_000),
        ("x+" * 500_000 + "x", "x"),
        ("\\frac{" * 200_000, "1"),
    ]
    for pred, gold in cases:
        start = time.monotonic()
        assert math_equal(pred, gold) is False
        assert time.monotonic() - start < 1.0
    texts = ["<answer>" * 125_000, "\\boxed{" * 140_000, "x" * 1_000_000 + "\\boxed{5}",
             "<answer>1</answer>" * 50_000]
    for text in texts:
        start = time.monotonic()
        extract_answer(text)
        assert time.monotonic() - start < 1.0
    assert extract_answer("x" * 1_000_000 + "\\boxed{5}") == "5"


@pytest.mark.parametrize("pred", ["5\x00", "\x005", "5\x00 + 1", "\x00", "5\x1b[31m", "\x7f5"])
def test_control_characters_are_rejected(pred):
    assert math_equal(pred, "5") is False
    assert explain(pred, "5")["rule"] == "parse-failure"


def test_never_raises_on_random_token_soup():
    rng = random.Random(0)
    alphabet = ["1", "2", "0.5", "x", "y", "+", "-", "*", "/", "^", "(", ")", "[", "]", "{", "}",
                "\\frac", "\\sqrt", "\\pi", "e", "i", ",", "=", "<", "!", "\\left(", "\\right)",
                "\\{", "\\}", "\\cup", "\\infty", "\\text{cm}", "\\%", "|", "&", "\\\\", " ",
                "\\begin{pmatrix}", "\\end{pmatrix}", "\\boxed{", "$", "_", "\\sin", "\\log", "'"]
    start = time.monotonic()
    for _ in range(300):
        a = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 14)))
        b = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 6)))
        assert isinstance(math_equal(a, b), bool)
        assert isinstance(extract_answer(a), (str, type(None)))
    assert time.monotonic() - start < 30


def test_non_string_inputs_never_raise():
    assert math_equal(None, "1") is False
    assert math_equal(5, "5") is True
    assert math_equal(0.5, "1/2") is True
    assert extract_answer(None) is None
    assert extract_answer(123) is None


# --- the killable worker ---------------------------------------------------------------------------

def test_worker_is_killed_at_the_wall_clock_limit_and_replaced():
    assert math_equal("(x+1)^2", "x^2+2x+1")           # warm: a worker exists
    worker_pids = {w.proc.pid for w in _math_worker.POOL.idle}
    start = time.monotonic()
    # floor() keeps the in-process numeric step out (rounding near integers is the worker's), so
    # the worker expands a degree-900 polynomial and is killed
    verdict = explain("(x+1)^{900} - x^{900} + \\lfloor x \\rfloor", "1 + x^{899} + \\lfloor x \\rfloor",
                      timeout_s=0.05)
    elapsed = time.monotonic() - start
    assert verdict["equal"] is False and verdict["rule"] == "timeout", verdict
    assert elapsed < 2.0
    for pid in worker_pids - {w.proc.pid for w in _math_worker.POOL.idle}:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)                              # killed and reaped, not a zombie
    assert math_equal("\\sin^2 x + \\cos^2 x", "1")    # a fresh worker serves the next call


def test_fast_path_needs_no_worker(monkeypatch):
    def no_worker(*a, **k):
        raise AssertionError("ordinary numeric answers must not reach the worker")
    monkeypatch.setattr(_math_worker.POOL, "compare", no_worker)
    for pred, gold in [("1/2", "0.5"), ("2\\frac{1}{2}", "5/2"), ("1,000", "1000"), ("50\\%", "0.5"),
                       ("1.5\\times10^{3}", "1500"), ("(1, 2)", "(1, 2.0)"), ("\\sqrt{16}", "4"),
                       ("1/2004!", "1/2006!"), ("x = 3", "3"), ("\\{1, 2\\}", "\\{2, 1\\}")]:
        math_equal(pred, gold)


def test_ordinary_answers_are_fast():
    pairs = [(c["pred"], c["gold"]) for c in EQUAL_CASES
             if c["tag"] in ("integer", "decimal", "fraction", "mixed", "thousands", "percent")]
    start = time.perf_counter()
    for _ in range(5):
        for p, g in pairs:
            math_equal(p, g)
    per_pair = (time.perf_counter() - start) / (5 * len(pairs))
    assert per_pair < 0.005, per_pair


def test_thread_safe_under_concurrency():
    cases = EQUAL_CASES[::3]
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda c: math_equal(
            extract_answer(c["pred"], broad=True) if c.get("extract") else c["pred"], c["gold"],
            ordered=bool(c.get("ordered"))), cases * 2))
    assert results == [c["equal"] for c in cases * 2]


def _child_verdicts(_):
    return [math_equal("\\frac{\\sqrt3}{2}", "\\sin(\\pi/3)"), math_equal("(x+1)^2", "x^2+1"),
            math_equal("1/2", "0.5"), os.getpid()]


def test_usable_from_forked_processes():
    assert math_equal("\\sqrt{8}", "2\\sqrt2")         # the parent holds a warm worker
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        results = pool.map(_child_verdicts, range(4))
    for r in results:
        assert r[:3] == [True, False, True]
    assert math_equal("\\sqrt{8}", "2\\sqrt2")         # the parent's worker still works


def test_rewards_imports_nothing_from_rlpipe():
    code = ("import sys, rewards.math as m; m.math_equal('x^2', 'x*x'); "
            "bad = [k for k in sys.modules if k == 'rlpipe' or k.startswith('rlpipe.')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


# --- explain and the reward --------------------------------------------------------------------------

def test_explain_says_why():
    v = explain("\\frac{1}{2}", "0.5")
    assert v["equal"] is True and v["rule"] == "exact-rational"
    assert v["pred_normalized"] == "\\frac{1}{2}" and v["pred_parsed"] == "1/2"
    v = explain("0.0000001", "0.0000002")
    assert v["equal"] is False and "differ" in v["detail"]
    assert explain("3.14159265", "\\pi")["rule"] == "relative-tolerance"
    assert explain("10**10**10", "1")["rule"] == "guard"
    assert explain("2 3", "6")["rule"] == "parse-failure"
    assert explain("50\\%", "0.5")["rule"] == "percent"
    assert set(explain("1", "1")) >= {"equal", "rule", "detail", "pred_normalized", "gold_normalized"}


def test_explain_without_an_answer():
    v = explain(None, "None")
    assert v["equal"] is False and v["rule"] == "no-answer"


def test_accuracy_reward_on_strings_and_chat_messages():
    completions = [
        "<think>3+4=7</think> <answer>7</answer>",
        [{"role": "assistant", "content": "<think>hmm</think><answer>\\frac{14}{2}</answer>"}],
        [{"role": "assistant", "content": [{"type": "text", "text": "so \\boxed{8}"}]}],
        "<answer>7</answer><answer>8</answer>",
        "no answer at all",
        "<answer>7</answer>",
    ]
    answers = ["7", "7", "7", "7", "7", None]
    assert accuracy_reward(["p"] * 6, completions, answers) == [1.0, 1.0, 0.0, 0.0, 0.0, None]


def test_accuracy_reward_reads_boxed_gold_and_extra_columns():
    got = accuracy_reward(["p", "p"], ["\\boxed{\\frac12}", "\\boxed{2}"],
                          answer=["The answer is $\\boxed{0.5}$", ""], task=["math", "math"])
    assert got == [1.0, None]
    assert accuracy_reward(["p"], ["\\boxed{2}"]) == [None]       # a dataset without answers


def test_is_number_accepts_one_plain_number_only():
    for text in ("47", "-3", "+5", "0.5", "47.0", "1,000", "4.7e1", "-3/4", "7/3", "\\frac{7}{3}",
                 "-\\frac{7}{3}", "\\frac{-7}{3}", "x = 7/3", "x=-3", "y_1 = 4", "\\boxed{47}", "$47$", "47."):
        assert is_number(text), text
    for text in ("29 + 18", "29 + 3 * 6", "94/2", "\\frac{94}{2}", "7/1", "3/0", "3.5/2", "x = 21/3",
                 "47 or 48", "47, 48", "47\\%", "47 = x", "x", "x = x", "2x", "\\sqrt{4}", "abc", "", None):
        assert not is_number(text), text


def test_unclosed_or_reopened_think_holds_no_answer():
    assert extract_answer("<think>so \\boxed{5}") is None
    assert extract_answer("<think>so <answer>5</answer>") is None
    assert extract_answer("<think>a</think> \\boxed{5} <think>more \\boxed{6}") == "5"
    assert extract_answer("<answer>5</answer></answer>") is None
