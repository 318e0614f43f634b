"""Code reward: run a candidate program against tests in the sandbox and score it.

- `check_solution(code, tests, entry_point=...)` -> `CodeResult(passed, total, status, ...)`.
  `tests` is either HumanEval-style Python defining `check(candidate)` (or top-level asserts that
  call the entry point by name), MBPP's list of assert statements, or stdin/stdout cases
  `[{"input": ..., "output": ...}]` (a list or its JSON string, as dataset columns store it).
  HumanEval rows work as its own harness composes them: `check_solution(prompt + completion,
  test, entry_point=...)`.
- `code_reward(prompts, completions, tests=..., entry_point=...)`: passed/total per sample (or
  all-or-nothing), None for samples without tests. Code comes from the completion's
  `<answer>...</answer>`, preferring a fenced ```python block inside it.

Why the verdict cannot be forged (peers score exit codes or "all asserts ran" markers that the
candidate can print, or run tests in the candidate's process where `exit(0)`, an `__eq__` that is
always True, frame walking or a patched AssertionError pass them):
- The test code and the candidate run in two different processes inside one sandbox: a trusted
  harness (H) executes the tests; the candidate (C) is forked from H BEFORE H reads the tests and
  the per-run nonce, so C's memory never holds them. H makes itself non-dumpable, so C (same uid,
  no capabilities) cannot ptrace it or read /proc/H/mem or /proc/H/fd.
- `candidate(*args)` in the tests is a proxy: H sends the arguments to C as data, C calls the
  function and sends the return value back as data (JSON with tags for tuple/set/dict/bytes),
  and H compares plain Python values. Objects never cross, so `__eq__` tricks earn nothing, and
  `exit(0)` in C only makes every later call fail. Other functions the tests call but do not
  define are proxies the same way: MBPP's asserts name the function under test (served by C),
  and HumanEval/32, 38 and 50 call helpers the prompt defines (`poly`, `encode_cyclic`,
  `encode_shift`). Those are served by a third process P, forked from H like C, that runs only
  the program's prelude (its statements before the entry point: the prompt's part), so a
  completion that redefines `poly`, or patches `math` under it, cannot change what the tests
  compute.
- Each statement of `check` that tests the candidate is run and recorded on its own (so
  passed/total is per test), and every record H sends to the parent travels on a private pipe C
  does not hold, tagged with a random nonce made per run (C never has it in memory). The
  parent counts only records with that nonce, each test at most once, against a total it
  computed itself from the test code. The exit code plays no part.
- stdin/stdout cases: each case runs in a fresh process (forked by H, in one sandbox per
  candidate); its stdout comes back to the parent, which compares it with the expected output
  (never sent into the sandbox), ignoring trailing spaces and trailing blank lines. A case passes
  only if the program also exits with status 0.
- Layers underneath (rewards/sandbox.py): seccomp denies ptrace and cross-process memory
  access; H is PID 1 of the sandbox's pid namespace, so C's signals do not reach it.
- Limits: arguments and return values must be plain data (None, bool, int, float, complex,
  str, bytes, list, tuple, dict, set); in-place changes to arguments are not seen by the tests.
"""

from __future__ import annotations

from rewards.format import answer_blocks, completion_text, response_region  # one definition each

import ast
import builtins
import concurrent.futures
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass, field

from rewards.sandbox import SandboxLimits, run_sandboxed

# Score passed/total (False) or 1.0 only when every test passes (True). Override per call with
# code_reward(..., all_or_nothing=True) or functools.partial.
code_reward_all_or_nothing = False

_RESULT_CAP = 4 << 20
_CANDIDATE = "__rlpipe_candidate__"
_RECORD = "__rlpipe_record__"


@dataclass(frozen=True)
class CodeResult:
    """Verdict of one candidate against its tests.

    status: "pass" (all tests passed), "fail" (some failed), "error" (the candidate did not load,
    or the harness reported nothing), "timeout", "oom" or "killed" (the sandbox's verdict when
    the run ended before the harness finished). details: short reasons for failed tests.
    """

    passed: int
    total: int
    status: str
    details: tuple[str, ...] = field(default=())
    wall_s: float = 0.0

    @property
    def score(self) -> float:
        return self.passed / self.total if self.total else 0.0


