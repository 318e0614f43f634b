"""Math task builders: every answer and every arithmetic claim in every trace is correct, checked
here independently with exact Fraction arithmetic (not with the builders' own code)."""

import ast
import random
import re
from collections import Counter
from fractions import Fraction

import pytest

from data import arithmetic, countdown, equations
from data.problem import make_row
from rlpipe.tokenizer import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

N_PER_LEVEL = 60
R1 = re.compile(rf"^{re.escape(THINK_OPEN)}\n(.+)\n{re.escape(THINK_CLOSE)} "
                rf"{re.escape(ANSWER_OPEN)}(.+){re.escape(ANSWER_CLOSE)}$", re.S)
# A chain of integer operations written as a claim: "2 + 2 + 1 = 5", "-48 / -6 = 8".
CLAIM = re.compile(r"(?<![\w(/.])(-?\d+(?: [-+*/] -?\d+)+) = (-?\d+)(?![\w(/]|\.\d| [-+*/] )")
OPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
       ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def exact(expr: str, x: Fraction | None = None) -> Fraction:
    """Evaluate + - * / brackets, integers and the variable x with Fractions (no eval)."""
    def walk(node):
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.BinOp) and type(node.op) in OPS:
            return OPS[type(node.op)](walk(node.left), walk(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -walk(node.operand)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return Fraction(node.value)
        if isinstance(node, ast.Name) and node.id == "x" and x is not None:
            return x
        raise AssertionError(f"unexpected syntax in {expr!r}")
    return walk(ast.parse(expr, mode="eval"))


def rows(gen, seed=0):
    rng = random.Random(seed)
    for d in (1, 2, 3, 4):
        for i in range(N_PER_LEVEL):
            yield make_row(gen(rng, d), ("en", "zh")[i % 2], i % 5 == 0, rng, f"r{i}")


def check_claims(solution: str) -> int:
    claims = CLAIM.findall(solution)
    for lhs, rhs in claims:
        assert exact(lhs) == int(rhs), f"false claim {lhs} = {rhs} in\n{solution}"
    return len(claims)


def check_format(row) -> str:
    m = R1.match(row["solution"])
    assert m, row["solution"]
    assert m.group(2) == (f"x = {row['answer']}" if row["task"] == "equations" else row["answer"])
    return m.group(1)


def test_arithmetic_answers_and_traces_are_correct():
    n_claims = 0
    for row in rows(arithmetic.generate):
        check_format(row)
        expr = row["key"].split(":", 1)[1]
        assert expr in row["prompt"]
        assert exact(expr) == int(row["answer"])
        n_claims += check_claims(row["solution"])
    assert n_claims > 4 * N_PER_LEVEL


def test_arithmetic_column_steps_are_true():
    """Each column line ("tens 2 + 4 + 1 = 7, write 7 ...") states a true digit sum."""
    for row in rows(arithmetic.generate, seed=3):
        for lhs, rhs in re.findall(r"(?:ones|tens|hundreds|thousands|个位|十位|百位|千位) "
                                   r"(\d+(?: [-+*] \d+)+) = (\d+)", row["solution"]):
            assert exact(lhs) == int(rhs)


def test_arithmetic_level_4_always_has_a_product():
    """Level 4 is three terms with a product (the level's skill); lower levels stay as described."""
    rng = random.Random(5)
    level4 = [arithmetic.generate(rng, 4).key.split(":", 1)[1].split() for _ in range(200)]
    assert all(len(t) == 5 and "*" in t for t in level4)
    assert {t[1] for t in level4} == {"+", "-", "*"}  # products first, second or both
    assert any(t[3] == "*" and t[1] != "*" for t in level4)  # written second, done first
    level2 = [arithmetic.generate(rng, 2).key.split(":", 1)[1] for _ in range(100)]
    assert not any("*" in e for e in level2)


def test_equation_answers_satisfy_the_equation_in_lowest_terms():
    for row in rows(equations.generate):
        check_format(row)
        eq = row["key"].split(":", 1)[1]
        assert eq in row["prompt"]
        x = Fraction(row["answer"])
        assert str(x) == row["answer"]  # lowest terms, sign on the numerator
        lhs, rhs = (re.sub(r"(\d)(x|\()", r"\1*\2", side) for side in eq.split(" = "))
        assert exact(lhs, x) == exact(rhs, x), (eq, x)
        check_claims(row["solution"])


def test_countdown_answers_use_each_number_once_and_hit_the_target():
    for row in rows(countdown.generate):
        check_format(row)
        expr, numbers, target = row["answer"], row["numbers"], row["target"]
        assert Counter(int(t) for t in re.findall(r"\d+", expr)) == Counter(numbers)
        assert exact(expr) == target
        assert str(target) in row["prompt"] and all(str(n) in row["prompt"] for n in numbers)
        check_claims(row["solution"])
        assert len(numbers) == {1: 2, 2: 3, 3: 4, 4: 5}[row["difficulty"]]
        # Two-number searches in the trace (one "so try" line each), within the level's budget.
        searches = len(re.findall(r"so try|所以试", row["solution"]))
        assert searches in countdown.SEARCHES[row["difficulty"]]
        assert len(row["solution"].split(THINK_CLOSE)[0].splitlines()) - 1 <= countdown.MAX_TRACE_LINES


def test_countdown_level_4_draws_its_number_of_searches():
    """Left to chance 69 % of five-number chains need one search; level 4 draws the count instead:
    one search half the time, two or three a quarter each."""
    rng = random.Random(11)
    counts = Counter(countdown.search(p.numbers, p.target)[2]
                     for p in (countdown.generate(rng, 4) for _ in range(300)))
    assert set(counts) == {1, 2, 3} and counts[1] > 120 and min(counts[2], counts[3]) > 50, counts


@pytest.mark.parametrize("gen", [arithmetic.generate, equations.generate, countdown.generate])
def test_same_seed_same_problems(gen):
    assert list(rows(gen, seed=7)) == list(rows(gen, seed=7))
    assert list(rows(gen, seed=7)) != list(rows(gen, seed=8))


@pytest.mark.parametrize("gen", [arithmetic.generate, equations.generate, countdown.generate])
def test_harder_levels_have_longer_traces(gen):
    by_level = {}
    for row in rows(gen):
        by_level.setdefault(row["difficulty"], []).append(len(row["solution"]))
    means = [sum(v) / len(v) for _, v in sorted(by_level.items())]
    assert means == sorted(means) and means[-1] > 1.5 * means[0]


def test_prompts_follow_their_language():
    cjk = re.compile(r"[\u4e00-\u9fff]")
    for gen in (arithmetic.generate, equations.generate, countdown.generate):
        for row in rows(gen):
            assert bool(cjk.search(row["prompt"])) == (row["language"] == "zh")
            think = R1.match(row["solution"]).group(1)
            if not row["mixed_language"]:
                # Unmixed: an English trace has no Chinese; a Chinese one has no English words.
                if row["language"] == "en":
                    assert not cjk.search(think)
                else:
                    assert not re.search(r"[A-Za-z]{2,}", think), think
            elif row["language"] == "en":  # mixed: part of the trace is in the other language
                assert cjk.search(think)
            else:
                assert re.search(r"[A-Za-z]{2,}", think)


def test_pretraining_facts_are_true_and_cover_the_tables_many_times():
    docs = arithmetic.facts(random.Random(0), 200)
    tables = len(docs) - 200
    assert all(len(d) < 200 for d in docs[:tables])  # short documents
    n_claims = sum(check_claims(d) for d in docs)
    assert n_claims > arithmetic.FACT_REPEATS * len(arithmetic.fact_lines())
    corpus = "\n".join(docs)
    for a in range(10):
        for b in range(1, 10):
            for fact in (f"{a} * {b} = {a * b}", f"{a * b} / {b} = {a}", f"{a} + {b} = {a + b}"):
                assert corpus.count(fact + ".") + corpus.count(fact + "。") >= arithmetic.FACT_REPEATS, fact
    assert "。" in corpus and "7 + 5 + 1 = 13" in corpus and "13 - 5 - 1 = 7" in corpus


# One operation on two numbers, not the tail of a longer chain ("5 + 1 = 13" inside "7 + 5 + 1 = 13").
FACT = re.compile(r"(?<![-+*/] )(?<![\w(/.])(\d+ [-+*/] \d+) = (\d+)")


@pytest.mark.parametrize("gen", [arithmetic.generate, equations.generate, countdown.generate])
def test_level_1_traces_rest_on_at_most_two_stated_facts(gen):
    """Level 1 must be recall, not computation: every calculation in its trace is one of the
    pretraining facts, written the same way, and there are at most two of them."""
    facts = {line.rstrip(".") for line in arithmetic.fact_lines()}
    rng = random.Random(5)
    for i in range(200):
        row = make_row(gen(rng, 1), ("en", "zh")[i % 2], False, rng, "r")
        think = R1.match(row["solution"]).group(1)
        computed = {f"{lhs} = {rhs}" for lhs, rhs in FACT.findall(think)}
        assert computed and computed <= facts, (computed - facts, think)
        assert len(computed) <= 2, think


def test_countdown_search_reuses_the_two_number_search_and_reports_dead_ends():
    # 7 * 5 - 3 = 32: "+ 3" wants 29 from 7, 5 (no), then "- 3" wants 35 (7 * 5, yes).
    steps, term, pair_searches = countdown.search([7, 5, 3], 32)
    text = "\n".join(s.en for s in steps)
    assert term.expr == "7 * 5 - 3" and pair_searches == 2
    assert "make 32 - 3 = 29." in text and "target 29: no." in text
    assert text.endswith("Try 7 * 5 = 35, target 35: yes, that works!")
    # Nothing reaches 50 from 1, 1, 1: both branches are searched, and nothing is claimed.
    steps, term, pair_searches = countdown.search([1, 1, 1], 50)
    assert term is None and pair_searches == 2
    assert not any("yes" in s.en for s in steps)
    # A wanted value that is not positive is a dead end without a search.
    steps, term, pair_searches = countdown.search([5, 8, 9], 4)
    assert steps[0].en == "Last step + 9: 4 - 9 is not positive."
    assert term.expr == "5 + 8 - 9" and pair_searches == 1


def test_countdown_comparison_facts_are_true_and_cover_every_comparison_in_the_traces():
    lines = countdown.comparison_lines()
    en_facts = {en for en, _ in lines}
    zh_facts = {zh for _, zh in lines}
    for en, zh in lines:
        a, word, b = re.fullmatch(r"(\d+) (is bigger than|is smaller than|equals) (\d+)\.", en).groups()
        a, b = int(a), int(b)
        assert {"is bigger than": a > b, "is smaller than": a < b, "equals": a == b}[word]
        assert zh == (f"{a} 比 {b} 大。" if a > b else f"{a} 比 {b} 小。" if a < b else f"{a} 等于 {b}。")
    seen = 0
    for i, row in enumerate(rows(countdown.generate)):
        for a, word, b in re.findall(r"(\d+) (is bigger than|is smaller than|equals) (\d+),", row["solution"]):
            assert f"{a} {word} {b}." in en_facts, (a, word, b)
            seen += 1
        for a, b, word in re.findall(r"(\d+) 比 (\d+) (大|小)，", row["solution"]):
            assert f"{a} 比 {b} {word}。" in zh_facts
            seen += 1
    assert seen > 4 * N_PER_LEVEL
    text = "\n".join(countdown.comparison_facts(random.Random(0)))

    def count(en, zh):  # occurrences in either language, not inside a longer number ("15 is ...")
        return sum(len(re.findall(rf"(?<!\d){re.escape(f)}", text)) for f in (en, zh))

    # Every fact COMPARISON_REPEATS times, the close ones (value wanted under 19) more often.
    assert count("44 is bigger than 8.", "44 比 8 大。") == countdown.COMPARISON_REPEATS
    assert count("5 is bigger than 4.", "5 比 4 大。") == (countdown.COMPARISON_REPEATS
                                                           + countdown.CLOSE_COMPARISON_REPEATS)
