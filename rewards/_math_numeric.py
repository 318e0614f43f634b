"""Private: the math checker's in-process numeric step, between the exact rational path and the
sympy worker.

What this module does:
- `decide(a, b, tolerant, abs_tol)`: True / False when plain numeric evaluation settles the
  comparison of two scalar trees (`_math_parse` ASTs), None when only the worker can. It applies
  the worker's own rules (`_math_worker`: the same tolerances, the same probe points, points
  where some side is real first) with mpmath at a fixed precision, so a verdict here is the verdict the worker would give,
  without a process round trip and sympy's object construction (most of a symbolic call's cost).
- Bounded by construction: a float pass first evaluates every node; any value above
  `MAX_MAGNITUDE`, any overflow, infinity, undefined point, floor/ceil (rounding near an integer
  needs sympy's exact evaluation) or unknown node makes the call undecided, so mpmath only ever
  works on moderate numbers at 80 digits (microseconds per node). Nothing is executed: the trees
  are walked node by node, as the worker does.
"""
from __future__ import annotations

import cmath
import math
import threading

import mpmath

from rewards._math_worker import ABS_FLOOR, EXACT_REL_TOL, PROBE_REL_TOL, PROBES, REL_TOL

MAX_MAGNITUDE = 1e20     # |value| of any node; with 80 digits the absolute error stays below 1e-55
_DIGITS = 80


class _Undecided(Exception):
    pass


_LOCAL = threading.local()


def _context() -> mpmath.MPContext:
    """This thread's mpmath context at `_DIGITS`: the global `mpmath.mp` is shared by all threads,
    and a precision change there would leak into the reward threads' other evaluations."""
    ctx = getattr(_LOCAL, "ctx", None)
    if ctx is None:
        ctx = _LOCAL.ctx = mpmath.MPContext()
        ctx.dps = _DIGITS
    return ctx


def _symbols(node, out: set) -> set:
    kind = node[0]
    if kind == "sym":
        out.add(node[1])
    elif kind in ("add", "mul"):
        for c in node[1]:
            _symbols(c, out)
    elif kind in ("neg", "fact", "pct"):
        _symbols(node[1], out)
    elif kind in ("div", "pow"):
        _symbols(node[1], out)
        _symbols(node[2], out)
    elif kind == "func":
        for c in node[2]:
            _symbols(c, out)
    elif kind not in ("num", "const"):
        raise _Undecided()
    return out