# --------------------------------------------------------------------------------------------
# The in-sandbox harness. It uses only the standard library; the parent sends it as the program.
# argv: mode ("call" | "io"), candidate fd, secret fd, result fd.
# --------------------------------------------------------------------------------------------
HARNESS = r'''
import builtins, ctypes, json, os, select, signal, sys, time

MODE, CAND_FD, SECRET_FD, RESULT_FD = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

# Non-dumpable: a process without capabilities can no longer ptrace us, read /proc/<H>/mem or
# open /proc/<H>/fd/*. Fail closed if the kernel refuses.
if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
    os._exit(97)


def enc(v, depth=0):
    """Plain data -> JSON-able with tags; subclasses become their base type."""
    if depth > 200:
        raise ValueError("value nested too deeply")
    if v is None or type(v) in (bool, str):
        return v
    if isinstance(v, str):
        return str.__str__(v)
    if isinstance(v, int):
        return int.__index__(v)
    if isinstance(v, float):
        return float.__float__(v)
    if isinstance(v, list):
        return [enc(x, depth + 1) for x in list.__iter__(v)]
    if isinstance(v, tuple):
        return {"t": [enc(x, depth + 1) for x in tuple.__iter__(v)]}
    if isinstance(v, dict):
        return {"d": [[enc(k, depth + 1), enc(x, depth + 1)] for k, x in dict.items(v)]}
    if isinstance(v, frozenset):
        return {"z": [enc(x, depth + 1) for x in frozenset.__iter__(v)]}
    if isinstance(v, set):
        return {"s": [enc(x, depth + 1) for x in set.__iter__(v)]}
    if isinstance(v, (bytes, bytearray)):
        return {"b": bytes(v).hex()}
    if isinstance(v, complex):
        return {"c": [complex.__complex__(v).real, complex.__complex__(v).imag]}
    raise TypeError("cannot pass a value of type %s" % type(v).__name__)


def dec(x):
    """JSON with tags -> plain builtin values only (no object of the candidate's survives)."""
    t = type(x)
    if x is None or t in (bool, int, float, str):
        return x
    if t is list:
        return [dec(i) for i in x]
    if t is dict and len(x) == 1:
        (k, v), = x.items()
        if type(v) is list:
            if k == "t":
                return tuple(dec(i) for i in v)
            if k == "d":
                return {dec(p[0]): dec(p[1]) for p in v if type(p) is list and len(p) == 2}
            if k == "s":
                return set(dec(i) for i in v)
            if k == "z":
                return frozenset(dec(i) for i in v)
            if k == "c" and len(v) == 2:
                return complex(float(v[0]), float(v[1]))
        if k == "b" and type(v) is str:
            return bytes.fromhex(v)
    raise ValueError("malformed value from candidate")


def read_all(fd):
    chunks = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            os.close(fd)
            return b"".join(chunks)
        chunks.append(b)


def serve(source, main, req_r, resp_w):
    """C (the program) or P (its prelude): run `source` in a fresh module namespace, then answer
    call requests until EOF. A request names the function (None: `main`, the entry point, or the
    last function the source defines when `main` is empty); P has no main function."""
    null = os.open("/dev/null", os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    sys.setrecursionlimit(sys.getrecursionlimit() + 30)
    out = os.fdopen(resp_w, "w", encoding="utf-8")
    try:
        ns = {"__name__": "__candidate__", "__builtins__": builtins}
        # Annotations stay unevaluated, so a missing `from typing import List` is no failure.
        flags = __import__("__future__").annotations.compiler_flag
        exec(compile(source, "<candidate>", "exec", flags=flags, dont_inherit=True), ns)
        fn = None
        if main is not None:
            name = main or next((k for k, v in reversed(list(ns.items()))
                                 if type(v).__name__ == "function"), None)
            fn = ns.get(name) if name else None
            if not callable(fn):
                raise NameError("the candidate defines no function %r" % name)
    except BaseException as e:
        out.write(json.dumps({"load_error": "%s: %s" % (type(e).__name__, str(e)[:300])}) + "\n")
        out.flush()
        os._exit(0)
    out.write('{"ready": true}\n')
    out.flush()
    for line in os.fdopen(req_r, "r", encoding="utf-8"):
        req = json.loads(line)
        try:
            f = fn if req["f"] is None else ns.get(req["f"])
            if not callable(f):
                raise NameError("name %r is not defined by the program" % req["f"])
            reply = json.dumps({"r": enc(f(*dec(req["a"]), **dec(req["k"])))})
        except BaseException as e:
            reply = json.dumps({"e": type(e).__name__, "m": str(e)[:300]})
        out.write(reply + "\n")
        out.flush()
    os._exit(0)


class CandidateError(Exception):
    pass


class Child:
    """H's end of a serving child (C or P): calls go out as data, values come back as data."""

    def __init__(self, pid, req_w, resp_r):
        self.pid = pid
        self.req = os.fdopen(req_w, "w", encoding="utf-8")
        self.resp = os.fdopen(resp_r, "r", encoding="utf-8")
        self.alive = True
        self.load_error = None

    def receive(self):
        line = self.resp.readline(64 << 20)
        if not line.endswith("\n"):
            self.alive = False
            raise CandidateError("the candidate process ended or sent garbage")
        return json.loads(line)

    def wait_ready(self):
        try:
            hello = self.receive()
        except (CandidateError, ValueError) as e:
            hello = {"load_error": "the candidate process died while loading (%s)" % e}
        if type(hello) is not dict or "ready" not in hello:
            self.load_error = str(hello.get("load_error") if type(hello) is dict else hello)[:300]
            self.alive = False

    def proxy(self, name):
        def call(*args, **kwargs):
            if not self.alive:
                raise CandidateError("the candidate is not running")
            payload = json.dumps({"f": name, "a": enc(list(args)), "k": enc(kwargs)})
            try:
                self.req.write(payload + "\n")
                self.req.flush()
            except OSError:
                self.alive = False
                raise CandidateError("the candidate process ended")
            msg = self.receive()
            if type(msg) is not dict:
                raise CandidateError("malformed reply")
            if "r" in msg:
                return dec(msg["r"])
            exc = getattr(builtins, str(msg.get("e")), None)
            text = str(msg.get("m", ""))[:300]
            if isinstance(exc, type) and issubclass(exc, Exception):
                raise exc(text)
            raise CandidateError("%s: %s" % (msg.get("e"), text))
        return call

    def stop(self):
        os.kill(self.pid, signal.SIGKILL)
        os.waitpid(self.pid, 0)  # so the child's CPU time is accounted to the run (getrusage)


def parent_call(program, prelude):
    """H in call mode: read the secret tests, run them against proxies of the program's functions
    (C) and of the helpers its prelude defines (P)."""
    secret = json.loads(read_all(SECRET_FD))
    nonce = secret["nonce"]
    result = os.fdopen(RESULT_FD, "w", encoding="utf-8")

    def send(obj):
        result.write(nonce + "\t" + json.dumps(obj) + "\n")
        result.flush()

    for child in (program, prelude):
        if child is not None:
            child.wait_ready()
    if program.load_error is not None:
        send({"load_error": program.load_error})

    def record(index, exc):
        detail = None if exc is None else ("%s: %s" % (type(exc).__name__, str(exc)[:200]))
        send({"test": index, "ok": exc is None, "detail": detail})

    ns = {"__name__": "__tests__", "__builtins__": builtins, _CANDIDATE: program.proxy(None), _RECORD: record}
    if secret["entry_point"]:
        ns[secret["entry_point"]] = ns[_CANDIDATE]
    for name in secret["program_names"]:
        ns[name] = program.proxy(name)
    for name in secret["helper_names"]:
        ns[name] = prelude.proxy(name)
    try:
        exec(compile(secret["tests"], "<tests>", "exec"), ns)
    except BaseException as e:
        send({"harness_error": "%s: %s" % (type(e).__name__, str(e)[:300])})
    send({"done": True})
    for child in (program, prelude):
        if child is not None:
            child.stop()
    os._exit(0)


def run_call():
    cfg = json.loads(read_all(CAND_FD))
    held = [SECRET_FD, RESULT_FD]  # H's descriptors no child may keep

    def spawn(source, main):
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            for fd in held + [req_w, resp_r]:
                os.close(fd)
            serve(source, main, req_r, resp_w)
        os.close(req_r)
        os.close(resp_w)
        held.extend((req_w, resp_r))
        return Child(pid, req_w, resp_r)

    # Both children are forked BEFORE H reads the secret (tests, nonce): neither ever holds them.
    program = spawn(cfg["code"], cfg["entry_point"] or "")
    prelude = spawn(cfg["prelude"], None) if cfg["prelude"] else None
    parent_call(program, prelude)


def kill_others():
    """Kill every process of the sandbox but PID 1 and us (a case's leftovers, daemons too)."""
    me = os.getpid()
    for _ in range(50):
        left = [int(p) for p in os.listdir("/proc") if p.isdigit() and int(p) not in (1, me)]
        if not left:
            return
        for p in left:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        for p in left:
            try:
                os.waitpid(p, os.WNOHANG)
            except OSError:
                pass
        time.sleep(0.002)


def run_io():
    """H in io mode: run each case in a fresh child; report its stdout (the parent compares)."""
    cfg = json.loads(read_all(CAND_FD))
    inputs, per_case_s, cap = cfg["inputs"], cfg["timeout_s"], cfg["output_cap"]
    flags = __import__("__future__").annotations.compiler_flag
    try:
        code = compile(cfg["code"], "<candidate>", "exec", flags=flags, dont_inherit=True)
    except BaseException as e:
        code, load_error = None, "%s: %s" % (type(e).__name__, str(e)[:300])
    reports = []
    for stdin_text in inputs:
        if code is None:
            reports.append({"status": "error", "stdout": "", "stderr": load_error})
            continue
        in_r, in_w = os.pipe()
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.dup2(in_r, 0)
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            for fd in (in_r, in_w, out_r, out_w, err_r, err_w, SECRET_FD, RESULT_FD):
                os.close(fd)
            sys.stdin = open(0, "r", encoding="utf-8", closefd=False)
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
            sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
            sys.setrecursionlimit(sys.getrecursionlimit() + 30)
            sys.argv = [sys.argv[0]]
            status = 0
            try:
                exec(code, {"__name__": "__main__", "__builtins__": builtins})
            except SystemExit as e:
                status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                import traceback
                traceback.print_exc()
                status = 1
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            except BaseException:
                status = status or 1
            os._exit(status & 0xFF)
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        data, off = stdin_text.encode("utf-8"), 0
        bufs = {out_r: [], err_r: []}
        sizes = {out_r: 0, err_r: 0}
        deadline = time.monotonic() + per_case_s
        over = None
        os.set_blocking(in_w, False)
        wfds = [in_w]
        if not data:
            os.close(in_w)
            wfds = []
        rfds = [out_r, err_r]
        while rfds and over is None:
            left = deadline - time.monotonic()
            if left <= 0:
                over = "timeout"
                break
            r, w, _ = select.select(rfds, wfds, [], left)
            for fd in w:
                try:
                    off += os.write(fd, data[off: off + 65536])
                except OSError:
                    off = len(data)
                if off >= len(data):
                    os.close(fd)
                    wfds = []
            for fd in r:
                b = os.read(fd, 65536)
                if not b:
                    rfds.remove(fd)
                    continue
                bufs[fd].append(b)
                sizes[fd] += len(b)
                if sizes[fd] > cap:
                    over = "killed"
        status = over
        if status is None:
            # Output closed: give the process the rest of the time to exit.
            while status is None:
                done, code_ = os.waitpid(pid, os.WNOHANG)
                if done:
                    pid = None
                    if os.WIFSIGNALED(code_):
                        status = "killed"
                    else:
                        status = "ok" if os.WEXITSTATUS(code_) == 0 else "error"
                elif time.monotonic() > deadline:
                    status = "timeout"
                else:
                    time.sleep(0.001)
        kill_others()
        for fd in [out_r, err_r] + wfds:
            os.close(fd)
        stdout = b"".join(bufs[out_r])[:cap].decode("utf-8", "replace")
        stderr = b"".join(bufs[err_r])[:cap].decode("utf-8", "replace")
        if status == "error" and stderr.rstrip().endswith("MemoryError"):
            status = "oom"
        reports.append({"status": status, "stdout": stdout, "stderr": stderr[-500:]})
    # The nonce is read only now: no case's process was ever forked with it in memory.
    nonce = json.loads(read_all(SECRET_FD))["nonce"]
    result = os.fdopen(RESULT_FD, "w", encoding="utf-8")
    for i, rep in enumerate(reports):
        result.write(nonce + "\t" + json.dumps(dict(rep, case=i), ensure_ascii=False) + "\n")
    result.write(nonce + "\t" + json.dumps({"done": True}) + "\n")
    result.flush()
    os._exit(0)


if MODE == "call":
    run_call()
else:
    run_io()
'''.replace("_CANDIDATE", repr(_CANDIDATE)).replace("_RECORD", repr(_RECORD))


