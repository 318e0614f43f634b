"""Code task builders: each reference solution passes its own tests when run in a fresh Python
process (the expected outputs come from independent oracles, so this checks the solutions), and a
wrong solution fails them; the compositional chains (levels 3-4) vary in structure, not just constants."""

import ast
import json
import random
import re
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import pytest

from data import code_chains, code_tasks
from data.problem import make_row
from rlpipe.tokenizer import ANSWER_CLOSE, ANSWER_OPEN


def run_function_task(code: str, tests: str, entry_point: str, tmp_path) -> int:
    # A fresh file per call: two problems can share their code, and the calls run in threads.
    script = tmp_path / f"{entry_point}_{uuid.uuid4().hex}.py"
    script.write_text(f"{code}\n\n{tests}\n\ncheck({entry_point})\n")
    return subprocess.run([sys.executable, str(script)], capture_output=True, timeout=20).returncode


def run_io_task(code: str, tests: str, tmp_path) -> bool:
    script = tmp_path / f"io_{uuid.uuid4().hex}.py"
    script.write_text(code + "\n")
    for case in json.loads(tests):
        done = subprocess.run([sys.executable, str(script)], input=case["input"], capture_output=True,
                              text=True, timeout=20)
        if done.returncode != 0 or done.stdout != case["output"]:
            return False
    return True


def _problems(templates, make, per_template=2):
    rng = random.Random(0)
    return [make(rng, t) for t in templates for _ in range(per_template)]


def test_every_function_template_solution_passes_its_tests(tmp_path):
    problems = _problems(code_tasks.FUNCS, code_tasks._function_problem)
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda p: run_function_task(p.answer, p.tests, p.entry_point, tmp_path), problems))
    failed = [p.key for p, rc in zip(problems, codes) if rc != 0]
    assert not failed
    assert {p.difficulty for p in problems} == {1, 2, 3}  # level 4 is all chains


def test_every_io_template_solution_passes_its_tests(tmp_path):
    problems = _problems(code_tasks.IOS, code_tasks._io_problem, per_template=1)
    with ThreadPoolExecutor(4) as pool:
        ok = list(pool.map(lambda p: run_io_task(p.answer, p.tests, tmp_path), problems))
    assert all(ok), [p.key for p, good in zip(problems, ok) if not good]
    assert {p.difficulty for p in problems} == {1, 2, 3}


def test_tests_reject_a_wrong_solution(tmp_path):
    rng = random.Random(1)
    fn = code_tasks._function_problem(rng, next(t for t in code_tasks.FUNCS if t.template == "factorial"))
    wrong = fn.answer.replace("range(2, n + 1)", "range(2, n)")
    assert run_function_task(wrong, fn.tests, fn.entry_point, tmp_path) != 0
    io = code_tasks._io_problem(rng, next(t for t in code_tasks.IOS if t.template == "io_sort_desc"))
    assert not run_io_task(io.answer.replace("reverse=True", "reverse=False"), io.tests, tmp_path)


@pytest.mark.parametrize("gen,task", [(code_tasks.generate_function, "code"), (code_tasks.generate_io, "code_io")])
def test_rows_carry_code_in_answer_and_tests(gen, task):
    rng = random.Random(2)
    for d in (1, 2, 3, 4):
        for lang in ("en", "zh"):
            row = make_row(gen(rng, d), lang, False, rng, "r")
            assert row["task"] == task and row["difficulty"] == d
            inside = row["solution"].split(ANSWER_OPEN, 1)[1].rsplit(ANSWER_CLOSE, 1)[0]
            assert inside.strip() == row["answer"].strip()
            compile(row["answer"], "<answer>", "exec")
            if task == "code":
                assert row["tests"].startswith("def check(candidate):") and row["entry_point"]
                assert f"`{row['entry_point']}(" in row["prompt"]
            else:
                cases = json.loads(row["tests"])
                assert cases and all(set(c) == {"input", "output"} for c in cases) and row["entry_point"] == ""
            assert bool(re.search(r"[\u4e00-\u9fff]", row["prompt"])) == (lang == "zh")


def _chain_problems(make, n=24):
    rng = random.Random(3)
    return [make(rng, 3 + i % 2) for i in range(n)]


