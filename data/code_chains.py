"""Compositional code tasks: a random chain of list transformations, described in words.

- A `Chain` is up to three steps drawn independently, then a reduction (sum, count, largest/smallest
  with a default, or the list itself): an optional filter of the inputs (a random predicate with a
  random constant), an optional map (a random arithmetic operation with random constants) and an
  optional filter of the mapped results. Level 3 chains have one step (filter or map), level 4
  chains a filter and a map in either order -- and for programs (`code_io`) a filter, a map and a
  second filter, because the tiny model writes programs more easily than functions (run t6: level 3
  0.50 against 0.28, level 4 0.47 against 0.12 with the same two-step chains). The combinations run
  to tens of thousands before the constants, so the model has to compose the steps from the
  prompt's words instead of recalling a template (level-4 templates with varied constants were
  recalled almost perfectly by the tiny model, which leaves RL nothing to learn).
- `function_problem` (task `code`) asks for `name(nums)`; `io_problem` (task `code_io`) asks for a
  program that reads the integers from one line and prints the result (a list joined by spaces).
- The reference solution is rendered from the chain as one plain loop-and-if; the expected test
  outputs come from `run_chain`, an independent functional implementation (comprehensions and
  builtins), so running the reference against its tests checks the rendering, not itself.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, replace

from data.problem import Problem
from data.traces import Step

NAMES = ("process", "transform", "crunch", "pipeline", "compute", "digest", "refine", "combine")


@dataclass(frozen=True)
class Filter:
    kind: str  # "gt", "lt", "mod", "odd", "even", "ne"
    k: int = 0

    def cond(self, var: str) -> str:
        return {"gt": f"{var} > {self.k}", "lt": f"{var} < {self.k}", "mod": f"{var} % {self.k} == 0",
                "odd": f"{var} % 2 == 1", "even": f"{var} % 2 == 0", "ne": f"{var} != {self.k}"}[self.kind]

    def keep(self, v: int) -> bool:
        if self.kind == "gt":
            return v > self.k
        if self.kind == "lt":
            return v < self.k
        if self.kind == "mod":
            return divmod(v, self.k)[1] == 0
        if self.kind == "odd":
            return v & 1 == 1
        if self.kind == "even":
            return v & 1 == 0
        return v != self.k

    def words(self, of: str) -> tuple[str, str]:
        """(en, zh) clause; `of` says which values are tested ("numbers" or "results")."""
        zh_of = "数" if of == "numbers" else "结果"
        return {"gt": (f"keeps only the {of} greater than {self.k}", f"只保留大于 {self.k} 的{zh_of}"),
                "lt": (f"keeps only the {of} less than {self.k}", f"只保留小于 {self.k} 的{zh_of}"),
                "mod": (f"keeps only the {of} divisible by {self.k}", f"只保留能被 {self.k} 整除的{zh_of}"),
                "odd": (f"keeps only the odd {of}", f"只保留奇数{zh_of}"),
                "even": (f"keeps only the even {of}", f"只保留偶数{zh_of}"),
                "ne": (f"drops the {of} equal to {self.k}", f"去掉等于 {self.k} 的{zh_of}")}[self.kind]


@dataclass(frozen=True)
class Map:
    kind: str  # "add", "sub", "mul", "square", "affine"
    a: int = 0
    b: int = 0

    def expr(self, var: str) -> str:
        return {"add": f"{var} + {self.a}", "sub": f"{var} - {self.a}", "mul": f"{var} * {self.a}",
                "square": f"{var} * {var}", "affine": f"{var} * {self.a} + {self.b}"}[self.kind]

    def apply(self, v: int) -> int:
        if self.kind == "add":
            return v + self.a
        if self.kind == "sub":
            return v - self.a
        if self.kind == "mul":
            return sum([v] * self.a)
        if self.kind == "square":
            return v ** 2
        return sum([v] * self.a) + self.b

    def words(self) -> tuple[str, str]:
        return {"add": (f"adds {self.a} to each", f"把每个数加上 {self.a}"),
                "sub": (f"subtracts {self.a} from each", f"把每个数减去 {self.a}"),
                "mul": (f"multiplies each by {self.a}", f"把每个数乘以 {self.a}"),
                "square": ("squares each", "把每个数平方"),
                "affine": (f"multiplies each by {self.a} and then adds {self.b}",
                           f"把每个数乘以 {self.a} 再加上 {self.b}")}[self.kind]


REDUCTIONS = ("sum", "count", "max", "min", "list")


@dataclass(frozen=True)
class Chain:
    pre: Filter | None  # filter of the inputs
    map: Map | None
    post: Filter | None  # filter of the mapped results
    reduce: str  # one of REDUCTIONS
    default: int = 0  # what max/min give when nothing is left

    @property
    def key(self) -> str:
        return repr(self)


def _random_filter(rng: random.Random) -> Filter:
    kind = rng.choice(("gt", "lt", "mod", "odd", "even", "ne"))
    k = {"gt": rng.randint(-5, 10), "lt": rng.randint(-5, 10), "mod": rng.randint(3, 5), "ne": rng.randint(0, 9)}
    return Filter(kind, k.get(kind, 0))


def _random_map(rng: random.Random) -> Map:
    kind = rng.choice(("add", "sub", "mul", "square", "affine"))
    return Map(kind, rng.randint(2, 9) if kind != "square" else 0, rng.randint(1, 9) if kind == "affine" else 0)


def random_chain(rng: random.Random, steps: int) -> Chain:
    """A random chain of `steps` steps, then a reduction: 1 is a filter or a map, 2 a filter and a
    map (the filter before the map 60 % of the time), 3 a filter, a map and a filter."""
    assert steps in (1, 2, 3)
    m = _random_map(rng) if steps > 1 or rng.random() < 0.5 else None
    pre = post = None
    if steps == 3:
        pre, post = _random_filter(rng), _random_filter(rng)
    elif m is None or (steps == 2 and rng.random() < 0.6):
        pre = _random_filter(rng)
    elif steps == 2:
        post = _random_filter(rng)
    reduce = rng.choice(REDUCTIONS if pre or post else ("sum", "max", "min", "list"))  # count needs a filter
    return Chain(pre, m, post, reduce, rng.choice((0, -1)) if reduce in ("max", "min") else 0)


def run_chain(chain: Chain, nums: list[int]):
    """The expected result, computed independently of the rendered loop."""
    values = list(nums)
    if chain.pre:
        values = list(filter(chain.pre.keep, values))
    if chain.map:
        values = list(map(chain.map.apply, values))
    if chain.post:
        values = list(filter(chain.post.keep, values))
    if chain.reduce == "sum":
        return sum(values)
    if chain.reduce == "count":
        return len(values)
    if chain.reduce == "max":
        return max(values, default=chain.default)
    if chain.reduce == "min":
        return min(values, default=chain.default)
    return values


def describe(chain: Chain, verb: tuple[str, str] = ("returns", "返回")) -> tuple[str, str]:
    """The chain in words: (en, zh) clauses joined in order, ending with the reduction (`verb`:
    "returns" for a function, "prints" for a program)."""
    en, zh = [], []
    if chain.pre:
        e, z = chain.pre.words("numbers")
        en.append(e), zh.append(z)
    if chain.map:
        e, z = chain.map.words()
        en.append(e), zh.append(z)
    if chain.post:
        e, z = chain.post.words("results" if chain.map else "numbers")
        en.append(e), zh.append(z)
    v, vz = verb
    e, z = {"sum": (f"{v} the sum of what is left", f"{vz}剩下的数的和"),
            "count": (f"{v} how many are left", f"{vz}剩下的数的个数"),
            "max": (f"{v} the largest of what is left ({chain.default} if nothing is left)",
                    f"{vz}剩下的数中最大的（什么都不剩时为 {chain.default}）"),
            "min": (f"{v} the smallest of what is left ({chain.default} if nothing is left)",
                    f"{vz}剩下的数中最小的（什么都不剩时为 {chain.default}）"),
            "list": ((f"{v} what is left as a list, in order", f"按原顺序以列表{vz}剩下的数") if v == "returns" else
                     (f"{v} what is left in order, separated by spaces", f"按原顺序{vz}剩下的数，用空格分开"))
            }[chain.reduce]
    en.append(e), zh.append(z)
    return ", ".join(en[:-1]) + (", and " if len(en) > 1 else "") + en[-1], "，".join(zh)


def _body(chain: Chain, result: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The loop (lines, indented one level) and its plan steps (en, zh)."""
    init = {"sum": "total = 0", "count": "count = 0", "max": "best = None", "min": "best = None", "list": "result = []"}
    lines = [init[chain.reduce], "for n in nums:"]
    plan = [(f"Start with {init[chain.reduce]}.", f"先设 {init[chain.reduce]}。"),
            ("Go through each n in nums.", "遍历 nums 中的每个 n。")]
    depth, var = 1, "n"
    pre, m, post = chain.pre, chain.map, chain.post
    if pre:
        lines.append("    " * depth + f"if {pre.cond('n')}:")
        plan.append((f"Skip n unless {pre.cond('n')}.", f"只处理满足 {pre.cond('n')} 的 n。"))
        depth += 1
    if m:
        lines.append("    " * depth + f"v = {m.expr('n')}")
        plan.append((f"Compute v = {m.expr('n')}.", f"计算 v = {m.expr('n')}。"))
        var = "v"
    if post:
        lines.append("    " * depth + f"if {post.cond(var)}:")
        plan.append((f"Keep {var} only if {post.cond(var)}.", f"只保留满足 {post.cond(var)} 的 {var}。"))
        depth += 1
    pad = "    " * depth
    if chain.reduce == "sum":
        lines.append(pad + f"total += {var}")
        plan.append((f"Add {var} to total.", f"把 {var} 加到 total 上。"))
        tail, value = [], "total"
    elif chain.reduce == "count":
        lines.append(pad + "count += 1")
        plan.append(("Add 1 to count.", "count 加 1。"))
        tail, value = [], "count"
    elif chain.reduce == "list":
        lines.append(pad + f"result.append({var})")
        plan.append((f"Append {var} to result.", f"把 {var} 加到 result 末尾。"))
        tail, value = [], "result"
    else:
        cmp = ">" if chain.reduce == "max" else "<"
        lines += [pad + f"if best is None or {var} {cmp} best:", pad + f"    best = {var}"]
        plan.append((f"Keep {var} in best if best is None or {var} {cmp} best.",
                     f"如果 best 是 None 或 {var} {cmp} best，就令 best = {var}。"))
        tail = ["if best is None:", f"    best = {chain.default}"]
        plan.append((f"If nothing was kept, best is {chain.default}.", f"如果什么都没留下，best 取 {chain.default}。"))
        value = "best"
    lines += tail
    lines.append(result.format(value=value))
    plan.append((f"Finish with {result.format(value=value)}.", f"最后 {result.format(value=value)}。"))
    return lines, plan