# --------------------------------------------------------------------------------------------
# Parent side: turn test code into per-test statements, run, verify the records.
# --------------------------------------------------------------------------------------------

def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _assigned(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}


def _is_check_call(stmt: ast.stmt) -> bool:
    return (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call)
            and isinstance(stmt.value.func, ast.Name) and stmt.value.func.id == "check")


_BUILTIN_NAMES = frozenset(dir(builtins))


def _free_names(body: list[ast.stmt]) -> set[str]:
    """Names the code reads but binds nowhere and Python does not provide: they can only come from
    the program under test (`poly` in HumanEval/32's tests, every function MBPP's asserts call)."""
    module = ast.Module(body=body, type_ignores=[])
    loaded, bound = set(), set()
    for node in ast.walk(module):
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else bound).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, ast.alias):
            bound.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, (ast.ExceptHandler, ast.MatchAs, ast.MatchStar)) and node.name:
            bound.add(node.name)
        elif isinstance(node, ast.MatchMapping) and node.rest:
            bound.add(node.rest)
    return {n for n in loaded - bound - _BUILTIN_NAMES if not (n.startswith("__") and n.endswith("__"))}


def _top_level_names(stmt: ast.stmt) -> set[str]:
    """The module-level names a top-level statement defines (functions, classes, imports, assignments)."""
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {stmt.name}
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return {(a.asname or a.name).split(".")[0] for a in stmt.names}
    targets = stmt.targets if isinstance(stmt, ast.Assign) else \
        [stmt.target] if isinstance(stmt, (ast.AnnAssign, ast.AugAssign)) else []
    return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}


