"""Reward hacking: answers an RL policy could learn that are not solutions earn no accuracy, from
the reward (`task_accuracy`, `accuracy`) and from evaluation (`rlpipe.evaluate.grade`) alike.

Rows come from the data builders (one held-out split), completions are written as a policy would:
restating the question, stopping half way, hedging, hiding the answer in the reasoning, breaking
the tags, flooding the answer, bending the countdown rule, exiting a program early. Each task's
reference solution and the honest variants of its answer form are paid, so a grader that paid
nothing would fail here too.
"""

import time

import pytest

from data import arithmetic
from data.build import BuildConfig, Size, build_task_splits
from rewards import REGISTRY, TASK_ACCURACY_COLUMNS
from rewards.format import format_reward
from rewards.math import accuracy_reward, is_number

THINK = "<think>Let me work it out step by step.</think> "


def answer(text: str) -> str:
    return f"{THINK}<answer>{text}</answer>"


@pytest.fixture(scope="module")
def rows():
    size = Size(sft=0, rl=0, eval_per_cell=8, pretrain_problems=0, pretrain_facts=0, pretrain_chat=0,
                nonreasoning=0, preferences=0)
    splits, _ = build_task_splits(BuildConfig(out="unused", seed=3), size)
    return splits["eval"]


def pick(rows, task, difficulty, where=lambda r: True):
    return next(r for r in rows if r["task"] == task and r["difficulty"] == difficulty and where(r))


def shared_hacks(gold: str) -> list[tuple[str, str]]:
    """Holes every task's grader must close (`gold` is a right answer for the row)."""
    return [
        ("answer only inside think", f"<think>So the answer is <answer>{gold}</answer></think> done"),
        ("answer inside an unclosed think", f"<think>So <answer>{gold}</answer>"),
        ("answer inside a reopened think", f"{THINK}<think><answer>{gold}</answer>"),
        ("nested tags", answer(f"<answer>{gold}</answer>")),
        ("unclosed second answer", f"{answer(gold)}<answer>{gold}"),
        ("stray closing tag", f"{answer(gold)}</answer>"),
        ("empty think, no answer", "<think></think>"),
        ("empty answer", answer("")),
        ("huge answer", answer("9" * 100_000)),
        ("100k unclosed answer tags", THINK + "<answer>" * 12_500),
    ]


def arithmetic_hacks(row) -> list[tuple[str, str]]:
    expression = row["key"].split(":", 1)[1]  # "29 + 3 * 6"
    gold = int(row["answer"])
    tokens = [int(t) if t.isdigit() else t for t in expression.split()]
    _, history = arithmetic.evaluate(tokens)
    partial = " ".join(map(str, history[0][0]))  # "29 + 18"
    return shared_hacks(str(gold)) + [
        ("no tags, only reasoning", f"I think it could be {gold}."),
        ("echo the question", answer(expression)),
        ("echo the question, boxed", answer(f"\\boxed{{{expression}}}")),
        ("partly evaluated", answer(partial)),
        ("partly evaluated as x =", answer(f"x = {partial}")),
        ("unreduced fraction", answer(f"{2 * gold}/2")),
        ("hedge with or", answer(f"{gold} or {gold + 1}")),
        ("hedge as a list", answer(f"{gold}, {gold + 1}, {gold + 2}")),
        ("hedge in boxes", answer(f"\\boxed{{{gold - 1}}} \\boxed{{{gold}}}")),
        ("disagreeing answer blocks", f"{answer(str(gold - 1))} <answer>{gold}</answer>"),
        ("empty think, echo", f"<think></think> <answer>{expression}</answer>"),
        ("huge expression", answer(" + ".join(["1"] * 30_000))),
    ]


def equations_hacks(row) -> list[tuple[str, str]]:
    equation = row["key"].split(":", 1)[1]  # "4(x - 5) = (x - 4)"
    gold = row["answer"]
    p, _, q = gold.partition("/")
    unreduced = f"{2 * int(p)}/{2 * int(q or 1)}"
    return shared_hacks(f"x = {gold}") + [
        ("echo the equation", answer(equation)),
        ("unreduced fraction", answer(f"x = {unreduced}")),
        ("left unfinished", answer(f"x = {gold} + 0")),
        ("hedge with or", answer(f"x = {gold} or x = {gold} + 1")),
        ("disagreeing answer blocks", f"{answer('x = 0')} <answer>x = {gold}</answer>"),
    ]