def _dropped_inputs(chain: Chain) -> list[list[int]]:
    """For each "ne" filter of the chain, the inputs in the case range that it drops."""
    out = []
    if chain.pre and chain.pre.kind == "ne":
        out.append([chain.pre.k])
    if chain.post and chain.post.kind == "ne":
        mapped = chain.map.apply if chain.map else (lambda v: v)
        out.append([v for v in range(-9, 21) if (not chain.pre or chain.pre.keep(v)) and mapped(v) == chain.post.k])
    return out


def _cases(rng: random.Random, chain: Chain, n: int, shortest: int) -> list[list[int]] | None:
    """`n` input lists of small numbers (so the mapped values stay short), the last one short
    (`shortest`..2 numbers), that tell the chain apart from the same chain without any one of its
    steps -- so a solution that skips a step fails the tests -- and from a constant: the results
    other than the first (the prompt's example) are not all equal, so neither `return 0` nor the
    example hard-coded passes. None when 50 draws find no such cases (the step hardly matters for
    small inputs, as `even` after `* 2`; or the chain is constant, as "multiply by 8, add 4, keep
    the odd results, return the smallest, 0 if none")."""
    from data.code_tasks import tells_apart_from_constants

    skipped = [replace(chain, **{step: None}) for step in ("pre", "map", "post") if getattr(chain, step)]
    # A random list rarely holds the one value an "ne" filter drops: plant an input that reaches it.
    dropped = _dropped_inputs(chain)
    for _ in range(50):
        cases = [[rng.randint(-9, 20) for _ in range(rng.randint(3, 7))] for _ in range(n - 1)]
        cases.append([rng.randint(-9, 20) for _ in range(rng.randint(shortest, 2))])
        for i, hits in enumerate(dropped):
            if hits:
                cases[1 + i][rng.randrange(len(cases[1 + i]))] = rng.choice(hits)
        if (all(any(run_chain(chain, c) != run_chain(other, c) for c in cases) for other in skipped)
                and tells_apart_from_constants([(c, run_chain(chain, c)) for c in cases])):
            return cases
    return None