def _prelude(program: str, entry_point: str | None, names: set[str]) -> tuple[str, set[str]]:
    """(source, helpers): the program's top-level statements before the entry point's first
    definition, and which of `names` they define.

    In HumanEval's convention the program is prompt + completion, and the tests call helpers the
    prompt defines (`poly`, `encode_cyclic`). The prelude is the prompt's part: a completion is
    appended after it and cannot change it. Calls to those helpers go to a process that runs only
    the prelude, so a completion that redefines `poly` or patches what it uses changes nothing
    the tests compute."""
    if not entry_point or not names:
        return "", set()
    try:
        module = ast.parse(program)
    except (SyntaxError, ValueError):
        return "", set()  # the program does not load; every test fails anyway
    for i, stmt in enumerate(module.body):
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == entry_point:
            head = module.body[:i]
            break
    else:
        return "", set()
    helpers = names & set().union(*map(_top_level_names, head))
    if not helpers:
        return "", set()
    return ast.unparse(ast.Module(body=head, type_ignores=[])), helpers


class _TestPlan:
    """Rewrites test code so that each statement testing the candidate is run and recorded alone,
    and says where each name the tests take from the program comes from.

    A statement is a test when it refers to the candidate (directly or through a name assigned
    from it) and asserts or raises (itself or through a helper function defined in the tests).
    Other statements are set-up: their errors are ignored, so a failing set-up only fails the
    tests that depend on it. `assert True` lines do not count as tests.

    Names the tests read but do not define (`_free_names`) are the program's: `helper_names`, the
    ones its prelude defines (`_prelude`), are served by the prelude alone; `program_names`, the
    rest, by the whole program, and statements using them are tests (MBPP's asserts call the
    function by name). A helper the tests define themselves wins over the program's.
    """

    def __init__(self, source: str, entry_point: str | None, program: str = ""):
        try:
            module = ast.parse(source)
        except SyntaxError as e:
            raise ValueError(
                f"tests: not valid Python (line {e.lineno}: {e.msg}) and not a JSON list of "
                '{"input": ..., "output": ...} cases; fix the `tests` column'
            ) from None
        self.total = 0
        self.sources: list[str] = []  # each test's code, for the failure details
        self.test_functions = {n.name for n in module.body
                               if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name != "check"}
        # A stub or reference solution in the tests must not stand in for the candidate.
        kept = [stmt for stmt in module.body
                if not (isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and stmt.name == entry_point)]
        free = _free_names(kept) - {entry_point}
        self.prelude, self.helper_names = _prelude(program, entry_point, free)
        self.program_names = free - self.helper_names
        body: list[ast.stmt] = []
        check = None
        taint = ({entry_point} if entry_point else set()) | self.program_names
        for stmt in kept:
            if isinstance(stmt, ast.FunctionDef) and stmt.name == "check":
                check = stmt
                param = check.args.args[0].arg if check.args.args else _CANDIDATE
                check.body = [self._wrap(s, {param} | taint) for s in check.body] or [ast.Pass()]
                body.append(check)
                continue
            if _is_check_call(stmt):
                continue  # we call check ourselves, with the proxy
            body.append(self._wrap(stmt, taint))
        if check is not None:
            if self.total == 0:
                # No statement-level test found: the whole check(candidate) is one test.
                body.append(self._record_try(self._call_check(), 0))
                self.total = 1
                self.sources.append("check(candidate)")
            else:
                body.append(self._ignore_errors(self._call_check()))
        if self.total == 0:
            raise ValueError(
                "tests: the test code neither defines check(candidate) nor asserts anything about "
                f"the entry point {entry_point!r}; fix the `tests` or `entry_point` column"
            )
        self.source = ast.unparse(ast.fix_missing_locations(ast.Module(body=body, type_ignores=[])))

    def _call_check(self) -> ast.stmt:
        return ast.Expr(ast.Call(ast.Name("check", ast.Load()), [ast.Name(_CANDIDATE, ast.Load())], []))

    def _is_test(self, stmt: ast.stmt, taint: set[str]) -> bool:
        if not (_names(stmt) & taint):
            return False
        for node in ast.walk(stmt):
            if isinstance(node, (ast.Assert, ast.Raise)):
                return True
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in self.test_functions):
                return True
        return False

    def _wrap(self, stmt: ast.stmt, taint: set[str]) -> ast.stmt:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Global, ast.Nonlocal)):
            return stmt
        if self._is_test(stmt, taint):
            self.total += 1
            self.sources.append(" ".join(ast.unparse(stmt).split())[:160])
            return self._record_try(stmt, self.total - 1)
        if _names(stmt) & taint:
            taint |= _assigned(stmt)
        return self._ignore_errors(stmt)

    @staticmethod
    def _record_try(stmt: ast.stmt, index: int) -> ast.stmt:
        def record(exc: ast.expr) -> ast.stmt:
            return ast.Expr(ast.Call(ast.Name(_RECORD, ast.Load()), [ast.Constant(index), exc], []))
        return ast.Try(
            body=[stmt],
            handlers=[ast.ExceptHandler(ast.Name("BaseException", ast.Load()), "__rlpipe_exc__",
                                        [record(ast.Name("__rlpipe_exc__", ast.Load()))])],
            orelse=[record(ast.Constant(None))], finalbody=[])

    @staticmethod
    def _ignore_errors(stmt: ast.stmt) -> ast.stmt:
        return ast.Try(body=[stmt], handlers=[ast.ExceptHandler(ast.Name("Exception", ast.Load()), None,
                                                                [ast.Pass()])],
                       orelse=[], finalbody=[])


