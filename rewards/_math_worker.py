"""Private: the killable sympy worker of the math checker, both sides of its pipe.

What this module does:
- Child side (`python -I _math_worker.py`): imports sympy once, then answers one JSON request a
  line on stdin with one JSON line on stdout. A request holds two expression trees already parsed
  by `_math_parse` (never text): sympy objects are built node by node from a fixed whitelist
  (`Add`, `Mul`, `Pow`, `Rational`, `Symbol`, named functions), so nothing the model wrote is
  ever evaluated as code. The child caps its own address space (RLIMIT_AS) and exits when its
  stdin closes, so it never outlives its parent.
- Parent side (`WorkerPool.compare`): a small pool of persistent children, shared by all threads
  of a process. Every request runs under a hard wall-clock limit enforced from outside: on
  timeout the child is SIGKILLed (this stops C-level big-integer work that SIGALRM cannot) and a
  fresh one is started for the next request. A pool notices a fork (pid change) and starts its
  own children instead of sharing pipes with the parent process.

Comparison in the child, for two scalar trees a and b:
- no free symbols: both sides evaluated to 60 significant digits (complex allowed);
  `tolerant` requests (a side wrote a decimal) accept a relative difference < 1e-6, others need
  agreement to 1e-45 relative, i.e. exact up to numerical evaluation; `abs_tol` ("p/q", half a
  unit of a decimal gold's last place) must hold as well;
- free symbols: `expand(a - b) == 0`, else both sides evaluated (30 digits, sympy's adaptive
  evalf; agreement to 1e-20 relative, or 1e-6 when `tolerant`) at fixed pseudo-random points,
  positive and negative. Points where at least one side is real come first; points where
  neither is real (principal-branch roots of negative numbers: sqrt(4/x) vs 2/sqrt(x) at x < 0)
  count only when fewer than 4 of the others exist. So sqrt(4/x) = 2/sqrt(x), while
  sqrt(x^2) != x and ln(x^2) != 2 ln x show at x < 0. Unequal at any counted point -> not
  equal; equal at 4 -> equal; fewer than 4 points where both sides are finite numbers ->
  `simplify(a - b) == 0` decides.
- equations (`mode="proportional"`): a = 0 and b = 0 are the same equation iff a/b is a nonzero
  constant at the probe points.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import threading
import time

REL_TOL = 1e-6          # for sides that wrote a decimal (an approximation)
EXACT_REL_TOL = 1e-45   # for exact sides evaluated to 60 digits
PROBE_REL_TOL = 1e-20   # exact sides at a probe point, evaluated to 30 digits (last-digit rounding)
ABS_FLOOR = 1e-40       # numerical-evaluation noise around 0 (e.g. sin(pi) evaluated)
_DIGITS = 60
_STARTUP_TIMEOUT_S = 120.0   # importing sympy on a loaded 2-core box can take many seconds
_MEMORY_BYTES = 2 << 30


# =============================================================================================
# Child side
# =============================================================================================

def _serve() -> None:  # pragma: no cover - runs in the child process
    import resource
    try:
        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_BYTES, _MEMORY_BYTES))
    except (ValueError, OSError):
        pass
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import sympy
    out = sys.stdout
    out.write('{"ready": true}\n')
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            res = _handle(sympy, req)
        except Exception as e:  # a bug or an unforeseen input: a verdict, never a crash
            res = {"equal": False, "rule": "worker-error", "detail": f"{type(e).__name__}: {e}"[:300]}
        out.write(json.dumps(res) + "\n")
        out.flush()


def _build(sp, node, symbols: dict):
    kind = node[0]
    if kind == "num":
        p, q = node[1].split("/")
        return sp.Rational(int(p), int(q))
    if kind == "sym":
        if node[1] not in symbols:
            symbols[node[1]] = sp.Symbol(node[1])
        return symbols[node[1]]
    if kind == "const":
        return {"pi": sp.pi, "E": sp.E, "I": sp.I, "oo": sp.oo}[node[1]]
    if kind == "add":
        return sp.Add(*[_build(sp, c, symbols) for c in node[1]])
    if kind == "mul":
        return sp.Mul(*[_build(sp, c, symbols) for c in node[1]])
    if kind == "neg":
        return -_build(sp, node[1], symbols)
    if kind == "div":
        return sp.Mul(_build(sp, node[1], symbols), sp.Pow(_build(sp, node[2], symbols), -1))
    if kind == "pow":
        return sp.Pow(_build(sp, node[1], symbols), _build(sp, node[2], symbols))
    if kind == "fact":
        return sp.factorial(_build(sp, node[1], symbols))
    if kind == "pct":
        return _build(sp, node[1], symbols) / 100
    if kind == "func":
        name = node[1]
        args = [_build(sp, a, symbols) for a in node[2]]
        if name == "root":
            return sp.root(args[0], args[1])
        if name == "log":
            return sp.log(*args)
        table = {
            "sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "cot": sp.cot, "sec": sp.sec, "csc": sp.csc,
            "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "sinh": sp.sinh,
            "cosh": sp.cosh, "tanh": sp.tanh, "ln": sp.log, "exp": sp.exp, "sqrt": sp.sqrt,
            "abs": sp.Abs, "floor": sp.floor, "ceil": sp.ceiling, "binom": sp.binomial,
        }
        return table[name](*args)
    raise ValueError(f"node {kind!r} is not a scalar")


def _close(sp, va, vb, rel: float) -> bool | None:
    """Numeric closeness of two evaluated values; None when either is not a finite number."""
    try:
        ca, cb = complex(va), complex(vb)
    except (TypeError, ValueError, OverflowError):
        return None
    if any(x != x or abs(x) == float("inf") for x in (ca.real, ca.imag, cb.real, cb.imag)):
        # Outside double range: compare the high-precision values directly.
        try:
            diff = abs(sp.N(va - vb, _DIGITS))
            scale = max(abs(sp.N(va, _DIGITS)), abs(sp.N(vb, _DIGITS)))
            if not (diff.is_number and scale.is_number and diff.is_finite and scale.is_finite):
                return None
            return bool(diff < rel * scale or diff <= ABS_FLOOR)
        except Exception:
            return None
    diff = sp.N(abs(va - vb), _DIGITS)
    scale = max(abs(ca), abs(cb))
    if not diff.is_number or not diff.is_finite:
        return None
    return bool(float(diff) < rel * scale or float(diff) <= ABS_FLOOR)


# Probe values, shared with _math_numeric (which must give this worker's verdicts).
PROBES = ["0.7316", "1.4142", "-0.5403", "2.3187", "-1.7753", "0.2911", "3.0407", "-2.6119"]


def _handle(sp, req: dict) -> dict:
    syms: dict = {}
    a = _build(sp, req["a"], syms)
    b = _build(sp, req["b"], syms)
    tolerant = bool(req.get("tolerant"))
    mode = req.get("mode", "equal")
    if mode == "proportional":
        # Equations a = 0 and b = 0 are the same equation iff a / b is a nonzero constant.
        return _proportional(sp, a, b, syms)
    if a == b:
        return {"equal": True, "rule": "symbolic", "detail": "identical sympy expressions"}
    free = (a.free_symbols | b.free_symbols) if hasattr(a, "free_symbols") else set()
    if not free:
        va, vb = sp.N(a, _DIGITS), sp.N(b, _DIGITS)
        verdict = _close(sp, va, vb, REL_TOL if tolerant else EXACT_REL_TOL)
        if verdict and req.get("abs_tol"):
            p, q = req["abs_tol"].split("/")
            verdict = bool(sp.N(abs(va - vb), _DIGITS) <= sp.Rational(int(p), int(q)))
        if verdict is None:
            return {"equal": False, "rule": "numeric", "detail": f"not finite numbers: {va} vs {vb}"}
        rule = "relative-tolerance" if tolerant else "numeric-exact"
        return {"equal": verdict, "rule": rule, "detail": f"{sp.N(va, 15)} vs {sp.N(vb, 15)}"}
    diff = a - b
    if sp.expand(diff) == 0:
        return {"equal": True, "rule": "symbolic", "detail": "expand(a - b) == 0"}
    order = sorted(free, key=lambda s: s.name)
    real, complex_ = [], []           # (verdict, point, va, vb) at each probe where both are finite
    for k in range(len(PROBES)):
        point = {s: sp.Rational(PROBES[(k + j * 3) % len(PROBES)]) for j, s in enumerate(order)}
        va, vb = sp.N(a.subs(point), 30), sp.N(b.subs(point), 30)
        verdict = _close(sp, va, vb, REL_TOL if tolerant else PROBE_REL_TOL)
        if verdict is None:
            continue
        # a point where only one side is real is a real disagreement (ln(x^2) vs 2 ln x at x < 0)
        neither_real = abs(complex(va).imag) > ABS_FLOOR and abs(complex(vb).imag) > ABS_FLOOR
        (complex_ if neither_real else real).append((verdict, point, va, vb))
    probes = real if len(real) >= 4 or any(not v for v, *_ in real) else real + complex_
    for verdict, point, va, vb in probes:
        if not verdict:
            return {"equal": False, "rule": "numeric-probe",
                    "detail": f"differ at {dict((str(s), str(v)) for s, v in point.items())}: "
                              f"{sp.N(va, 12)} vs {sp.N(vb, 12)}"}
    if len(probes) >= 4:
        return {"equal": True, "rule": "numeric-probe",
                "detail": f"agree at {len(probes)} pseudo-random points"
                          + ("" if probes is real else " (some complex)")}
    if sp.simplify(diff) == 0:
        return {"equal": True, "rule": "symbolic", "detail": "simplify(a - b) == 0"}
    return {"equal": False, "rule": "symbolic", "detail": "could not show a - b == 0"}


def _proportional(sp, a, b, syms) -> dict:
    if a == b or sp.expand(a - b) == 0 or sp.expand(a + b) == 0:
        return {"equal": True, "rule": "equation", "detail": "same equation"}
    order = sorted(a.free_symbols | b.free_symbols, key=lambda s: s.name)
    ratios = []
    for k in range(len(PROBES)):
        point = {s: sp.Rational(PROBES[(k + j * 3) % len(PROBES)]) for j, s in enumerate(order)}
        va, vb = sp.N(a.subs(point), 30), sp.N(b.subs(point), 30)
        try:
            ca, cb = complex(va), complex(vb)
        except (TypeError, ValueError, OverflowError):
            continue
        if abs(cb) < 1e-20:
            if abs(ca) > 1e-20:
                return {"equal": False, "rule": "equation", "detail": "not proportional"}
            continue
        ratios.append(ca / cb)
        if len(ratios) >= 4:
            break
    if len(ratios) >= 3 and abs(ratios[0]) > 1e-20 and all(
            abs(r - ratios[0]) <= 1e-12 * abs(ratios[0]) for r in ratios):
        return {"equal": True, "rule": "equation", "detail": f"proportional (factor {ratios[0]:.6g})"}
    return {"equal": False, "rule": "equation", "detail": "not proportional"}


# =============================================================================================
# Parent side
# =============================================================================================

class WorkerTimeout(Exception):
    pass


class _Worker:
    """One child process and its pipes. Used by one thread at a time (the pool hands it out)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-I", os.path.abspath(__file__)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONHASHSEED": "0"},
            close_fds=True,
        )
        self.buf = b""
        try:
            ready = json.loads(self._readline(_STARTUP_TIMEOUT_S))
        except BaseException:
            self.kill()                 # never leave a half-started child behind
            raise
        if ready.get("ready") is not True:
            self.kill()
            raise RuntimeError("math worker did not start")

    def _readline(self, timeout_s: float) -> bytes:
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout_s
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise WorkerTimeout()
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                raise WorkerTimeout()
            chunk = os.read(fd, 65536)
            if not chunk:
                raise WorkerTimeout()   # the child died (e.g. hit its memory cap)
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line

    def request(self, req: dict, timeout_s: float) -> dict:
        self.proc.stdin.write(json.dumps(req).encode() + b"\n")
        self.proc.stdin.flush()
        return json.loads(self._readline(timeout_s))

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                f.close()
            except OSError:
                pass