def chain_with_cases(rng: random.Random, steps: int, n: int, shortest: int = 0) -> tuple[Chain, list[list[int]]]:
    """A random chain of `steps` steps and `n` test inputs for it (`_cases`), redrawn until every
    step shows in the results and the results vary."""
    while True:
        chain = random_chain(rng, steps)
        cases = _cases(rng, chain, n, shortest)
        if cases is not None:
            return chain, cases


def _quote(text: str) -> str:
    from data.code_tasks import _quote_code  # one quoting rule for every code trace

    return _quote_code(text)


# Steps per chain by task and difficulty (see the module docstring).
STEPS = {"code": {3: 1, 4: 2}, "code_io": {3: 1, 4: 3}}


def function_problem(rng: random.Random, difficulty: int) -> Problem:
    """Task `code`: write `name(nums)` computing a random chain."""
    chain, cases = chain_with_cases(rng, STEPS["code"][difficulty], 5)
    name = rng.choice(NAMES)
    lines, plan = _body(chain, "return {value}")
    code = f"def {name}(nums):\n" + "\n".join("    " + ln for ln in lines)
    results = [run_chain(chain, c) for c in cases]
    tests = "def check(candidate):\n" + "".join(f"    assert candidate({c!r}) == {r!r}\n" for c, r in zip(cases, results))
    en_words, zh_words = describe(chain)
    en = (f"Write a Python function `{name}(nums)` that takes a list of integers nums, {en_words}. "
          f"For example, {name}({cases[0]!r}) returns {results[0]!r}.")
    zh = (f"写一个 Python 函数 `{name}(nums)`，参数 nums 是整数列表：{zh_words}。"
          f"例如 {name}({cases[0]!r}) 返回 {results[0]!r}。")
    steps = [Step(f"I need a function {name}(nums) that {en_words}.", _quote(f"需要写函数 {name}(nums)：{zh_words}。"))]
    steps += [Step(e, _quote(z)) for e, z in plan]
    steps.append(Step(f"Check: {name}({cases[0]!r}) should return {results[0]!r}.",
                      _quote(f"检查：{name}({cases[0]!r}) 应该返回 {results[0]!r}。")))
    return Problem(task="code", difficulty=difficulty, key=f"code:chain|{name}|{chain.key}|{cases[0]!r}",
                   prompt={"en": en, "zh": zh}, steps=steps, answer=code, answer_text=f"\n{code}\n",
                   tests=tests, entry_point=name)