def _assert_list(tests) -> list[str] | None:
    """MBPP's `test_list` (one assert statement per string), given as a list or its JSON string."""
    if isinstance(tests, str):
        if not tests.strip().startswith("["):
            return None
        try:
            tests = json.loads(tests)
        except json.JSONDecodeError:
            return None
    if isinstance(tests, (list, tuple)) and tests and all(isinstance(t, str) for t in tests):
        return list(tests)
    return None


def _parse_io_cases(tests) -> list[dict] | None:
    """The stdin/stdout cases, or None if `tests` is test code (or a list of assert statements)."""
    if _assert_list(tests) is not None:
        return None
    if isinstance(tests, str):
        text = tests.strip()
        if not text.startswith("["):
            return None
        try:
            tests = json.loads(text)
        except json.JSONDecodeError:
            return None
    if not isinstance(tests, list):
        raise ValueError("tests: expected Python test code, a list of assert statements or a list "
                         "of {input, output} cases")
    cases = []
    for i, case in enumerate(tests):
        if not isinstance(case, dict) or "input" not in case or "output" not in case:
            raise ValueError(f"tests[{i}]: each stdin/stdout case needs `input` and `output` keys")
        cases.append({"input": _as_text(case["input"]), "output": _as_text(case["output"])})
    if not cases:
        raise ValueError("tests: the list of stdin/stdout cases is empty")
    return cases