def test_chain_solutions_pass_their_tests_and_a_broken_variant_fails(tmp_path):
    fns = _chain_problems(code_chains.function_problem)
    ios = _chain_problems(code_chains.io_problem, n=8)
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda p: run_function_task(p.answer, p.tests, p.entry_point, tmp_path), fns))
        ok = list(pool.map(lambda p: run_io_task(p.answer, p.tests, tmp_path), ios))
    assert codes == [0] * len(fns), [p.answer for p, rc in zip(fns, codes) if rc]
    assert all(ok), [p.answer for p, good in zip(ios, ok) if not good]
    # Dropping the step that builds the value (the map, or the filter) must fail the tests.
    broken = [(p, p.answer.replace("v = n ", "v = 0 * n ").replace("if n ", "if True or n ")) for p in fns[:8]]
    with ThreadPoolExecutor(4) as pool:
        bad = list(pool.map(lambda pb: run_function_task(pb[1], pb[0].tests, pb[0].entry_point, tmp_path), broken))
    assert all(rc != 0 for rc in bad), [b for (_, b), rc in zip(broken, bad) if rc == 0]


def test_level_4_chains_compose_their_steps_in_many_shapes():
    rng = random.Random(4)
    two = [code_chains.random_chain(rng, 2) for _ in range(400)]
    assert all(c.map is not None and (c.pre is None) != (c.post is None) for c in two)
    shapes = {((c.pre or c.post).kind, c.map.kind, c.pre is not None, c.reduce) for c in two}
    assert len(shapes) > 150  # 6 filters x 5 maps x 2 orders x 5 reductions = 300 shapes before constants
    assert 0.45 < sum(c.pre is not None for c in two) / len(two) < 0.75  # filter first 60 % of the time
    three = [code_chains.random_chain(rng, 3) for _ in range(200)]
    assert all(c.pre and c.map and c.post for c in three)
    one = [code_chains.random_chain(rng, 1) for _ in range(100)]
    assert all((c.pre is None) != (c.map is None) and c.post is None for c in one)
    problems = [code_tasks.generate_function(rng, 4) for _ in range(200)]
    assert all(p.key.startswith("code:chain|") for p in problems)
    assert len({p.key for p in problems}) == len(problems)
    # Programs are a step longer at level 4: filter, map, filter of the results.
    io4 = [code_tasks.generate_io(rng, 4) for _ in range(50)]
    assert all(p.answer.count("if ") >= 2 and "v = " in p.answer for p in io4)
    mixed = [code_tasks.generate_io(rng, 3).key.startswith("code_io:chain|") for _ in range(200)]
    assert 0.3 < sum(mixed) / len(mixed) < 0.7  # level 3: half templates, half chains


def test_chain_cases_tell_every_step_apart():
    """A solution that skips any one step of a chain fails at least one case -- including an "ne"
    filter of the mapped results, whose dropped value the cases must reach. Chains whose step
    hardly matters on small inputs (`even` after `* 2`) are redrawn."""
    rng = random.Random(6)
    for steps in (1, 2, 3):
        for _ in range(100):
            c, cases = code_chains.chain_with_cases(rng, steps, 4, shortest=1)
            assert len(cases) == 4 and all(cases)
            for step in ("pre", "map", "post"):
                if getattr(c, step):
                    skip = replace(c, **{step: None})
                    assert any(code_chains.run_chain(c, x) != code_chains.run_chain(skip, x) for x in cases), (c, step)
    planted = code_chains.Chain(code_chains.Filter("gt", -3), code_chains.Map("add", 4),
                                code_chains.Filter("ne", 7), "list")
    assert code_chains._dropped_inputs(planted) == [[3]]  # 3 + 4 == 7
    assert any(3 in x for x in code_chains._cases(random.Random(0), planted, 4, 0))
    redundant = code_chains.Chain(None, code_chains.Map("mul", 2), code_chains.Filter("even"), "sum")
    assert code_chains._cases(random.Random(0), redundant, 4, 0) is None


def test_chain_prompt_states_every_step_in_words():
    c = code_chains.Chain(None, code_chains.Map("affine", 2, 5), code_chains.Filter("gt", 3), "max", -1)
    en, zh = code_chains.describe(c)
    assert en == ("multiplies each by 2 and then adds 5, keeps only the results greater than 3, and returns "
                  "the largest of what is left (-1 if nothing is left)")
    assert "乘以 2 再加上 5" in zh and "大于 3" in zh and "-1" in zh
    # Filtering the mapped results is not filtering the inputs: 1 -> 7 is kept, 0 -> 5 is kept.
    assert code_chains.run_chain(c, [1, 0, -1]) == 7
    assert code_chains.run_chain(code_chains.Chain(c.post, c.map, None, "max", -1), [1, 0, -1]) == -1


# ----------------------------------------------------------------------------- tests tell a solution from a constant