class WorkerPool:
    """Persistent workers shared by the threads of one process (at most `size` children)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._reset()

    def _reset(self) -> None:
        self.pid = os.getpid()
        self.cond = threading.Condition()
        self.idle: list[_Worker] = []
        self.count = 0

    def _acquire(self) -> _Worker:
        if self.pid != os.getpid():
            # After fork the inherited pipes belong to the parent's children: start our own.
            self._reset()
        with self.cond:
            while not self.idle and self.count >= self.size:
                self.cond.wait()
            if self.idle:
                return self.idle.pop()
            self.count += 1
        try:
            return _Worker()
        except BaseException:
            with self.cond:
                self.count -= 1
                self.cond.notify()
            raise

    def _release(self, w: _Worker | None) -> None:
        with self.cond:
            if w is None:
                self.count -= 1
            else:
                self.idle.append(w)
            self.cond.notify()

    def compare(self, req: dict, timeout_s: float) -> dict:
        """Send one request; raises WorkerTimeout after killing a child that overran."""
        w = self._acquire()
        try:
            res = w.request(req, timeout_s)
        except BaseException:
            w.kill()
            self._release(None)
            raise
        self._release(w)
        return res

    def close(self) -> None:
        if self.pid != os.getpid():
            return
        with self.cond:
            workers, self.idle = self.idle, []
            self.count -= len(workers)
        for w in workers:
            w.kill()


POOL = WorkerPool(size=max(1, min(4, os.cpu_count() or 1)))
atexit.register(POOL.close)


if __name__ == "__main__":  # pragma: no cover
    _serve()