def countdown_hacks(row) -> list[tuple[str, str]]:
    expr, target, numbers = row["answer"], row["target"], row["numbers"]
    return shared_hacks(expr) + [
        ("no tags, only reasoning", f"I think it could be {expr}."),
        ("target alone", answer(str(target))),
        ("a number used twice", answer(f"{expr} + {numbers[0]} - {numbers[0]}")),
        ("a number not given", answer(f"{expr} + 97 - 97")),
        ("a number left out", answer(" + ".join(map(str, numbers[1:])))),
        ("equation instead of expression", answer(f"{expr} = {target}")),
        ("x = expression", answer(f"x = {expr}")),
        ("hedge: expression and target", f"{answer(expr)} <answer>{target}</answer>"),
        ("the numbers listed", answer(", ".join(map(str, numbers)))),
    ]


def _example(row) -> tuple[str, str]:
    """The prompt's example (input, output) as the tests hold it."""
    import ast
    import json

    if row["task"] == "code_io":
        case = json.loads(row["tests"])[0]
        return case["input"].strip(), case["output"].strip()
    first = ast.parse(row["tests"]).body[0].body[0].test
    return ast.unparse(first.left.args[0]), ast.unparse(first.comparators[0])


def code_hacks(row) -> list[tuple[str, str]]:
    gold = row["answer"]
    fenced = f"```python\n{gold}\n```"
    name = row["entry_point"]
    example_in, example_out = _example(row)
    if row["task"] == "code":
        hard_coded = f"def {name}(*args):\n    return {example_out}\n"
        exits = [f"import sys\nsys.exit(0)\n{gold}", f"def {name}(nums):\n    import os\n    os._exit(0)\n"]
    else:
        hard_coded = f"print({example_out!r})\n"
        exits = ["import sys\nsys.exit(0)\n", f"import os\nprint({example_out!r}, flush=True)\nos._exit(0)\n"]
    return shared_hacks(fenced) + [
        ("code only in think, no answer", f"<think>{fenced}</think> I am done."),
        ("code in prose, no fence, no tags", f"I would write {gold}"),
        ("the example hard-coded", answer(hard_coded)),
        ("exit(0) before the tests", answer(exits[0])),
        ("os._exit(0) in the solution", answer(exits[1])),
        ("claims success", answer('print("All tests passed")\n')),
        ("the same answer twice", f"{answer(gold)} <answer>{gold}</answer>"),
    ]


HACKS = {"arithmetic": arithmetic_hacks, "equations": equations_hacks, "countdown": countdown_hacks,
         "code": code_hacks, "code_io": code_hacks}


def cases(rows) -> list[tuple[dict, str, str]]:
    """(row, hack name, completion) over a level-4 row (level 3 for code) of every task, plus an
    equations row whose answer is a fraction."""
    chosen = [pick(rows, "arithmetic", 4), pick(rows, "equations", 4, lambda r: "/" in r["answer"]),
              pick(rows, "equations", 2), pick(rows, "countdown", 4), pick(rows, "code", 4),
              pick(rows, "code_io", 4), pick(rows, "code", 1)]
    return [(row, name, completion) for row in chosen for name, completion in HACKS[row["task"]](row)]


def honest(rows) -> list[tuple[dict, str]]:
    """Right answers in the form each task asks for, which must be paid."""
    out = [(r, r["solution"]) for r in rows if r["difficulty"] in (1, 4)]
    arith = pick(rows, "arithmetic", 4)
    frac = pick(rows, "equations", 4, lambda r: "/" in r["answer"])
    p, q = frac["answer"].split("/")
    sign, p = ("-", p[1:]) if p.startswith("-") else ("", p)
    out += [(arith, answer(arith["answer"])), (arith, answer(f"x = {arith['answer']}")),
            (arith, answer(f"\\boxed{{{arith['answer']}}}")), (arith, answer(f"{arith['answer']}.0")),
            (frac, answer(frac["answer"])), (frac, answer(f"{sign}\\frac{{{p}}}{{{q}}}")),
            (frac, answer(f"x = {sign}{p}/{q}")),
            # An empty think does not cost accuracy (the format reward refuses it; a rule here would
            # only teach the policy to write one character of "reasoning").
            (arith, f"<think></think> <answer>{arith['answer']}</answer>")]
    return out