def _printed(chain: Chain, value) -> str:
    return " ".join(str(v) for v in value) if chain.reduce == "list" else str(value)


def io_problem(rng: random.Random, difficulty: int) -> Problem:
    """Task `code_io`: read integers from one line, compute a random chain, print the result."""
    chain, inputs = chain_with_cases(rng, STEPS["code_io"][difficulty], 4, shortest=1)  # an empty line is no input
    out = 'print(" ".join(map(str, {value})))' if chain.reduce == "list" else "print({value})"
    lines, plan = _body(chain, out)
    code = "nums = list(map(int, input().split()))\n" + "\n".join(lines)
    cases = [{"input": " ".join(map(str, c)) + "\n", "output": _printed(chain, run_chain(chain, c)) + "\n"}
             for c in inputs]
    ex_in, ex_out = cases[0]["input"].rstrip("\n"), cases[0]["output"].rstrip("\n")
    en_words, zh_words = describe(chain, ("prints", "输出"))
    en = (f"Write a Python program that reads integers from one line, separated by spaces, {en_words}. "
          f"For example, for the input `{ex_in}` it prints `{ex_out}`.")
    zh = f"写一个 Python 程序，从一行读入若干个用空格分开的整数：{zh_words}。例如输入 `{ex_in}` 时输出 `{ex_out}`。"
    steps = [Step("Read the integers from the line into nums.", _quote("读入这一行的整数，存进 nums。"))]
    steps += [Step(e, _quote(z)) for e, z in plan]
    steps.append(Step(f"Check: for the input `{ex_in}` it prints `{ex_out}`.", f"检查：输入 `{ex_in}` 时输出 `{ex_out}`。"))
    return Problem(task="code_io", difficulty=difficulty, key=f"code_io:chain|{chain.key}|{ex_in}",
                   prompt={"en": en, "zh": zh}, steps=steps, answer=code, answer_text=f"\n{code}\n",
                   tests=json.dumps(cases, ensure_ascii=False), entry_point="")