def _as_text(value) -> str:
    if isinstance(value, list):
        return "\n".join(str(v) for v in value) + "\n"
    return value if isinstance(value, str) else str(value)


def _normalise_output(text: str) -> str:
    # Judges ignore trailing spaces and trailing blank lines; nothing else is forgiven.
    lines = text.replace("\r\n", "\n").split("\n")
    return "\n".join(line.rstrip() for line in lines).rstrip("\n")


def _verified_records(side: bytes, nonce: str) -> list[dict]:
    """The harness's records that carry this run's nonce (anything else is dropped)."""
    records = []
    for raw in side.decode("utf-8", "replace").split("\n"):
        tag, sep, line = raw.partition("\t")
        if sep and hmac.compare_digest(tag.encode(), nonce.encode()):
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
    return records


def check_solution(
    code: str,
    tests,
    *,
    entry_point: str | None = None,
    timeout_s: float = 5.0,
    memory_mb: int = 256,
) -> CodeResult:
    """Run `code` against `tests` in the sandbox; the verdict is computed outside it.

    code: the program; in HumanEval's convention `prompt + completion`, with the row's `test`
    as given (helpers the prompt defines and the tests call, such as `poly`, come from the
    program's prelude: see `_prelude`). tests: Python test code (HumanEval `check(candidate)`;
    helpers allowed, and they win over the program's; a definition of `entry_point` in it is
    ignored), MBPP's list of assert statements (calling the function by name), or stdin/stdout
    cases. entry_point: the function under test (default: a `check(NAME)` call in the tests,
    else the last function the candidate defines). timeout_s: wall-clock limit for all of
    check() together, or per case.
    """
    cases = _parse_io_cases(tests)
    nonce = secrets.token_hex(16)
    if cases is not None:
        return _check_io(code, cases, nonce, timeout_s, memory_mb)
    asserts = _assert_list(tests)
    if asserts is not None:
        tests = "\n".join(asserts)
    if entry_point is None:
        found = re.search(r"^check\((\w+)\)\s*$", tests, re.M)
        entry_point = found.group(1) if found else None
    plan = _TestPlan(tests, entry_point, code)
    secret = json.dumps({"nonce": nonce, "tests": plan.source, "entry_point": entry_point,
                         "program_names": sorted(plan.program_names),
                         "helper_names": sorted(plan.helper_names)}).encode()
    candidate = json.dumps({"code": code, "entry_point": entry_point, "prelude": plan.prelude}).encode()
    result, side = run_sandboxed(
        HARNESS, args=("call",), side_inputs=(candidate, secret), side_output_cap=_RESULT_CAP,
        timeout_s=timeout_s, memory_mb=memory_mb)
    outcome: dict[int, bool] = {}
    details = []
    done = False
    for rec in _verified_records(side, nonce):
        if "test" in rec:
            index = rec["test"]
            if isinstance(index, int) and 0 <= index < plan.total and index not in outcome:
                outcome[index] = rec["ok"] is True
                if not outcome[index]:
                    details.append(f"test {index} `{plan.sources[index]}`: {rec.get('detail')}")
        elif "load_error" in rec:
            details.append(f"candidate did not load: {rec['load_error']}")
        elif "harness_error" in rec:
            details.append(f"tests raised: {rec['harness_error']}")
        elif rec.get("done"):
            done = True
    passed = sum(outcome.values())
    if done:
        status = "pass" if passed == plan.total else "fail"
        if any(d.startswith("candidate did not load") for d in details):
            status = "error"
    else:
        status = result.status if result.status in ("timeout", "oom", "killed") else "error"
        details.append(f"sandbox {result.status}: {result.stderr.strip()[-300:]}")
    return CodeResult(passed, plan.total, status, tuple(details[:20]), result.wall_s)