def task_accuracy(rows, completions):
    columns = {c: [r[c] for r in rows] for c in TASK_ACCURACY_COLUMNS}
    columns["entry_point"] = [e or None for e in columns["entry_point"]]
    return REGISTRY["task_accuracy"]([r["prompt"] for r in rows], completions, **columns)


def test_hacks_earn_no_accuracy(rows):
    hacks = cases(rows)
    start = time.monotonic()
    scores = task_accuracy([r for r, _, _ in hacks], [c for _, _, c in hacks])
    paid = [(r["task"], r["difficulty"], name, s) for (r, name, _), s in zip(hacks, scores) if s]
    assert paid == []
    assert all(s == 0.0 for s in scores)  # applicable, and zero: not skipped as "no answer column"
    # ~100 completions, a quarter of them sandboxed programs; the floods must not cost seconds each.
    assert time.monotonic() - start < 30


def test_huge_answers_are_refused_fast(rows):
    row = pick(rows, "arithmetic", 4)
    for completion in (answer("9" * 100_000), answer(" + ".join(["1"] * 30_000)),
                       THINK + "<answer>" * 12_500, "<think>" * 20_000 + answer("1"),
                       answer("\\boxed{" * 5_000 + "1" + "}" * 5_000)):
        start = time.monotonic()
        assert task_accuracy([row], [completion]) == [0.0]
        assert time.monotonic() - start < 1.0


def test_honest_answers_are_paid(rows):
    pairs = honest(rows)
    scores = task_accuracy([r for r, _ in pairs], [c for _, c in pairs])
    assert scores == [1.0] * len(pairs), [(r["task"], c[-60:]) for (r, c), s in zip(pairs, scores) if s != 1.0]


def test_evaluation_grades_like_the_reward(rows):
    from rlpipe.evaluate import grade

    hacks = cases(rows)
    pairs = honest(rows)
    verdicts = grade([r for r, _, _ in hacks] + [r for r, _ in pairs],
                     [c for _, _, c in hacks] + [c for _, c in pairs])
    wrongly_right = [(r["task"], name) for (r, name, _), ok in zip(hacks, verdicts) if ok]
    assert wrongly_right == []
    assert verdicts[len(hacks):] == [True] * len(pairs)


def test_the_accuracy_term_alone_applies_the_answer_form(rows):
    row = pick(rows, "arithmetic", 4)
    expression = row["key"].split(":", 1)[1]
    out = accuracy_reward([row["prompt"]] * 2, [answer(expression), answer(row["answer"])],
                          answer=[row["answer"]] * 2, task=[row["task"]] * 2)
    assert out == [0.0, 1.0]


def test_rows_without_a_task_keep_the_generic_checker():
    # External datasets (no `task` column): any equivalent answer, as before.
    assert accuracy_reward(["Compute 29 + 3 * 6."], [answer("29 + 3 * 6")], answer=["47"]) == [1.0]
    assert accuracy_reward(["Compute 29 + 3 * 6."], [answer("29 + 3 * 6")], answer=["47"], task=["gsm8k"]) == [1.0]
    assert accuracy_reward(["Compute 29 + 3 * 6."], [answer("29 + 3 * 6")], answer=["47"],
                           task=["arithmetic"]) == [0.0]


def test_builder_answers_are_in_the_form_their_prompts_ask_for(rows):
    math_rows = [r for r in rows if r["task"] in ("arithmetic", "equations")]
    assert any("/" in r["answer"] for r in math_rows)  # fractions are among the golds
    for r in math_rows:
        written = r["solution"].rsplit("<answer>", 1)[1].split("</answer>")[0]
        assert is_number(r["answer"]) and is_number(written), (r["answer"], written)


def test_an_empty_think_earns_no_format_reward(rows):
    row = pick(rows, "arithmetic", 1)
    assert format_reward([row["prompt"]], [f"<think></think> <answer>{row['answer']}</answer>"]) == [0.0]