def _cases_of(row) -> list[tuple]:
    """(input, expected) per test case, read from the row's tests (the prompt's example first)."""
    if row["task"] == "code_io":
        return [(c["input"].strip(), c["output"].rstrip("\n")) for c in json.loads(row["tests"])]
    check = ast.parse(row["tests"]).body[0]
    out = []
    for stmt in check.body:
        call, expected = stmt.test.left, stmt.test.comparators[0]
        assert isinstance(call, ast.Call) and call.func.id == "candidate", ast.unparse(stmt)
        out.append((tuple(ast.literal_eval(a) for a in call.args), ast.literal_eval(expected)))
    return out


def _cheats_that_pass(row) -> list[str]:
    """Which of `return <constant>` and "the prompt's example hard-coded, a constant otherwise"
    would pass every test of the row (Python equality, as the tests compare)."""
    cases = _cases_of(row)
    (example_in, _), outs = cases[0], [out for _, out in cases]
    rest = [out for inp, out in cases if inp != example_in]
    passing = []
    if any(all(o == c for o in outs) for c in outs):
        passing.append("constant")
    if not rest or any(all(o == c for o in rest) for c in rest):
        passing.append("example hard-coded")
    return passing


def _cheat_programs(row) -> list[str]:
    cases = _cases_of(row)
    (example_in, example_out), rest = cases[0], [out for inp, out in cases if inp != cases[0][0]]
    common = max(rest, key=rest.count)
    if row["task"] == "code_io":
        return [f"print({common!r})\n",
                f"line = input().strip()\nprint({example_out!r} if line == {example_in!r} else {common!r})\n"]
    name = row["entry_point"]
    return [f"def {name}(*args):\n    return {common!r}\n",
            f"def {name}(*args):\n    return {example_out!r} if args == {example_in!r} else {common!r}\n"]


def _code_rows(seed: int) -> list[dict]:
    from data import build as builder
    from data.build import BuildConfig, Size

    size = Size(sft=400, rl=200, eval_per_cell=32, pretrain_problems=0, pretrain_facts=0, pretrain_chat=0,
                nonreasoning=0, preferences=0)
    splits, _ = builder.build_task_splits(BuildConfig(out="unused", seed=seed), size)
    return [r for rows in splits.values() for r in rows if r["task"] in ("code", "code_io")]


def test_no_row_passes_with_a_constant_or_the_example_hard_coded():
    """Every code and code_io row, of every split of two data seeds (seed 7's eval split had 14
    such rows of 256 before the builders redrew them) and of 300 fresh draws per level, fails both
    `return <constant>` and the prompt's example hard-coded."""
    rows = _code_rows(7) + _code_rows(0)
    rng = random.Random(11)
    for d in (1, 2, 3, 4):
        for gen in (code_tasks.generate_function, code_tasks.generate_io):
            rows += [make_row(gen(rng, d), "en", False, rng, "r") for _ in range(300)]
    assert {(r["task"], r["difficulty"]) for r in rows} == {(t, d) for t in ("code", "code_io") for d in (1, 2, 3, 4)}
    cheatable = [(r["prompt"], _cheats_that_pass(r)) for r in rows if _cheats_that_pass(r)]
    assert cheatable == []


def test_a_constant_chain_is_redrawn_and_its_tests_would_pay_return_0():
    # "multiply each number by 8, add 4, keep the odd results, return the smallest (0 if none)" is
    # 0 for every input: no cases tell it from `return 0`, so the builder draws another chain.
    constant = code_chains.Chain(None, code_chains.Map("affine", 8, 4), code_chains.Filter("odd"), "min", 0)
    assert code_chains._cases(random.Random(0), constant, 5, 0) is None
    # The checks above are sound: for such a chain the sandbox really pays both cheats.
    inputs = [[1, -1, 6, -5, 1], [3, 4], [7, 2, 9], [0]]
    tests = "def check(candidate):\n" + "".join(
        f"    assert candidate({c!r}) == {code_chains.run_chain(constant, c)!r}\n" for c in inputs)
    row = {"task": "code", "tests": tests, "entry_point": "pipeline"}
    assert _cheats_that_pass(row) == ["constant", "example hard-coded"]
    from rewards.code import check_solution

    for program in _cheat_programs(row):
        assert check_solution(program, tests, entry_point="pipeline").status == "pass", program


def test_cheats_fail_real_rows_in_the_sandbox():
    from rewards.code import check_solution

    rng = random.Random(12)
    rows = [make_row(gen(rng, d), "en", False, rng, "r")
            for d in (1, 2, 3, 4) for gen in (code_tasks.generate_function, code_tasks.generate_io) for _ in range(2)]

    def verdicts(row):
        return [check_solution(p, row["tests"], entry_point=row["entry_point"] or None).status
                for p in _cheat_programs(row)]

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(verdicts, rows))
    assert all("pass" not in v for v in results), [(r["prompt"], v) for r, v in zip(rows, results)]