class _Evaluator:
    """Evaluates a tree at a point with one arithmetic: `cmath` floats (the bounds pass) or
    mpmath (the verdict). Raises _Undecided where the worker must decide."""

    def __init__(self, lib, point: dict):
        """lib: `cmath`, or an mpmath context (`_context()`)."""
        self.lib, self.point = lib, point
        m = lib
        if lib is cmath:
            self.const = {"pi": math.pi, "E": math.e, "I": 1j}
            self.num = lambda q: q.numerator / q.denominator
        else:
            self.const = {"pi": m.pi, "E": m.e, "I": m.mpc(0, 1)}
            self.num = lambda q: m.mpf(q.numerator) / q.denominator

    def value(self, node):
        v = self._value(node)
        if self.lib is cmath:
            if not (abs(v) <= MAX_MAGNITUDE):          # also catches nan
                raise _Undecided()
        elif not self.lib.isfinite(v):
            raise _Undecided()
        return v

    def _value(self, node):
        kind = node[0]
        try:
            if kind == "num":
                return self.num(node[1])
            if kind == "sym":
                return self.point[node[1]]
            if kind == "const":
                if node[1] not in self.const:
                    raise _Undecided()                 # infinity
                return self.const[node[1]]
            if kind == "add":
                return sum((self.value(c) for c in node[1][1:]), self.value(node[1][0]))
            if kind == "mul":
                acc = self.value(node[1][0])
                for c in node[1][1:]:
                    acc = acc * self.value(c)
                return acc
            if kind == "neg":
                return -self.value(node[1])
            if kind == "div":
                return self.value(node[1]) / self.value(node[2])
            if kind == "pct":
                return self.value(node[1]) / 100
            if kind == "pow":
                base, exp = self.value(node[1]), self.value(node[2])
                if base == 0:                          # 0^x: 0 for Re x > 0, undefined otherwise
                    if (exp.real if self.lib is cmath else self.lib.re(exp)) > 0:
                        return 0 * base
                    raise _Undecided()
                if self.lib is cmath:
                    return complex(base) ** complex(exp)
                return self.lib.power(base, exp)       # principal branch, as sympy's Pow
            if kind == "fact":
                x = self.value(node[1])
                return self._gamma(x + 1)
            if kind == "func":
                return self._func(node[1], [self.value(a) for a in node[2]])
        except (ZeroDivisionError, OverflowError, ValueError, TypeError, KeyError):
            raise _Undecided() from None
        raise _Undecided()

    def _gamma(self, x):
        if self.lib is cmath:
            if x.imag != 0 or x.real > 170 or (x.real <= 0 and x.real == int(x.real)):
                raise _Undecided()
            return math.gamma(x.real)
        return self.lib.gamma(x)

    def _func(self, name: str, args: list):
        f = self.lib
        x = args[0]
        if name in ("floor", "ceil"):
            raise _Undecided()
        if name == "binom":
            n, k = args
            return self._gamma(n + 1) / (self._gamma(k + 1) * self._gamma(n - k + 1))
        if name == "root":                          # sympy's root(x, n): the principal x^(1/n)
            return x ** (1 / args[1]) if x != 0 else 0 * x
        if name == "log":
            return f.log(x) / f.log(args[1]) if len(args) == 2 else f.log(x)
        table = {"sin": f.sin, "cos": f.cos, "tan": f.tan, "arcsin": f.asin, "arccos": f.acos,
                 "arctan": f.atan, "sinh": f.sinh, "cosh": f.cosh, "tanh": f.tanh, "ln": f.log,
                 "exp": f.exp, "sqrt": f.sqrt, "abs": abs}
        if name in table:
            return table[name](x)
        if name in ("cot", "sec", "csc"):
            return 1 / {"cot": f.tan, "sec": f.cos, "csc": f.sin}[name](x)
        raise _Undecided()


def _close(va, vb, rel: float) -> bool:
    diff = abs(va - vb)
    return bool(diff < rel * max(abs(va), abs(vb)) or diff <= ABS_FLOOR)


def _pair(a, b, point_f: dict, point_m: dict, ctx):
    """(va, vb) in mpmath at one point, after the float pass has bounded every node."""
    _Evaluator(cmath, point_f).value(a)
    _Evaluator(cmath, point_f).value(b)
    ev = _Evaluator(ctx, point_m)
    return ev.value(a), ev.value(b)


def decide(a, b, *, tolerant: bool, abs_tol=None) -> bool | None:
    """The worker's verdict on scalar trees a and b when numeric evaluation settles it, else None."""
    try:
        names = sorted(_symbols(a, set()) | _symbols(b, set()))
        ctx = _context()
        if not names:
            va, vb = _pair(a, b, {}, {}, ctx)
            equal = _close(va, vb, REL_TOL if tolerant else EXACT_REL_TOL)
            if equal and abs_tol is not None:
                equal = abs(va - vb) <= ctx.mpf(abs_tol.numerator) / abs_tol.denominator
            return equal
        real, complex_ = [], []
        for k in range(len(PROBES)):
            values = {s: PROBES[(k + j * 3) % len(PROBES)] for j, s in enumerate(names)}
            try:
                va, vb = _pair(a, b, {s: float(v) for s, v in values.items()},
                               {s: ctx.mpf(v) for s, v in values.items()}, ctx)
            except _Undecided:
                continue                           # the worker skips points that are not finite too
            verdict = _close(va, vb, REL_TOL if tolerant else PROBE_REL_TOL)
            neither_real = abs(ctx.im(va)) > ABS_FLOOR and abs(ctx.im(vb)) > ABS_FLOOR
            (complex_ if neither_real else real).append(verdict)
        if any(not v for v in real):
            return False
        if len(real) >= 4:
            return True
        return None                                # complex or too few points: the worker decides
    except (_Undecided, ZeroDivisionError, OverflowError, ValueError, TypeError, RecursionError):
        return None