def _check_io(code, cases, nonce, timeout_s, memory_mb) -> CodeResult:
    limits = SandboxLimits()
    secret = json.dumps({"nonce": nonce}).encode()
    candidate = json.dumps({"code": code, "inputs": [c["input"] for c in cases],
                            "timeout_s": timeout_s, "output_cap": limits.max_output_bytes}).encode()
    overall = timeout_s * len(cases) + 5.0
    # Room for every case's capped stdout, even with JSON escapes doubling it.
    side_cap = len(cases) * (2 * limits.max_output_bytes + 4096) + _RESULT_CAP
    result, side = run_sandboxed(
        HARNESS, args=("io",), side_inputs=(candidate, secret), side_output_cap=side_cap,
        timeout_s=overall, memory_mb=memory_mb, limits=limits)
    reports: dict[int, dict] = {}
    for rec in _verified_records(side, nonce):
        i = rec.get("case")
        if isinstance(i, int) and 0 <= i < len(cases) and i not in reports:
            reports[i] = rec
    passed = 0
    details = []
    statuses = []
    for i, case in enumerate(cases):
        rep = reports.get(i)
        if rep is None:
            details.append(f"case {i}: no report (sandbox {result.status})")
            statuses.append(result.status)
            continue
        statuses.append(rep["status"])
        if rep["status"] == "ok" and _normalise_output(rep["stdout"]) == _normalise_output(case["output"]):
            passed += 1
        else:
            details.append(f"case {i}: {rep['status']}, stderr {rep['stderr'][-200:]!r}")
    if passed == len(cases):
        status = "pass"
    elif reports and all(s == "ok" for s in statuses):
        status = "fail"
    else:
        status = next((s for s in statuses if s in ("timeout", "oom", "killed", "error")), "fail")
    return CodeResult(passed, len(cases), status, tuple(details[:20]), result.wall_s)


