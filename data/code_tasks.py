"""Small Python programming tasks with tests: HumanEval-style functions and stdin/stdout programs.

- Task `code`: write a function; `tests` is HumanEval-style (`def check(candidate): assert ...`),
  `entry_point` the function name. Task `code_io`: write a program that reads stdin and prints;
  `tests` is a JSON list of {"input", "output"} and `entry_point` is ''.
- Each template has a level (1: one-line arithmetic; 2: one loop or slice; 3: loop with a condition
  or accumulation, or a classic small algorithm), English and Chinese descriptions, a short plan
  (the reasoning steps), a reference solution in one plain loop-and-if style, and an ORACLE written
  independently (builtins, other algorithm) that computes the expected test outputs -- so running the
  reference solution against its tests checks the solution, not itself.
- Variety comes from the function name, a constant `k` where the task has one, and the example in the
  prompt; the problem key holds all three, so held-out prompts are never seen in training.
- The tests tell a solution from a constant: cases whose outputs, apart from the prompt's example,
  are all equal (`count_k` on lists without k, `balanced` on three unbalanced strings) would pay
  `return 0` or the example hard-coded, so they are redrawn (`tells_apart_from_constants`).
- Level 3 draws half its problems from these templates and half from two-step compositional chains;
  level 4 is all three-step chains (`data/code_chains.py`): templates with varied constants are
  recalled, not reasoned, so the hard levels must be composed from the prompt's words.
- The answer inside `<answer>` is the code itself.
"""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from math import factorial, gcd

from data import code_chains
from data.problem import Problem
from data.traces import Step

LEVELS = (1, 2, 3, 4)


@dataclass(frozen=True)
class FuncTemplate:
    template: str
    difficulty: int
    names: tuple[str, ...]
    args: str
    en: str  # "returns ..." ({k} filled in)
    zh: str
    code: str  # body after the def line ({k} filled in)
    plan: tuple[tuple[str, str], ...]
    oracle: Callable  # (k, *args) -> expected
    cases: Callable  # (rng, k) -> list of argument tuples
    param: Callable = lambda rng: None


@dataclass(frozen=True)
class IOTemplate:
    template: str
    difficulty: int
    en: str  # "reads ... and prints ..."
    zh: str
    code: str
    plan: tuple[tuple[str, str], ...]
    oracle: Callable  # (k, input line) -> printed text without the final newline
    cases: Callable  # (rng, k) -> list of input lines
    param: Callable = lambda rng: None


def _ints(rng, n, lo=-20, hi=20):
    return [rng.randint(lo, hi) for _ in range(n)]


def _words(rng, n):
    return [rng.choice(WORDS) for _ in range(n)]


WORDS = ("apple", "cat", "dog", "level", "noon", "river", "stone", "tree", "bird", "sun", "moon",
         "racecar", "book", "pen", "star", "kayak", "lamp", "fish", "rock", "wind")
BINOPS = {"+": ("add", "plus", "add_two", "sum_two"), "-": ("subtract", "minus", "sub", "difference"),
          "*": ("multiply", "times", "mul", "product")}
BINOP_EN = {"+": "the sum of a and b", "-": "a minus b", "*": "the product of a and b"}
_BINOP_FN = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
BINOP_ZH = {"+": "a 与 b 的和", "-": "a 减 b 的差", "*": "a 与 b 的积"}