# --------------------------------------------------------------------------------------------
# The reward function.
# --------------------------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.S | re.I)


def extract_code(text: str) -> str | None:
    """The program in `<answer>...</answer>` (its last fenced block if it has one).

    Only the response's final part counts (`rewards.format.answer_blocks`): code drafted inside
    `<think>` is not the answer. Two or more answers, or answer tags that do not pair up, count as
    none (a hedge must not win). Without an answer tag, the last fenced Python block of the final
    part is used.
    """
    answers = answer_blocks(text)
    if answers is None or len(answers) > 1:
        return None
    region = answers[0] if answers else response_region(text)
    fences = _FENCE.findall(region)
    if fences:
        return fences[-1]
    if answers and answers[0].strip():
        return answers[0].strip("\n")
    return None


def code_reward(
    prompts,
    completions,
    tests=None,
    entry_point=None,
    *,
    all_or_nothing: bool | None = None,
    timeout_s: float = 5.0,
    max_workers: int | None = None,
    **dataset_columns,
) -> list[float | None]:
    """passed/total of each completion's code against its row's tests; None for rows without tests.

    Runs the sandboxes concurrently (two per CPU by default: a sandbox spends part of its life
    waiting on process start-up); each is a separate process tree, so threads here only wait.
    """
    if all_or_nothing is None:
        all_or_nothing = code_reward_all_or_nothing
    n = len(completions)
    tests = list(tests) if tests is not None else [None] * n
    entry_points = list(entry_point) if entry_point is not None else [None] * n

    def score(i: int) -> float | None:
        row_tests = tests[i]
        if row_tests is None or (isinstance(row_tests, (str, list)) and len(row_tests) == 0):
            return None
        code = extract_code(completion_text(completions[i]))
        if code is None:
            return 0.0
        try:
            result = check_solution(code, row_tests, entry_point=entry_points[i] or None,
                                    timeout_s=timeout_s)
        except ValueError as e:
            raise ValueError(f"code_reward: row {i} of the batch: {e}") from None
        if all_or_nothing:
            return 1.0 if result.status == "pass" else 0.0
        return result.score

    workers = max_workers or 2 * len(os.sched_getaffinity(0))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(score, range(n)))