def _fib(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _is_prime(n):
    return n >= 2 and all(n % d for d in range(2, n))


def _brackets(rng):
    if rng.random() < 0.5:
        return "".join(rng.choice("()[]{}") for _ in range(rng.randint(0, 8)))
    s = ""
    for _ in range(rng.randint(1, 4)):
        o, c = rng.choice(("()", "[]", "{}"))
        s = rng.choice((o + s + c, s + o + c))
    return s


def _collatz(n):
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


FUNCS: tuple[FuncTemplate, ...] = (
    # ---- level 1
    FuncTemplate("add_k", 1, ("add_k", "plus_k", "increase", "shift"), "x",
                 "returns x plus {k}", "返回 x 加 {k} 的结果",
                 "    return x + {k}", (("Add {k} to x and return the result.", "把 x 加上 {k}，返回结果。"),),
                 lambda k, x: x + k, lambda rng, k: [(v,) for v in _ints(rng, 4, -50, 50)],
                 lambda rng: rng.randint(1, 20)),
    FuncTemplate("times_k", 1, ("times_k", "scale", "multiply_by", "grow"), "x",
                 "returns x multiplied by {k}", "返回 x 乘以 {k} 的结果",
                 "    return x * {k}", (("Multiply x by {k} and return the result.", "把 x 乘以 {k}，返回结果。"),),
                 lambda k, x: x * k, lambda rng, k: [(v,) for v in _ints(rng, 4, -30, 30)],
                 lambda rng: rng.randint(2, 12)),
    FuncTemplate("binop", 1, (), "a, b", "returns {k_en}", "返回 {k_zh}",
                 "    return a {k} b", (("The answer is a {k} b.", "答案就是 a {k} b。"),),
                 lambda k, a, b: a + b if k == "+" else a - b if k == "-" else a * b,
                 lambda rng, k: [tuple(_ints(rng, 2, -20, 20)) for _ in range(4)],
                 lambda rng: rng.choice("+-*")),
    FuncTemplate("bigger", 1, ("bigger", "larger", "max_of_two", "pick_max"), "a, b",
                 "returns the larger of a and b", "返回 a 和 b 中较大的那个",
                 "    if a > b:\n        return a\n    return b",
                 (("If a is greater than b, return a.", "如果 a 比 b 大，返回 a。"), ("Otherwise return b.", "否则返回 b。")),
                 lambda k, a, b: max(a, b), lambda rng, k: [tuple(_ints(rng, 2)) for _ in range(4)]),
    FuncTemplate("above_k", 1, ("above", "is_big", "over_limit", "greater_than"), "x",
                 "returns True if x is greater than {k}, otherwise False", "如果 x 大于 {k} 返回 True，否则返回 False",
                 "    return x > {k}", (("Compare x with {k}: x > {k} is already True or False.", "比较 x 和 {k}：x > {k} 本身就是 True 或 False。"),),
                 lambda k, x: x > k, lambda rng, k: [(k,), (k + 1,), (k - 3,), (k + 7,)],
                 lambda rng: rng.randint(-10, 30)),
    # ---- level 2
    FuncTemplate("sum_list", 2, ("sum_list", "total", "list_sum", "add_all"), "nums",
                 "returns the sum of the numbers in the list nums", "返回列表 nums 中所有数的和",
                 "    total = 0\n    for n in nums:\n        total += n\n    return total",
                 (("Start with total = 0.", "先设 total = 0。"), ("Add each number in nums to total.", "把 nums 中的每个数加到 total 上。"),
                  ("Return total.", "返回 total。")),
                 lambda k, nums: sum(nums), lambda rng, k: [(_ints(rng, rng.randint(0, 6)),) for _ in range(4)]),
    FuncTemplate("max_list", 2, ("max_list", "largest", "biggest", "find_max"), "nums",
                 "returns the largest number in the non-empty list nums", "返回非空列表 nums 中最大的数",
                 "    best = nums[0]\n    for n in nums:\n        if n > best:\n            best = n\n    return best",
                 (("Start with best = nums[0].", "先设 best = nums[0]。"), ("For each number, if it is bigger than best, it becomes best.", "遍历每个数，比 best 大就更新 best。"),
                  ("Return best.", "返回 best。")),
                 lambda k, nums: max(nums), lambda rng, k: [(_ints(rng, rng.randint(1, 6)),) for _ in range(4)]),
    FuncTemplate("count_k", 2, ("count_k", "how_many", "count_value", "occurrences"), "nums",
                 "returns how many times {k} appears in the list nums", "返回 {k} 在列表 nums 中出现的次数",
                 "    count = 0\n    for n in nums:\n        if n == {k}:\n            count += 1\n    return count",
                 (("Start with count = 0.", "先设 count = 0。"), ("For each number equal to {k}, add 1 to count.", "每遇到一个等于 {k} 的数，count 加 1。"),
                  ("Return count.", "返回 count。")),
                 lambda k, nums: nums.count(k), lambda rng, k: [([rng.randint(0, 9) for _ in range(rng.randint(0, 8))],) for _ in range(4)],
                 lambda rng: rng.randint(0, 9)),
    FuncTemplate("reverse", 2, ("reverse", "reverse_string", "flip", "backwards"), "s",
                 "returns the string s reversed", "返回把字符串 s 倒过来的结果",
                 "    return s[::-1]", (("A slice with step -1 reverses a string: s[::-1].", "步长为 -1 的切片可以反转字符串：s[::-1]。"),),
                 lambda k, s: "".join(reversed(s)), lambda rng, k: [(w,) for w in _words(rng, 3)] + [("",)]),
    FuncTemplate("divisible_k", 2, ("divisible", "is_multiple", "divides", "check_multiple"), "n",
                 "returns True if n is divisible by {k}, otherwise False", "如果 n 能被 {k} 整除返回 True，否则返回 False",
                 "    return n % {k} == 0", (("n is divisible by {k} exactly when the remainder n % {k} is 0.", "n 能被 {k} 整除，就是余数 n % {k} 等于 0。"),),
                 lambda k, n: n / k == n // k, lambda rng, k: [(k * rng.randint(0, 9),), (k * rng.randint(1, 9) + 1,), (rng.randint(0, 99),), (k,)],
                 lambda rng: rng.randint(2, 9)),
    FuncTemplate("scale_list", 2, ("scale_list", "multiply_all", "times_each", "stretch"), "nums",
                 "returns a new list with every number in nums multiplied by {k}", "返回一个新列表，把 nums 中每个数乘以 {k}",
                 "    return [n * {k} for n in nums]", (("Build a new list with n * {k} for each n in nums.", "对 nums 中的每个 n 计算 n * {k}，组成新列表。"),),
                 lambda k, nums: list(map(lambda v: v * k, nums)), lambda rng, k: [(_ints(rng, rng.randint(0, 5)),) for _ in range(4)],
                 lambda rng: rng.randint(2, 9)),
    FuncTemplate("prefix_k", 2, ("prefix", "first_chars", "head", "take"), "s",
                 "returns the first {k} characters of the string s (all of s if it is shorter)", "返回字符串 s 的前 {k} 个字符（s 更短时返回整个 s）",
                 "    return s[:{k}]", (("The slice s[:{k}] gives the first {k} characters, or all of s if it is shorter.", "切片 s[:{k}] 就是前 {k} 个字符，s 更短时就是整个 s。"),),
                 lambda k, s: "".join(c for i, c in enumerate(s) if i < k), lambda rng, k: [(w,) for w in _words(rng, 3)] + [("",)],
                 lambda rng: rng.randint(1, 5)),
    # ---- level 3
    FuncTemplate("count_vowels", 3, ("count_vowels", "vowels", "vowel_count", "num_vowels"), "s",
                 "returns the number of vowels (a, e, i, o, u) in the lowercase string s", "返回小写字符串 s 中元音字母（a, e, i, o, u）的个数",
                 "    count = 0\n    for c in s:\n        if c in \"aeiou\":\n            count += 1\n    return count",
                 (("Start with count = 0.", "先设 count = 0。"), ("For each character, if it is one of aeiou, add 1.", "遍历每个字符，是 aeiou 之一就加 1。"),
                  ("Return count.", "返回 count。")),
                 lambda k, s: sum(map(s.count, "aeiou")), lambda rng, k: [(" ".join(_words(rng, rng.randint(1, 3))),) for _ in range(4)]),
    FuncTemplate("factorial", 3, ("factorial", "fact", "product_upto", "falling"), "n",
                 "returns n! = 1 * 2 * ... * n for n >= 0 (0! is 1)", "返回 n 的阶乘 n! = 1 * 2 * ... * n，n >= 0（0! 等于 1）",
                 "    result = 1\n    for i in range(2, n + 1):\n        result *= i\n    return result",
                 (("Start with result = 1, which is also 0! and 1!.", "先设 result = 1，这也是 0! 和 1!。"), ("Multiply result by every i from 2 to n.", "把 result 依次乘以 2 到 n 的每个 i。"),
                  ("Return result.", "返回 result。")),
                 lambda k, n: factorial(n), lambda rng, k: [(0,)] + [(rng.randint(1, 10),) for _ in range(3)]),
    FuncTemplate("digit_sum", 3, ("digit_sum", "sum_digits", "add_digits", "digits_total"), "n",
                 "returns the sum of the digits of the non-negative integer n", "返回非负整数 n 的各位数字之和",
                 "    total = 0\n    while n > 0:\n        total += n % 10\n        n //= 10\n    return total",
                 (("Start with total = 0.", "先设 total = 0。"), ("While n > 0, add the last digit n % 10 to total and drop it with n //= 10.", "当 n > 0 时，把末位 n % 10 加到 total，再用 n //= 10 去掉末位。"),
                  ("Return total.", "返回 total。")),
                 lambda k, n: sum(int(c) for c in str(n)), lambda rng, k: [(0,)] + [(rng.randint(1, 99999),) for _ in range(3)]),
    FuncTemplate("count_above", 3, ("count_above", "count_greater", "how_many_above", "num_over"), "nums",
                 "returns how many numbers in nums are greater than {k}", "返回 nums 中大于 {k} 的数的个数",
                 "    count = 0\n    for n in nums:\n        if n > {k}:\n            count += 1\n    return count",
                 (("Start with count = 0.", "先设 count = 0。"), ("For each number greater than {k}, add 1.", "每遇到一个大于 {k} 的数就加 1。"),
                  ("Return count.", "返回 count。")),
                 lambda k, nums: len([v for v in nums if v > k]), lambda rng, k: [(_ints(rng, rng.randint(0, 7)),) for _ in range(4)],
                 lambda rng: rng.randint(-5, 10)),
    FuncTemplate("keep_even", 3, ("keep_even", "evens", "only_even", "filter_even"), "nums",
                 "returns a list of the even numbers in nums, in their original order", "按原来的顺序返回 nums 中的偶数组成的列表",
                 "    result = []\n    for n in nums:\n        if n % 2 == 0:\n            result.append(n)\n    return result",
                 (("Start with an empty list result.", "先建一个空列表 result。"), ("Append each n with n % 2 == 0.", "把满足 n % 2 == 0 的 n 加进去。"),
                  ("Return result.", "返回 result。")),
                 lambda k, nums: list(filter(lambda v: not v & 1, nums)), lambda rng, k: [(_ints(rng, rng.randint(0, 7)),) for _ in range(4)]),
    FuncTemplate("palindrome", 3, ("is_palindrome", "palindrome", "mirror", "same_both_ways"), "s",
                 "returns True if the string s reads the same forwards and backwards", "如果字符串 s 正着读和倒着读一样就返回 True",
                 "    return s == s[::-1]", (("Reverse s with s[::-1].", "用 s[::-1] 得到倒过来的 s。"), ("s is a palindrome exactly when it equals its reverse.", "s 等于它的反转时就是回文。")),
                 lambda k, s: all(s[i] == s[-1 - i] for i in range(len(s))), lambda rng, k: [(w,) for w in _words(rng, 4)]),
    FuncTemplate("sum_squares", 3, ("sum_squares", "square_sum", "squares_total", "add_squares"), "n",
                 "returns 1*1 + 2*2 + ... + n*n for n >= 0", "返回 1*1 + 2*2 + ... + n*n（n >= 0）",
                 "    total = 0\n    for i in range(1, n + 1):\n        total += i * i\n    return total",
                 (("Start with total = 0.", "先设 total = 0。"), ("For each i from 1 to n, add i * i.", "对 1 到 n 的每个 i，加上 i * i。"),
                  ("Return total.", "返回 total。")),
                 lambda k, n: n * (n + 1) * (2 * n + 1) // 6, lambda rng, k: [(0,)] + [(rng.randint(1, 30),) for _ in range(3)]),
    FuncTemplate("dedupe", 3, ("dedupe", "unique", "remove_duplicates", "distinct"), "nums",
                 "returns nums without repeated numbers, keeping the first occurrence of each", "返回去掉重复数后的 nums，每个数保留第一次出现",
                 "    seen = []\n    for n in nums:\n        if n not in seen:\n            seen.append(n)\n    return seen",
                 (("Start with an empty list seen.", "先建一个空列表 seen。"), ("Append each n that is not in seen yet.", "n 还不在 seen 里就加进去。"),
                  ("Return seen.", "返回 seen。")),
                 lambda k, nums: list(dict.fromkeys(nums)), lambda rng, k: [([rng.randint(0, 5) for _ in range(rng.randint(0, 8))],) for _ in range(4)]),
    # ---- level 3: classic small algorithms (level 4 is compositional: data/code_chains.py)
    FuncTemplate("fibonacci", 3, ("fib", "fibonacci", "sequence", "nth_term"), "n",
                 "returns f(n) for the sequence f(0) = {p}, f(1) = {q}, f(n) = f(n - 1) + f(n - 2)",
                 "返回数列的第 n 项 f(n)，其中 f(0) = {p}，f(1) = {q}，f(n) = f(n - 1) + f(n - 2)",
                 "    a, b = {p}, {q}\n    for _ in range(n):\n        a, b = b, a + b\n    return a",
                 (("Keep two numbers a, b = {p}, {q}: f(0) and f(1).", "用两个数 a, b = {p}, {q}，即 f(0) 和 f(1)。"),
                  ("Repeat n times: a, b = b, a + b.", "重复 n 次：a, b = b, a + b。"),
                  ("Then a is f(n).", "最后 a 就是 f(n)。")),
                 lambda k, n: _sequence(k["p"], k["q"], n), lambda rng, k: [(0,), (1,)] + [(rng.randint(2, 20),) for _ in range(3)],
                 lambda rng: {"p": rng.randint(0, 3), "q": rng.randint(1, 4)}),
    FuncTemplate("is_prime", 3, ("is_prime", "prime", "check_prime", "prime_test"), "n",
                 "returns True if n is a prime number, otherwise False", "如果 n 是质数返回 True，否则返回 False",
                 "    if n < 2:\n        return False\n    d = 2\n    while d * d <= n:\n        if n % d == 0:\n            return False\n        d += 1\n    return True",
                 (("Numbers below 2 are not prime.", "小于 2 的数不是质数。"), ("Try every divisor d while d * d <= n; if one divides n, it is not prime.", "当 d * d <= n 时逐个试除数 d，能整除就不是质数。"),
                  ("If none divides n, it is prime.", "都不能整除就是质数。")),
                 lambda k, n: _is_prime(n), lambda rng, k: [(0,), (1,), (2,)] + [(rng.randint(3, 120),) for _ in range(3)]),
    FuncTemplate("gcd", 3, ("gcd", "greatest_common_divisor", "common_factor", "hcf"), "a, b",
                 "returns the greatest common divisor of the positive integers a and b", "返回正整数 a 和 b 的最大公约数",
                 "    while b:\n        a, b = b, a % b\n    return a",
                 (("Use Euclid's method: replace a, b with b, a % b until b is 0.", "用辗转相除法：把 a, b 换成 b, a % b，直到 b 为 0。"), ("Then a is the answer.", "这时 a 就是答案。")),
                 lambda k, a, b: gcd(a, b), lambda rng, k: [(rng.randint(1, 99), rng.randint(1, 99)) for _ in range(3)] + [(12, 18)]),
    FuncTemplate("kth_largest", 3, ("kth_largest", "runner_up", "nth_biggest", "rank_value"), "nums",
                 "returns the {ord} largest distinct value in nums (nums has at least {k} distinct values)",
                 "返回 nums 中{ord_zh}大的不同的值（nums 至少有 {k} 个不同的值）",
                 "    values = sorted(set(nums))\n    return values[-{k}]",
                 (("Remove duplicates with set(nums) and sort the values.", "用 set(nums) 去重后排序。"),
                  ("The {ord} largest is values[-{k}].", "{ord_zh}大的就是 values[-{k}]。")),
                 lambda k, nums: _drop_max(set(nums), k["k"] - 1),
                 lambda rng, k: [(lambda v: (v + [v[0] + 1, v[0] + 2],))(_ints(rng, rng.randint(1, 5))) for _ in range(4)],
                 lambda rng: rng.choice(({"k": 2, "ord": "second", "ord_zh": "第二"}, {"k": 3, "ord": "third", "ord_zh": "第三"}))),
    FuncTemplate("run_length", 3, ("run_length", "rle", "compress", "encode_runs"), "s",
                 "returns the run-length encoding of s: each run of equal letters as the letter then the run length, e.g. 'aaab' gives 'a3b1'",
                 "返回 s 的游程编码：每段相同字母写成字母加长度，例如 'aaab' 得到 'a3b1'",
                 "    result = \"\"\n    i = 0\n    while i < len(s):\n        j = i\n        while j < len(s) and s[j] == s[i]:\n            j += 1\n        result += s[i] + str(j - i)\n        i = j\n    return result",
                 (("Walk through s with an index i.", "用下标 i 遍历 s。"), ("Move j forward while s[j] equals s[i]; the run length is j - i.", "当 s[j] 等于 s[i] 时 j 往后走，这段长度是 j - i。"),
                  ("Append the letter and the length, then continue from j.", "写下字母和长度，再从 j 继续。")),
                 lambda k, s: "".join(f"{c}{n}" for c, n in _runs(s)),
                 lambda rng, k: [("".join(rng.choice("ab") * rng.randint(1, 3) for _ in range(rng.randint(1, 4))),) for _ in range(3)] + [("",)]),
    FuncTemplate("balanced", 3, ("balanced", "is_balanced", "brackets_ok", "check_brackets"), "s",
                 "returns True if the brackets ()[]{} in s are balanced and properly nested", "如果 s 中的括号 ()[]{} 配对且嵌套正确就返回 True",
                 "    pairs = {\")\": \"(\", \"]\": \"[\", \"}\": \"{\"}\n    stack = []\n    for c in s:\n        if c in \"([{\":\n            stack.append(c)\n        elif c in pairs:\n            if not stack or stack.pop() != pairs[c]:\n                return False\n    return not stack",
                 (("Use a stack: push every opening bracket.", "用一个栈：遇到左括号就压入。"), ("For a closing bracket, the top of the stack must be its partner.", "遇到右括号时，栈顶必须是与它配对的左括号。"),
                  ("At the end the stack must be empty.", "最后栈必须为空。")),
                 lambda k, s: _balanced_by_erasing(s), lambda rng, k: [(_brackets(rng),) for _ in range(5)]),
    FuncTemplate("most_common", 3, ("most_common", "mode", "most_frequent", "top_value"), "nums",
                 "returns the number that appears most often in the non-empty list nums; on a tie, the smallest such number",
                 "返回非空列表 nums 中出现次数最多的数；次数相同时返回其中最小的",
                 "    best = None\n    for n in sorted(set(nums)):\n        if best is None or nums.count(n) > nums.count(best):\n            best = n\n    return best",
                 (("Go through the distinct values from small to large.", "从小到大遍历不同的值。"), ("Keep the value with a strictly larger count, so ties keep the smaller one.", "只有出现次数严格更多时才更新，这样次数相同保留较小的。"),
                  ("Return it.", "返回它。")),
                 lambda k, nums: min(Counter(nums).items(), key=lambda kv: (-kv[1], kv[0]))[0],
                 lambda rng, k: [([rng.randint(0, 4) for _ in range(rng.randint(1, 8))],) for _ in range(4)]),
    FuncTemplate("rotate_k", 3, ("rotate", "rotate_left", "shift_left", "roll"), "nums",
                 "returns nums rotated left by {k} positions (the first {k} items move to the end; wrap around for short lists)",
                 "返回把 nums 向左旋转 {k} 位的结果（前 {k} 个元素移到末尾；列表较短时循环计算）",
                 "    if not nums:\n        return []\n    k = {k} % len(nums)\n    return nums[k:] + nums[:k]",
                 (("An empty list stays empty.", "空列表保持不变。"), ("Reduce the shift: k = {k} % len(nums).", "先取 k = {k} % len(nums)。"),
                  ("The result is nums[k:] + nums[:k].", "结果是 nums[k:] + nums[:k]。")),
                 lambda k, nums: [nums[(i + k) % len(nums)] for i in range(len(nums))],
                 lambda rng, k: [(_ints(rng, rng.randint(0, 6), 0, 9),) for _ in range(4)],
                 lambda rng: rng.randint(1, 5)),
    FuncTemplate("collatz", 3, ("collatz_steps", "collatz", "steps_to_one", "hailstone"), "n",
                 "returns how many steps the Collatz rule (n // 2 if n is even, else 3 * n + 1) takes to reach 1 from n >= 1",
                 "返回从 n >= 1 出发按考拉兹规则（偶数变 n // 2，奇数变 3 * n + 1）到达 1 需要的步数",
                 "    steps = 0\n    while n != 1:\n        if n % 2 == 0:\n            n = n // 2\n        else:\n            n = 3 * n + 1\n        steps += 1\n    return steps",
                 (("Count steps, starting from 0.", "从 0 开始计步数。"), ("While n is not 1, apply the rule and add one step.", "当 n 不是 1 时按规则变换并加一步。"),
                  ("Return the count.", "返回步数。")),
                 lambda k, n: _collatz(n), lambda rng, k: [(1,)] + [(rng.randint(2, 60),) for _ in range(3)]),
)


def _sequence(p, q, n):
    seq = [p, q]
    while len(seq) <= n:
        seq.append(seq[-1] + seq[-2])
    return seq[n]


def _drop_max(values: set, times: int):
    for _ in range(times):
        values.discard(max(values))
    return max(values)


def _runs(s):
    out = []
    for c in s:
        if out and out[-1][0] == c:
            out[-1][1] += 1
        else:
            out.append([c, 1])
    return out


def _balanced_by_erasing(s):
    """Balanced iff erasing adjacent pairs repeatedly leaves nothing (other chars ignored)."""
    t = "".join(c for c in s if c in "()[]{}")
    while True:
        u = t.replace("()", "").replace("[]", "").replace("{}", "")
        if u == t:
            return not t
        t = u


IOS: tuple[IOTemplate, ...] = (
    # ---- level 1
    IOTemplate("io_binop", 1, "reads two integers a and b from one line and prints {k_en}", "从一行读入两个整数 a 和 b，输出 {k_zh}",
               "a, b = map(int, input().split())\nprint(a {k} b)",
               (("Read the line and split it into two integers.", "读入一行，拆成两个整数。"), ("Print a {k} b.", "输出 a {k} b。")),
               lambda k, line: str(_BINOP_FN[k](*map(int, line.split()))),
               lambda rng, k: [f"{rng.randint(-20, 50)} {rng.randint(-20, 50)}" for _ in range(4)],
               lambda rng: rng.choice("+-*")),
    IOTemplate("io_times_k", 1, "reads an integer n and prints n * {k}", "读入一个整数 n，输出 n * {k}",
               "n = int(input())\nprint(n * {k})",
               (("Read n as an integer.", "把 n 读成整数。"), ("Print n * {k}.", "输出 n * {k}。")),
               lambda k, line: str(sum([int(line)] * k)), lambda rng, k: [str(rng.randint(-50, 50)) for _ in range(4)],
               lambda rng: rng.randint(2, 12)),
    IOTemplate("io_plus_k", 1, "reads an integer n and prints n + {k}", "读入一个整数 n，输出 n + {k}",
               "n = int(input())\nprint(n + {k})",
               (("Read n as an integer.", "把 n 读成整数。"), ("Print n + {k}.", "输出 n + {k}。")),
               lambda k, line: str(int(line) - (-k)), lambda rng, k: [str(rng.randint(-50, 50)) for _ in range(4)],
               lambda rng: rng.randint(1, 30)),
    # ---- level 2
    IOTemplate("io_sum_line", 2, "reads integers from one line, separated by spaces, and prints their sum times {k}",
               "从一行读入若干个用空格分开的整数，输出它们的和乘以 {k}",
               "nums = list(map(int, input().split()))\nprint(sum(nums) * {k})",
               (("Read the line and convert each part to an integer.", "读入一行，把每部分转成整数。"), ("Print sum(nums) * {k}.", "输出 sum(nums) * {k}。")),
               lambda k, line: str(k * sum(int(t) for t in line.split())),
               lambda rng, k: [" ".join(map(str, _ints(rng, rng.randint(1, 6)))) for _ in range(4)],
               lambda rng: rng.randint(1, 5)),
    IOTemplate("io_max_line", 2, "reads integers from one line, separated by spaces, and prints the largest one plus {k}",
               "从一行读入若干个用空格分开的整数，输出最大的那个加上 {k}",
               "nums = list(map(int, input().split()))\nprint(max(nums) + {k})",
               (("Read the line and convert each part to an integer.", "读入一行，把每部分转成整数。"), ("Print max(nums) + {k}.", "输出 max(nums) + {k}。")),
               lambda k, line: str(sorted(int(t) for t in line.split())[-1] + k),
               lambda rng, k: [" ".join(map(str, _ints(rng, rng.randint(1, 6)))) for _ in range(4)],
               lambda rng: rng.randint(0, 9)),
    IOTemplate("io_repeat_word", 2, "reads a word and prints it {k} times with no spaces", "读入一个单词，把它连续输出 {k} 次，中间没有空格",
               "s = input().strip()\nprint(s * {k})",
               (("Read the word.", "读入单词。"), ("Print s * {k}.", "输出 s * {k}。")),
               lambda k, line: "".join(line.strip() for _ in range(k)), lambda rng, k: _words(rng, 4),
               lambda rng: rng.randint(2, 4)),
    IOTemplate("io_reverse_word", 2, "reads a word and prints it reversed{k_en}", "读入一个单词，输出倒过来的单词{k_zh}",
               "s = input().strip()\nprint(s[::-1]{k})",
               (("Read the word.", "读入单词。"), ("Print s[::-1]{k}.", "输出 s[::-1]{k}。")),
               lambda k, line: "".join(reversed(line.strip())).upper() if k else "".join(reversed(line.strip())),
               lambda rng, k: _words(rng, 4), lambda rng: rng.choice(("", ".upper()"))),
    # ---- level 3
    IOTemplate("io_factorial", 3, "reads an integer n >= 0 and prints n! times {k}", "读入一个整数 n >= 0，输出 n! 乘以 {k}",
               "n = int(input())\nresult = {k}\nfor i in range(2, n + 1):\n    result *= i\nprint(result)",
               (("Read n.", "读入 n。"), ("Start with result = {k} and multiply by every i from 2 to n.", "先设 result = {k}，再乘以 2 到 n 的每个 i。"), ("Print result.", "输出 result。")),
               lambda k, line: str(k * factorial(int(line))), lambda rng, k: ["0"] + [str(rng.randint(1, 9)) for _ in range(3)],
               lambda rng: rng.randint(1, 3)),
    IOTemplate("io_count_words", 3, "reads a line of words separated by spaces and prints how many words are longer than {k} letters",
               "读入一行用空格分开的单词，输出长度超过 {k} 个字母的单词个数",
               "words = input().split()\ncount = 0\nfor w in words:\n    if len(w) > {k}:\n        count += 1\nprint(count)",
               (("Split the line into words.", "把这一行拆成单词。"), ("Count the words with len(w) > {k}.", "数出 len(w) > {k} 的单词。"), ("Print the count.", "输出个数。")),
               lambda k, line: str(len([w for w in line.split() if len(w) > k])),
               lambda rng, k: [" ".join(_words(rng, rng.randint(1, 5))) for _ in range(4)],
               lambda rng: rng.randint(2, 5)),
    IOTemplate("io_count_mult", 3, "reads integers from one line and prints how many of them are divisible by {k}",
               "从一行读入若干整数，输出其中能被 {k} 整除的个数",
               "nums = list(map(int, input().split()))\ncount = 0\nfor n in nums:\n    if n % {k} == 0:\n        count += 1\nprint(count)",
               (("Read the integers.", "读入这些整数。"), ("Count each n with n % {k} == 0.", "数出满足 n % {k} == 0 的 n。"), ("Print the count.", "输出个数。")),
               lambda k, line: str(sum(1 for t in line.split() if int(t) / k == int(t) // k)),
               lambda rng, k: [" ".join(map(str, _ints(rng, rng.randint(1, 7), 0, 30))) for _ in range(4)],
               lambda rng: rng.randint(2, 5)),
    IOTemplate("io_range", 3, "reads an integer n >= 1 and prints the multiples of {k} from {k} to n * {k}, separated by spaces",
               "读入一个整数 n >= 1，输出从 {k} 到 n * {k} 的 {k} 的倍数，用空格分开",
               "n = int(input())\nparts = []\nfor i in range(1, n + 1):\n    parts.append(str(i * {k}))\nprint(\" \".join(parts))",
               (("Read n.", "读入 n。"), ("Collect i * {k} for i from 1 to n as strings.", "把 1 到 n 的 i * {k} 转成字符串收集起来。"), ("Print them joined by spaces.", "用空格连接后输出。")),
               lambda k, line: " ".join(str(v) for v in range(k, k * int(line) + 1, k)),
               lambda rng, k: [str(rng.randint(1, 8)) for _ in range(4)],
               lambda rng: rng.randint(1, 9)),
    # ---- level 3: classic small algorithms (level 4 is compositional: data/code_chains.py)
    IOTemplate("io_primes", 3, "reads an integer n >= 2 and prints all primes up to n, separated by spaces", "读入一个整数 n >= 2，输出不超过 n 的所有质数，用空格分开",
               "n = int(input())\nprimes = []\nfor m in range(2, n + 1):\n    is_prime = True\n    for p in primes:\n        if m % p == 0:\n            is_prime = False\n            break\n    if is_prime:\n        primes.append(m)\nprint(\" \".join(map(str, primes)))",
               (("Read n.", "读入 n。"), ("For each m from 2 to n, it is prime if no smaller prime divides it.", "对 2 到 n 的每个 m，没有更小的质数能整除它就是质数。"),
                ("Print the primes joined by spaces.", "把质数用空格连接后输出。")),
               lambda k, line: " ".join(str(v) for v in range(2, int(line) + 1) if _is_prime(v)),
               lambda rng, k: ["2"] + [str(rng.randint(3, 60)) for _ in range(3)]),
    IOTemplate("io_fib", 3, "reads an integer n >= 1 and prints the first n Fibonacci numbers starting 0 1, separated by spaces",
               "读入一个整数 n >= 1，输出从 0 1 开始的前 n 个斐波那契数，用空格分开",
               "n = int(input())\na, b = 0, 1\nparts = []\nfor _ in range(n):\n    parts.append(str(a))\n    a, b = b, a + b\nprint(\" \".join(parts))",
               (("Read n and start with a, b = 0, 1.", "读入 n，先设 a, b = 0, 1。"), ("n times: record a, then a, b = b, a + b.", "重复 n 次：记下 a，再令 a, b = b, a + b。"),
                ("Print the recorded numbers joined by spaces.", "把记下的数用空格连接后输出。")),
               lambda k, line: " ".join(str(_fib(i)) for i in range(int(line))),
               lambda rng, k: ["1", "2"] + [str(rng.randint(3, 15)) for _ in range(2)]),
    IOTemplate("io_sort_desc", 3, "reads integers from one line and prints them sorted from largest to smallest, separated by spaces",
               "从一行读入若干整数，按从大到小排序后输出，用空格分开",
               "nums = list(map(int, input().split()))\nnums.sort(reverse=True)\nprint(\" \".join(map(str, nums)))",
               (("Read the integers.", "读入这些整数。"), ("Sort them with reverse=True.", "用 reverse=True 排序。"), ("Print them joined by spaces.", "用空格连接后输出。")),
               lambda k, line: " ".join(map(str, sorted((int(t) for t in line.split()), key=lambda v: -v))),
               lambda rng, k: [" ".join(map(str, _ints(rng, rng.randint(1, 6)))) for _ in range(4)]),
    IOTemplate("io_top_word", 3, "reads a line of lowercase words and prints the most frequent word; on a tie, the alphabetically first",
               "读入一行小写单词，输出出现次数最多的单词；次数相同时输出字母顺序最靠前的",
               "words = input().split()\ncounts = {}\nfor w in words:\n    counts[w] = counts.get(w, 0) + 1\nbest = min(counts, key=lambda w: (-counts[w], w))\nprint(best)",
               (("Count each word in a dictionary.", "用字典统计每个单词的次数。"), ("Pick the word with the highest count; break ties by the word itself.", "选次数最多的单词；次数相同时按单词本身比较。"),
                ("Print it.", "输出它。")),
               lambda k, line: sorted(Counter(line.split()).items(), key=lambda kv: (-kv[1], kv[0]))[0][0],
               lambda rng, k: [" ".join(rng.choice(WORDS[:5]) for _ in range(rng.randint(1, 7))) for _ in range(4)]),
)


def _fill(text: str, k) -> str:
    """Fill the template's parameter into a text: {k}; {k_en}/{k_zh} for the operator and
    upper-case templates; {name} for each entry of a dict parameter."""
    if k is None:
        return text
    if isinstance(k, dict):
        for name, value in k.items():
            text = text.replace("{" + name + "}", str(value))
        return text
    if isinstance(k, str) and k in BINOP_EN:
        return text.replace("{k_en}", BINOP_EN[k]).replace("{k_zh}", BINOP_ZH[k]).replace("{k}", k)
    if isinstance(k, str):  # io_reverse_word: '' or '.upper()'
        en = " in upper case" if k else ""
        zh = "，并转成大写" if k else ""
        return text.replace("{k_en}", en).replace("{k_zh}", zh).replace("{k}", k)
    return text.replace("{k}", str(k))


def _param_key(k) -> str:
    return ",".join(f"{n}={v}" for n, v in sorted(k.items())) if isinstance(k, dict) else str(k)


_ASCII_RUN = re.compile(r"[ -~]+")


def _quote_code(text: str) -> str:
    """Put the code inside Chinese reasoning in backticks (`best = nums[0]`): identifiers are code,
    not English words, and the language-consistency reward counts inline code as neutral."""
    def wrap(m: re.Match) -> str:
        run = m.group(0)
        core = run.strip()
        if "`" in run or not re.search(r"[A-Za-z]", core):
            return run
        lead, trail = run[: len(run) - len(run.lstrip())], run[len(run.rstrip()):]
        return f"{lead}`{core}`{trail}"
    return _ASCII_RUN.sub(wrap, text)


def tells_apart_from_constants(pairs: list[tuple]) -> bool:
    """Whether (input, expected output) test cases, the first one the prompt's example, fail both
    a constant function and the example hard-coded (its output for its input, a constant
    otherwise): the outputs for the other inputs take at least two values. Equality is Python's,
    as the tests compare (`0 == False`)."""
    example_input = pairs[0][0]
    rest = [out for inp, out in pairs if inp != example_input]
    return any(out != rest[0] for out in rest[1:])


def _function_problem(rng: random.Random, t: FuncTemplate) -> Problem:
    k = t.param(rng)
    name = rng.choice(BINOPS[k] if t.template == "binop" else t.names)
    code = f"def {name}({t.args}):\n" + _fill(t.code, k)
    while True:
        cases = t.cases(rng, k)
        results = [t.oracle(k, *args) for args in cases]
        if tells_apart_from_constants(list(zip(cases, results))):
            break
    example_args, example_out = cases[0], results[0]
    shown = ", ".join(repr(a) for a in example_args)
    tests = "def check(candidate):\n" + "".join(
        f"    assert candidate({', '.join(repr(a) for a in args)}) == {out!r}\n" for args, out in zip(cases, results)
    )
    en = f"Write a Python function `{name}({t.args})` that {_fill(t.en, k)}. For example, {name}({shown}) returns {example_out!r}."
    zh = f"写一个 Python 函数 `{name}({t.args})`，{_fill(t.zh, k)}。例如 {name}({shown}) 返回 {example_out!r}。"
    steps = [Step(f"I need a function {name}({t.args}).", _quote_code(f"需要写函数 {name}({t.args})。"))]
    steps += [Step(_fill(e, k), _quote_code(_fill(z, k))) for e, z in t.plan]
    steps.append(Step(f"Check: {name}({shown}) should return {example_out!r}.",
                      _quote_code(f"检查：{name}({shown}) 应该返回 {example_out!r}。")))
    return Problem(
        task="code", difficulty=t.difficulty, key=f"code:{t.template}|{name}|{_param_key(k)}|{shown}",
        prompt={"en": en, "zh": zh}, steps=steps, answer=code, answer_text=f"\n{code}\n",
        tests=tests, entry_point=name,
    )


def _io_problem(rng: random.Random, t: IOTemplate) -> Problem:
    k = t.param(rng)
    code = _fill(t.code, k)
    while True:
        inputs = t.cases(rng, k)
        if tells_apart_from_constants([(line, t.oracle(k, line)) for line in inputs]):
            break
    cases = [{"input": line + "\n", "output": t.oracle(k, line) + "\n"} for line in inputs]
    ex_in, ex_out = inputs[0], cases[0]["output"].rstrip("\n")
    en = f"Write a Python program that {_fill(t.en, k)}. For example, for the input `{ex_in}` it prints `{ex_out}`."
    zh = f"写一个 Python 程序，{_fill(t.zh, k)}。例如输入 `{ex_in}` 时输出 `{ex_out}`。"
    steps = [Step("The program reads from standard input and prints the result.", "程序从标准输入读取，再输出结果。")]
    steps += [Step(_fill(e, k), _quote_code(_fill(z, k))) for e, z in t.plan]
    steps.append(Step(f"Check: for the input `{ex_in}` it prints `{ex_out}`.", f"检查：输入 `{ex_in}` 时输出 `{ex_out}`。"))
    return Problem(
        task="code_io", difficulty=t.difficulty, key=f"code_io:{t.template}|{_param_key(k)}|{ex_in}",
        prompt={"en": en, "zh": zh}, steps=steps, answer=code, answer_text=f"\n{code}\n",
        tests=json.dumps(cases, ensure_ascii=False), entry_point="",
    )


CHAIN_SHARE = {3: 0.5, 4: 1.0}  # difficulty -> fraction of problems that are compositional chains


def generate_function(rng: random.Random, difficulty: int) -> Problem:
    """One function-writing task (`code`) at `difficulty`."""
    if rng.random() < CHAIN_SHARE.get(difficulty, 0.0):
        return code_chains.function_problem(rng, difficulty)
    return _function_problem(rng, rng.choice([t for t in FUNCS if t.difficulty == difficulty]))


def generate_io(rng: random.Random, difficulty: int) -> Problem:
    """One stdin/stdout program task (`code_io`) at `difficulty`."""
    if rng.random() < CHAIN_SHARE.get(difficulty, 0.0):
        return code_chains.io_problem(rng, difficulty)
    return _io_problem(rng, rng.choice([t for t in IOS if t.difficulty == difficulty]))
