r"""Math accuracy reward: answer extraction and a safe equivalence checker.

What this module does:
- `extract_answer(text, *, broad=False)`: the final answer of a response (`_math_extract`).
- `math_equal(pred, gold, *, ordered=False)`: True iff the two answers are mathematically
  equivalent; never raises, never executes model text, bounded time.
- `explain(pred, gold)`: the verdict plus why (normalised forms, deciding rule, failure reason).
- `accuracy_reward(prompts, completions, answer, task=None, ordered=None, broad=False, **kw)`:
  1.0 / 0.0 per sample (None without a gold answer), the R1 rule-based accuracy reward.
- `is_number(answer)`: whether an answer is one plain number, the form `NUMBER_TASKS` ask for.

Answer form: a row whose `task` column names a task in `NUMBER_TASKS` (this project's
`arithmetic` and `equations`, whose prompts ask for the value) is paid only for a plain number
(`is_number`): an integer, a decimal, or a fraction in lowest terms (`-3/4`, `\frac{7}{3}`),
optionally as `x = <number>`. Equivalence alone would pay the question restated (`29 + 3 * 6` for
"Compute 29 + 3 * 6.") or left half done (`29 + 18`, `x = 21/3`), which a policy learns at once.
Rows without a `task`, or of other tasks (external datasets), keep the generic rule: any
equivalent answer.

Extraction rules (`extract_answer`):
- Only the response's final part counts (`rewards.format.response_region`: after the last
  `</think>`, all of it when there is none, up to a `<think>` opened again): the reasoning may
  quote tags and box intermediate results.
- If that text has `<answer>...</answer>` blocks, the answer comes from them; several blocks must
  agree (after whitespace normalisation) or there is no answer, and tags that do not pair up
  (nested, unclosed, stray) mean no answer. Inside a block that contains `\boxed{}`, the boxed
  contents are the answer and all of them must agree.
- Strict (the default, what RL pays by; the format reward is a separate term): else the last
  `\boxed{...}` (or `\fbox{}`; balanced, nested braces). A hedge -- a different `\boxed{}`
  within 40 characters before the last one (`\boxed{3} or \boxed{4}`) -- means no answer;
  results boxed earlier (further back) do not. Else None.
- Broad (`broad=True`, for datasets and evaluation of outside models): else the last run of
  boxes that only connectors (`,` `;` "and" "or" `$` spacing) separate, as one list
  (`\boxed{1}, \boxed{2}` -> `1, 2`, so `\boxed{3} or \boxed{4}` is the list 3, 4 and
  never equals 4); else the text after GSM8K's last `####`; else what follows the last
  "Final Answer:" / "the answer is" / "Answer:" (its math spans, or the sentence; "the answer
  is not 5" is no answer); else the last run of math spans (`$…$`, `$$…$$`, `\(…\)`, `\[…\]`,
  joined like boxes: `$x = 2$ and $x = -3$` -> `x = 2, x = -3`); else the last number. The
  broad rules read the last 20,000 characters of that part (where a final answer stands).
- A box only inside `<think>` (nothing after `</think>`, or `</think>` never written) is no
  answer in either mode: the reasoning boxes drafts, and a model that never left it answered
  nothing. A completion that never closes its answer or box has no answer.
- `math_equal` given a sentence rather than an answer (two words in a row, a math span, `####`,
  a box inside) reads the answer the sentence marks by the broad rules, but never guesses a
  bare last number. The RL reward (`accuracy_reward` without `broad`) does not: its prediction
  is graded as written, so `<answer>3 or maybe $4$</answer>` is a hedge, not 4.

Normalisation rules (both sides alike, before parsing):
- Wrappers `$..$`, `\(..\)`, `\[..\]`, `\boxed{}`, leading "The answer is"/"Answer:", trailing
  period; spacing macros (`\,` `\;` `\!` `\quad` `~`), `\left`/`\right`/`\big`, `\displaystyle`;
  `\dfrac`/`\tfrac`/`\cfrac` -> `\frac`; unicode `−×·÷π√∞°≤≥≈²³⟨⟩`; `\boxed{}` anywhere
  inside an answer (`\boxed{1},\boxed{2}` -> `1,2`); `;` separates list elements like `,`;
  `\angle`, `\triangle`, `\vec` before a name are dropped (`\angle ABC = 30` is labelled 30).
- Currency: `$`, `\$`, `€`, `£`, `¥`, `₹`, `\euro`, `\textdollar`, USD/EUR are dropped wherever
  they stand (`€45`, `45 €`).
- Sets of reals: `\mathbb{R}` and "all real numbers" are `(-\infty, \infty)`; `]0, 1[` is
  `(0, 1)`; set-builder `\{x \mid x > 3\}` (also `|`, `:`) is its condition.
- `\text{}`-like macros (`\text`, `\textbf`, `\mathrm`, `\mbox`, ...): a whole answer that is one
  `\text{word...}` is a TEXT answer, compared case-insensitively as words; a trailing `\text{..}`
  after a non-empty remainder is a unit and dropped (`5\text{ cm}^2` -> `5`); `\text{ or }` /
  `\text{ and }` separate list elements; any other `\text{X}` is replaced by X.
- Units: a trailing unit word (cm, m, kg, s, hours, dollars, units, ...) is dropped only when
  what precedes it is purely numeric (`12 cm` -> `12`; a one-letter unit needs a space, so
  `12 m` -> `12` but `2m` keeps its variable m). A leading
  `$` / `\$` currency sign is dropped.
- Degrees: `^\circ`, `^{\circ}`, `°`, `\degree`, "degrees" are dropped; the number is compared
  as written (no conversion: `30^\circ` equals `30`, not `\pi/6`).
- Percentages: `\%`, `%`, "percent", "pct" mark a percentage. A percentage `p%` equals either
  `p` (the same number of percent points) or `p/100` (its value) on a side without `%`; two
  percentages compare their numbers. So `50\%` equals `50` and `0.5`, never `5`. (The price of
  accepting both readings: `0.05\%` also equals `0.05`.)
- Thousands separators `1,000,000` / `1{,}000` / `1\,000` / `10,\!000` / `11,\! 111,\! 100` /
  `1 000` are read only when the whole answer is one number (inside `(1,000)` the comma
  separates a tuple); a first group never starts with 0.
- Decimal comma: a whole answer `2,74` or `0,111` that is not a thousands grouping is the
  decimal 2.74 when the other side is one number, and the list 2, 74 when it is a list or set.
- Control characters (NUL, ...) make an answer invalid; over 2,000 characters is no answer.

Comparison rules (`math_equal`):
- Grammar: our own tokenizer and recursive-descent parser (`_math_parse`), no eval/sympify/
  parse_expr. Integers, decimals, `1.5e3`, `\frac` (also `\frac12`), `a/b`, mixed numbers
  (`2\frac{1}{2}`, `3\tfrac14` and `2 1/2` as whole answers are 5/2 and 13/4: a whole number
  directly before a proper fraction is a mixed number, never a product), signs, `\sqrt`, `\sqrt[n]`, `^`, `**`,
  `!`, `\binom`, `\pi`, `e`, `i`, `\infty`, trig/log/exp, `|x|`, floor/ceil, juxtaposition
  (`2x`, `2\pi`; never `2 3`), repeating decimals (`0.1\overline{6}` = 1/6), `\pm`
  (`1 \pm \sqrt2` is the list of both values). A function without parentheses takes the
  juxtaposed factors after it: `\cos 2x` = cos(2x), `\sin x \cos x` = sin(x)cos(x). `e` and `i`
  are the constants; other letters are variables; `xy` is x*y.
- Relations: `\ge \geq \geqslant >=`, `\le \leq <=`, `\ne \neq !=`, `\lt <`, `\gt >`,
  `\approx` (`~=`). A relation against a value states a value: a label on the left is dropped
  (`x`, `y_1`, `AB`, `f(x)`, `P(A)`, `|AB|`, `(p,q)`, `V_1:V_2`; not `2x`, which makes an
  equation); a chain `x = 5+5+1 = 11` (or `5+5+1 = 11`) states its last side; `x = 1/3 \approx
  0.333` and `\pi \approx 3.14` state the exact side before the first `\approx`, `x \approx 3.14`
  states 3.14. Two equations are equal when `lhs - rhs` are proportional, or when the same label
  carries equal values. Ratios `a:b` equal `c:d` when `a*d = b*c`; a two-term ratio against a
  value is `a/b`.
- Subsets of the reals, one notion: an interval tuple, an inequality in one variable or labelled
  quantity (`1 < x <= 3`, `0 < f(x) < 1`, `x \in [-2, 7]`), `x \neq a` (two rays), `|x| < a`
  (`(-a, a)`), `|x| > a` (two rays), unions `\cup` and "or"-lists of those are compared as sets of
  intervals, unordered; brackets must match (`(1,2]` is not `(1,2)`) except at `\pm\infty`, which
  is never included (`[3, \infty]` = `[3, \infty)`). No merging of touching pieces.
- Sequences: `(a, b)` tuples are ordered; `\{a, b\}` sets and bare lists `a, b` (also from
  "and"/"or", `;`, several boxes) are unordered multisets, so lists of tuples are sets of tuples;
  with `ordered=True` (the row's question asks for an order) two bare lists compare in order. A
  one-element set equals its element (`\{3\}` = `3`). A list of labelled values `x = 3, y = -2`
  equals the tuple `(3, -2)` (written order); otherwise a tuple never equals a bare list.
- Matrices (`pmatrix`/`bmatrix`/`array`/`smallmatrix`, `\left[ ... \right]`, `[[1, 2], [3, 4]]`)
  compare element by element with equal shapes; a one-row or one-column matrix (a vector)
  equals the tuple of its entries (`(1, 2, 3)`, `\langle 1, 2, 3 \rangle`).
- Text answers (`\text{Evelyn}`, `Yes`) compare as words; "no solution", "none" and the like
  are the empty set. A choice written with its value, `(C) 6`, equals the letter C or the value 6.
- Numbers, in order: identical trees; the exact fast path (`fractions.Fraction`, in-process, no
  worker): exact equality, and when exactly one side wrote a decimal (an approximation of an
  exact value such as 1/3) a RELATIVE tolerance: |a - b| < 1e-6 * max(|a|, |b|). Two written
  decimals, or two exact forms, must be exactly equal: `0.0000001` != `0.0000002`, `1/2004!` != `1/2006!`,
  `1/2^{99}` != `1/2^{98}`, `1000000` != `1000001`.
- Precision (the one rule, asymmetric on purpose): a gold written as one plain decimal states
  its precision, so an exact prediction must also lie within half a unit of the gold's last
  place: `2` is not `2.0000003`, `\pi` is `3.14159265` but not `3.1415926` (truncated), `1/3`
  is `0.3333333`. A decimal PREDICTION against an exact gold only needs the relative 1e-6
  (`2.0000003` equals gold `2`). So `0.33` and `1/3` are unequal in both directions (relative
  difference 1 %); the checker never rounds a gold up to a looser precision. A percent gold
  `16.67\%` read as a value keeps its places (0.1667).
- Irrational/symbolic values: first the in-process numeric step (`_math_numeric`: mpmath at 80
  digits, the worker's own points and tolerances, on moderate values only), else the sympy worker
  (`_math_worker`). Exact sides must agree to 45 significant digits or symbolically; expressions
  with variables are equal when `expand(a - b) == 0` or they agree at 4 fixed pseudo-random
  points (positive and negative, so `sqrt(x^2)` is not `x` and `ln(x^2)` is not `2 ln x`; points
  where neither side is real count last, so `\sqrt{4/x}` equals `\frac{2}{\sqrt{x}}`, whose
  principal branches differ only where both are imaginary); a side with a written decimal gets
  the 1e-6 relative tolerance (`3.14159265` equals `\pi`, `3.14` does not); an absolute floor
  of 1e-40 absorbs evaluation noise around 0 only.
- Cost bounds: powers, factorials, binomials and intermediate sizes are checked BEFORE
  computing (`10**10**10`, `9^{9^{9^9}}` are refused in microseconds; identical trees still
  compare equal); nesting over ~30 brackets and over 800 tokens are parse failures; the sympy step
  runs in a persistent worker process killed at a hard wall-clock limit (default 3 s) and
  restarted for the next call. Every failure (parse, guard, timeout, worker crash) is False.
"""
from __future__ import annotations

from rewards.format import completion_text, response_region  # one definition each

import math as _math
import re
import time
from fractions import Fraction

from rewards import _math_extract as X
from rewards import _math_numeric as N
from rewards import _math_parse as P
from rewards._math_worker import POOL, WorkerTimeout

__all__ = ["NUMBER_TASKS", "extract_answer", "math_equal", "explain", "is_number", "accuracy_reward"]

DEFAULT_TIMEOUT_S = 3.0
_REL_TOL = Fraction(1, 10**6)
_MAX_ELEMENTS = 64
_MAX_SENTENCE_CHARS = 100_000   # a side longer than this is not read as a sentence either


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------

def extract_answer(text: str, *, broad: bool = False) -> str | None:
    """The final answer of a response (rules in the module docstring), or None. `broad=False` is
    the RL reward's strict rule; `broad=True` also reads "Final Answer: ...", GSM8K's `####`,
    math spans and the last number, for datasets and evaluation."""
    try:
        if not isinstance(text, str):
            return None
        return X.extract(text, broad)
    except Exception:
        return None


# ---------------------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------------------

class _Verdict:
    __slots__ = ("equal", "rule", "detail")

    def __init__(self, equal: bool, rule: str, detail: str = "") -> None:
        self.equal, self.rule, self.detail = equal, rule, detail


class _Comparer:
    """One comparison of a prediction (always the first argument) with a gold answer (always the
    second: the gold states the precision). Holds the time budget shared by all worker calls it
    makes and whether bare lists are ordered."""

    def __init__(self, timeout_s: float, ordered: bool = False) -> None:
        self.deadline = time.monotonic() + timeout_s
        self.ordered = ordered

    # -- structures --
    def compare(self, a, b) -> _Verdict:
        if a == b:
            return _Verdict(True, "identical-structure")
        ka, kb = a[0], b[0]
        if ka == "pct" or kb == "pct":
            return self._percent(a, b)
        if _is_real_set_form(a) or _is_real_set_form(b):
            sa, sb = _real_set(a), _real_set(b)
            if sa is not None and sb is not None:
                return self._intervals(sa, sb)
        if ka == "rel" or kb == "rel":
            return self._relation(a, b)
        if ka == "ratio" or kb == "ratio":
            return self._ratio(a, b)
        seq_kinds = ("list", "set", "tuple", "union", "matrix")
        if ka == "set" and len(a[1]) == 1 and kb not in seq_kinds:
            return self.compare(a[1][0], b)          # {3} for "all solutions" is the one value 3
        if kb == "set" and len(b[1]) == 1 and ka not in seq_kinds:
            return self.compare(a, b[1][0])
        if ka in seq_kinds or kb in seq_kinds:
            return self._sequence(a, b)
        if ka == "text" or kb == "text":
            return _Verdict(False, "text", "text vs non-text")
        return self._scalar(a, b)

    def _percent(self, a, b) -> _Verdict:
        if a[0] == "pct" and b[0] == "pct":
            v = self.compare(a[1], b[1])
            return _Verdict(v.equal, "percent", f"both percentages; numbers: {v.rule}")
        pred_is_pct = a[0] == "pct"
        p = a if pred_is_pct else b

        def against(x) -> _Verdict:        # keeps the prediction first
            return self.compare(x, b) if pred_is_pct else self.compare(a, x)
        v = against(p[1])
        if v.equal:
            return _Verdict(True, "percent", f"p% read as p percent points ({v.rule})")
        v2 = against(_hundredth(p[1]))
        if v2.equal:
            return _Verdict(True, "percent", f"p% read as p/100 ({v2.rule})")
        return _Verdict(False, "percent", "neither p nor p/100 matches")

    def _relation(self, a, b) -> _Verdict:
        if a[0] == "rel" and b[0] == "rel":
            return self._two_relations(a, b)
        pred_is_rel = a[0] == "rel"
        r, other = (a, b) if pred_is_rel else (b, a)
        value = _stated_value(r)
        if value is not None:
            v = self.compare(value, b) if pred_is_rel else self.compare(a, value)
            return _Verdict(v.equal, v.rule, f"{P.describe(r)} read as {P.describe(value)}; {v.detail}")
        return _Verdict(False, "structure", "relation vs value")

    def _two_relations(self, a, b) -> _Verdict:
        ia, ib = _as_interval(a), _as_interval(b)
        if ia is not None and ib is not None:
            v = self.compare(ia, ib)
            return _Verdict(v.equal, v.rule, f"as intervals {P.describe(ia)} vs {P.describe(ib)}; {v.detail}")
        if a[3][0] == "rel" or b[3][0] == "rel" or "~=" in (a[1], b[1]):
            # chains (x = 5 + 6 = 11) and approximations (x = 1/3 ~= 0.333): the values they state
            va, vb = _stated_value(a), _stated_value(b)
            if va is not None and vb is not None:
                return self.compare(va, vb)
            return _Verdict(False, "structure", "chained relations differ")
        flip = {">": "<", ">=": "<="}
        (_, opa, la, ra), (_, opb, lb, rb) = a, b
        if opa in flip:
            opa, la, ra = flip[opa], ra, la
        if opb in flip:
            opb, lb, rb = flip[opb], rb, lb
        if opa != opb:
            return _Verdict(False, "relation", f"operators {opa} vs {opb}")
        if opa == "=" and _is_label(la) and la == lb:
            v = self.compare(ra, rb)
            return _Verdict(v.equal, v.rule, f"same left side {P.describe(la)}; {v.detail}")
        if opa == "=" and (la[0] == "tuple" or la[0] == "ratio" or ra[0] in ("tuple", "ratio", "matrix")):
            return _Verdict(False, "relation", "labelled answers with different labels or values")
        da = ("add", (la, ("neg", ra)))
        db = ("add", (lb, ("neg", rb)))
        if opa in ("=", "!="):
            return self._worker(da, db, mode="proportional")
        return self._scalar(da, db)

    def _ratio(self, a, b) -> _Verdict:
        """a:b = c:d iff a*d = b*c (term by term against the first term); a:b vs a value: a/b."""
        if a[0] == "ratio" and b[0] == "ratio":
            xs, ys = a[1], b[1]
            if len(xs) != len(ys):
                return _Verdict(False, "ratio", f"{len(xs)} vs {len(ys)} terms")
            crossed_a = tuple(("mul", (x, ys[0])) for x in xs[1:])
            crossed_b = tuple(("mul", (y, xs[0])) for y in ys[1:])
            v = self._ordered(crossed_a, crossed_b)
            return _Verdict(v.equal, "ratio", f"cross products: {v.detail}")
        r = a if a[0] == "ratio" else b
        if len(r[1]) != 2 or (a if r is b else b)[0] not in _SCALAR_KINDS:
            return _Verdict(False, "ratio", "ratio vs a non-number")
        quotient = ("div", r[1][0], r[1][1])
        return self.compare(quotient, b) if r is a else self.compare(a, quotient)

    def _intervals(self, xs, ys) -> _Verdict:
        """Two subsets of the reals as unions of intervals, compared piece by piece, unordered."""
        v = self._unordered(xs, ys)
        return _Verdict(v.equal, "intervals", f"{' U '.join(P.describe(x) for x in xs)} vs "
                                              f"{' U '.join(P.describe(y) for y in ys)}: {v.detail}")

    def _sequence(self, a, b) -> _Verdict:
        a, b = _matrix_form(a), _matrix_form(b)
        ka, kb = a[0], b[0]
        if ka == "tuple" and kb == "tuple":
            a, b = _open_at_infinity(a), _open_at_infinity(b)
            if (a[1], a[2]) != (b[1], b[2]):
                return _Verdict(False, "brackets", f"{a[1]}..{a[2]} vs {b[1]}..{b[2]}")
            return self._ordered(a[3], b[3])
        if ka == "matrix" and kb == "matrix":
            if len(a[1]) != len(b[1]) or len(a[1][0]) != len(b[1][0]):
                return _Verdict(False, "matrix", "shapes differ")
            return self._ordered(tuple(x for r in a[1] for x in r), tuple(x for r in b[1] for x in r))
        if {ka, kb} == {"matrix", "tuple"}:
            # a vector: a one-row or one-column matrix equals the tuple of its entries
            m, t = (a, b) if ka == "matrix" else (b, a)
            if len(m[1]) != 1 and len(m[1][0]) != 1:
                return _Verdict(False, "matrix", "a matrix vs a tuple")
            entries = tuple(x for r in m[1] for x in r)
            return self._ordered(entries, t[3]) if m is a else self._ordered(t[3], entries)
        if {ka, kb} == {"list", "tuple"}:
            # `x = 3, y = -2` names the coordinates of the tuple `(3, -2)`, in the order written
            lst, t = (a, b) if ka == "list" else (b, a)
            values = _labelled_values(lst)
            if values is None or t[1] != "(":
                return _Verdict(False, "structure", "a list vs a tuple")
            return self._ordered(values, t[3]) if lst is a else self._ordered(t[3], values)
        if ka == "list" and kb == "list" and self.ordered:
            return self._ordered(a[1], b[1])
        unordered = {"list", "set"}
        if ka in unordered and kb in unordered:
            return self._unordered(a[1], b[1])
        if ka == "union" and kb == "union":
            return self._unordered(a[1], b[1])
        return _Verdict(False, "structure", f"{ka} vs {kb}")

    def _ordered(self, xs, ys) -> _Verdict:
        if len(xs) != len(ys):
            return _Verdict(False, "length", f"{len(xs)} vs {len(ys)} elements")
        if len(xs) > _MAX_ELEMENTS:
            return _Verdict(False, "guard", f"more than {_MAX_ELEMENTS} elements")
        rules = []
        for i, (x, y) in enumerate(zip(xs, ys)):
            v = self.compare(x, y)
            if not v.equal:
                return _Verdict(False, v.rule, f"element {i + 1} differs: {v.detail}")
            rules.append(v.rule)
        return _Verdict(True, "elementwise", ", ".join(sorted(set(rules))))

    def _unordered(self, xs, ys) -> _Verdict:
        if len(xs) != len(ys):
            return _Verdict(False, "length", f"{len(xs)} vs {len(ys)} elements")
        if len(xs) > _MAX_ELEMENTS:
            return _Verdict(False, "guard", f"more than {_MAX_ELEMENTS} elements")
        unused = list(range(len(ys)))
        for i, x in enumerate(xs):
            for j in unused:
                if self.compare(x, ys[j]).equal:
                    unused.remove(j)
                    break
            else:
                return _Verdict(False, "unordered", f"element {P.describe(x)} has no match")
        return _Verdict(True, "unordered", "every element matched once")

    # -- scalars --
    def _scalar(self, a, b) -> _Verdict:
        if a[0] == "sym" and b[0] == "sym":
            return _Verdict(a[1] == b[1], "symbol", f"{a[1]} vs {b[1]}")
        ra, rb = P.rational(a), P.rational(b)
        tolerant = P.has_decimal(a) != P.has_decimal(b)
        # A gold written as a decimal states its precision: an exact prediction must round to it.
        places = _stated_places(b) if tolerant and not P.has_decimal(a) else None
        half_unit = Fraction(1, 2 * 10**places) if places is not None and places >= 0 else None
        if ra is not None and rb is not None:
            if ra == rb:
                return _Verdict(True, "exact-rational", _short(ra))
            diff = abs(ra - rb)
            if tolerant and diff < _REL_TOL * max(abs(ra), abs(rb)) and (half_unit is None or diff <= half_unit):
                return _Verdict(True, "relative-tolerance",
                                f"|diff| < 1e-6 * max: {_short(ra)} vs {_short(rb)}"
                                + (f", within the gold's last place 1e-{places}" if half_unit else ""))
            why = "exact values differ"
            if tolerant:
                why = ("not the gold's value at its stated precision"
                       if half_unit is not None and diff > half_unit else "relative difference above 1e-6")
            return _Verdict(False, "exact-rational" if not tolerant else "relative-tolerance",
                            f"{why}: {_short(ra)} vs {_short(rb)}")
        P.check_guards(a)
        P.check_guards(b)
        tolerant = tolerant or (P.has_decimal(a) and P.has_decimal(b))
        settled = N.decide(a, b, tolerant=tolerant, abs_tol=half_unit)
        if settled is not None:
            return _Verdict(settled, "relative-tolerance" if tolerant else "numeric-mpmath", "mpmath at the worker's points and tolerances")
        return self._worker(a, b, tolerant=tolerant, abs_tol=half_unit)

    def _worker(self, a, b, *, tolerant: bool = False, mode: str = "equal",
                abs_tol: Fraction | None = None) -> _Verdict:
        left = self.deadline - time.monotonic()
        if left <= 0:
            return _Verdict(False, "timeout", "time budget spent")
        req = {"a": P.to_json(a), "b": P.to_json(b), "tolerant": tolerant, "mode": mode}
        if abs_tol is not None:
            req["abs_tol"] = f"{abs_tol.numerator}/{abs_tol.denominator}"
        try:
            res = POOL.compare(req, left)
        except WorkerTimeout:
            return _Verdict(False, "timeout", "sympy worker killed at the wall-clock limit")
        except Exception as e:          # could not start a worker, broken pipe, ...
            return _Verdict(False, "worker-error", f"{type(e).__name__}: {e}"[:200])
        return _Verdict(bool(res.get("equal")), str(res.get("rule")), str(res.get("detail", "")))


_SCALAR_KINDS = ("num", "sym", "const", "add", "mul", "neg", "div", "pow", "fact", "func")


def _hundredth(p):
    """p/100 for the value reading of `p%`; a written decimal keeps its stated precision."""
    if p[0] == "num" and p[2] is not None:
        return ("num", p[1] / 100, p[2] + 2)
    return ("div", p, ("num", Fraction(100), None))


def _stated_places(node) -> int | None:
    """Decimal places of a gold that is one written decimal (`0.33`, `-2.50`), else None."""
    if node[0] == "neg":
        node = node[1]
    return node[2] if node[0] == "num" else None


def _is_label(node) -> bool:
    """A name an answer may carry on the left of `=`: `x`, `y_1`, `AB`, `f(x)`, `P(A)`, `|AB|`,
    `(p, q)`, `V_1:V_2`. Not `2x` or `x^2` (those make an equation, not a label)."""
    kind = node[0]
    if kind == "sym":
        return True
    if kind == "mul":
        first, rest = node[1][0], node[1][1:]
        return (first[0] == "sym" and len(node[1]) <= 4
                and all(c[0] == "sym" or (c[0] == "num" and c[2] is None) for c in rest))
    if kind == "func" and node[1] == "abs":
        return _is_label(node[2][0])
    if kind in ("tuple", "ratio"):
        items = node[3] if kind == "tuple" else node[1]
        return all(_is_label(x) for x in items)
    return False


def _labelled_values(lst):
    """`x = 3, y = -2` -> (3, -2); None unless every element is a labelled value."""
    values = []
    for e in lst[1]:
        if e[0] != "rel" or e[1] != "=" or not _is_label(e[2]) or e[3][0] == "rel":
            return None
        values.append(e[3])
    return tuple(values)


def _chain(rel) -> tuple[list[str], list]:
    """`a = b ~= c` (nested to the right) -> (['=', '~='], [a, b, c])."""
    ops, sides = [], [rel[2]]
    node = rel
    while node[0] == "rel":
        ops.append(node[1])
        node = node[3]
        sides.append(node[2] if node[0] == "rel" else node)
    return ops, sides


def _stated_value(rel):
    """The value a relation states as an answer, or None: `x = 5` -> 5; a chain `x = 5+5+1 = 11`
    or `5+5+1 = 11` -> its last side; `x = 1/3 ~= 0.333` or `pi ~= 3.14` -> the side before the
    first `~=` (the exact one); `x ~= 3.14` -> 3.14. An equation in a variable (`2x = 6`) states
    no value."""
    if rel[0] != "rel":
        return None
    ops, sides = _chain(rel)
    if any(op not in ("=", "~=") for op in ops):
        return None
    if _is_label(sides[0]):
        sides, ops = sides[1:], ops[1:]
    if "~=" in ops:
        sides = sides[:ops.index("~=") + 1]
    if len(sides) == 1:
        return sides[0]
    if any(P.has_symbols(s) for s in sides[:-1]):
        return None
    return sides[-1]


_OO = ("const", "oo")
_NEG_OO = ("neg", ("const", "oo"))


def _open_at_infinity(t):
    """An interval end at +-oo is open whatever bracket was written (`[3, \\infty]` = `[3, oo)`)."""
    if len(t[3]) != 2:
        return t
    lo, hi = t[3]
    return ("tuple", "(" if lo == _NEG_OO else t[1], ")" if hi == _OO else t[2], t[3])


def _as_interval(rel):
    """x < 3 -> (-oo, 3); 1 <= x < 3 -> [1, 3); 0 < f(x) < 1 -> (0, 1); None if the relation is
    not an interval in one variable (or one labelled quantity)."""
    if rel[0] != "rel" or rel[1] in ("=", "!=", "~="):
        return None
    op, lhs, rhs = rel[1], rel[2], rel[3]
    if rhs[0] == "rel":                                   # chained: a op x op2 b
        op2, mid, hi = rhs[1], rhs[2], rhs[3]
        if not _is_label(mid) or mid[0] == "func" or hi[0] == "rel" or op2 in ("=", "!=", "~=") or P.has_symbols(lhs) \
                or P.has_symbols(hi):
            return None
        if op in ("<", "<=") and op2 in ("<", "<="):
            return ("tuple", "(" if op == "<" else "[", ")" if op2 == "<" else "]", (lhs, hi))
        if op in (">", ">=") and op2 in (">", ">="):
            return ("tuple", "(" if op2 == ">" else "[", ")" if op == ">" else "]", (hi, lhs))
        return None
    if not _is_label(lhs) and _is_label(rhs):
        lhs, rhs = rhs, lhs
        op = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}[op]
    if not _is_label(lhs) or P.has_symbols(rhs) or lhs[0] == "func":
        return None                           # |x| < 3 is not x < 3 (see _abs_inequality)
    if op == "<":
        return ("tuple", "(", ")", (_NEG_OO, rhs))
    if op == "<=":
        return ("tuple", "(", "]", (_NEG_OO, rhs))
    if op == ">":
        return ("tuple", "(", ")", (rhs, _OO))
    return ("tuple", "[", ")", (rhs, _OO))


def _is_real_set_form(node) -> bool:
    """Whether a side is written as a subset of the reals: an inequality, `x != a`, a union, or a
    list that joins inequalities (`x < -2 or x > 3`)."""
    kind = node[0]
    if kind == "rel":
        return node[1] not in ("=", "~=")
    if kind == "union":
        return True
    return kind == "list" and any(e[0] == "rel" and e[1] not in ("=", "~=") for e in node[1])


def _real_set(node):
    """A subset of the reals as a tuple of intervals, or None: an interval tuple `(a, b]`, an
    inequality, `x != a` (two rays), a union or an "or"-list of those."""
    kind = node[0]
    if kind == "tuple":
        return (_open_at_infinity(node),) if len(node[3]) == 2 else None
    if kind == "rel":
        absolute = _abs_inequality(node)
        if absolute is not None:
            return absolute
        if node[1] == "!=" and _is_label(node[2]) and not P.has_symbols(node[3]):
            a = node[3]
            return (("tuple", "(", ")", (_NEG_OO, a)), ("tuple", "(", ")", (a, _OO)))
        interval = _as_interval(node)
        return (_open_at_infinity(interval),) if interval is not None else None
    if kind in ("union", "list"):
        pieces = []
        for item in node[1]:
            sub = _real_set(item)
            if sub is None:
                return None
            pieces.extend(sub)
        return tuple(pieces)
    if kind == "set" and not node[1]:
        return ()
    return None


def _abs_inequality(rel):
    """|x| < a -> (-a, a); |x| >= a -> (-oo, -a] U [a, oo); None for other relations."""
    op, lhs, rhs = rel[1], rel[2], rel[3]
    if rhs[0] == "rel":
        return None
    if not (lhs[0] == "func" and lhs[1] == "abs") and rhs[0] == "func" and rhs[1] == "abs":
        lhs, rhs = rhs, lhs
        op = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "!=": "!="}.get(op, op)
    if not (lhs[0] == "func" and lhs[1] == "abs" and _is_label(lhs[2][0])) or P.has_symbols(rhs):
        return None
    a, neg_a = rhs, ("neg", rhs)
    if op == "<":
        return (("tuple", "(", ")", (neg_a, a)),)
    if op == "<=":
        return (("tuple", "[", "]", (neg_a, a)),)
    if op == ">":
        return (("tuple", "(", ")", (_NEG_OO, neg_a)), ("tuple", "(", ")", (a, _OO)))
    if op == ">=":
        return (("tuple", "(", "]", (_NEG_OO, neg_a)), ("tuple", "[", ")", (a, _OO)))
    return None


def _matrix_form(node):
    """`[[1, 2], [3, 4]]` (rows as bracketed lists) -> the matrix; anything else unchanged."""
    if node[0] != "tuple" or node[1] != "[" or not node[3]:
        return node
    rows = node[3]
    if all(r[0] == "tuple" and r[1] == "[" and r[2] == "]" for r in rows) \
            and len({len(r[3]) for r in rows}) == 1:
        return ("matrix", tuple(r[3] for r in rows))
    return node


def _short(q: Fraction) -> str:
    if P._bits(q) > 180:
        # float() of a huge Fraction still works (it rounds); str() of a huge int may not
        return f"~{_approx(q)} (exact, {P._bits(q)} bits)"
    return f"{q.numerator}/{q.denominator}" if q.denominator != 1 else str(q.numerator)


def _approx(q: Fraction) -> str:
    """Mantissa/exponent of a possibly huge rational without converting it to a decimal string."""
    if q == 0:
        return "0"
    lg = _math.log10(abs(q.numerator)) - _math.log10(q.denominator)
    exp = _math.floor(lg)
    return f"{'-' if q < 0 else ''}{10 ** (lg - exp):.6f}e{exp:+d}"


_FUNCTION_WORDS = P.FUNCS | {"pi", "inf", "infinity", "infty", "oo", "or", "and"}


def _is_bare_words(norm: str) -> bool:
    """`Yes`, `no solution`, `Monday`: words, not a product of one-letter variables."""
    words = re.findall(r"[A-Za-z]+", norm)
    return (re.fullmatch(r"[A-Za-z][A-Za-z ]*[A-Za-z]", norm) is not None
            and any(len(w) >= 3 and w.lower() not in _FUNCTION_WORDS for w in words))


# Written-out empty solution sets: the same answer as \emptyset.
_NO_SOLUTION = frozenset({"no solution", "no solutions", "no real solution", "no real solutions",
                          "there are no solutions", "there is no solution", "none", "empty set"})


def _prepare(s, sentences: bool = True) -> tuple[str | None, object | None, str | None]:
    """(normalised, tree, error) for one side. A side that does not parse as an answer but marks
    one (`The final answer is $\\frac12$. I hope it is correct.`, a boxed sentence, GSM8K's
    `#### 18`) is read as the answer it marks; a bare last number is not guessed here."""
    if sentences and isinstance(s, str) and len(s) <= _MAX_SENTENCE_CHARS and _SENTENCE.search(s):
        marked = X.marked(response_region(s))
        if marked is not None and marked.strip() != s.strip():
            m_norm, m_tree, m_error = _prepare_answer(marked)
            if m_error is None:
                return m_norm, m_tree, None
    return _prepare_answer(s)


# A sentence rather than an answer: two words in a row (prose parses as a product of letters
# otherwise), a GSM8K `####`, a box that does not wrap the whole side, or math spans.
_SENTENCE = re.compile(r"(?<!\\)\b[A-Za-z]{3,}[,:]?\s+[A-Za-z]{2,}\b|####|.\\boxed|\$|\\\(|\\\[")


def _prepare_answer(s) -> tuple[str | None, object | None, str | None]:
    """(normalised, tree, error) for one side read as an answer."""
    try:
        norm, is_text = P.normalize(s)
    except (P.ParseError, P.GuardError) as e:
        return None, None, f"normalise: {e}"
    if not norm:
        return norm, None, "empty answer"
    if is_text or _is_bare_words(norm):
        words = " ".join(norm.lower().split())
        if words in _NO_SOLUTION:
            return norm, ("set", ()), None
        return norm, ("text", words), None
    try:
        return norm, P.parse(norm), None
    except (P.ParseError, P.GuardError) as e:
        return norm, None, f"parse: {e}"
    except RecursionError:
        return norm, None, "parse: nesting too deep"


def _decimal_comma(norm: str | None, tree, other):
    """`2,74` against one number is 2.74 (a decimal comma); against a list or set it stays the
    list 2, 74. Thousands groups (`1,000`) never get here: normalisation already read them."""
    if tree is None or other is None or tree[0] != "list" or not norm \
            or P.DECIMAL_COMMA.fullmatch(norm) is None or other[0] not in _SCALAR_KINDS + ("pct",):
        return tree
    try:
        return P.parse(norm.replace(",", "."))
    except (P.ParseError, P.GuardError):
        return tree


_CHOICE = re.compile(r"^\(([A-E])\)\s*(.+)$")


def _choice(norm: str | None, other, error: str):
    """`(C) 6`, a multiple-choice option written with its value: the letter against a letter,
    else the value. Returns (tree, error)."""
    m = _CHOICE.match(norm or "")
    if not m:
        return None, error
    if other == ("sym", m.group(1)):
        return other, None
    _, tree, err = _prepare_answer(m.group(2))
    return tree, err


def _decide(pred, gold, timeout_s: float, ordered: bool, sentences: bool = True) -> dict:
    out = {"equal": False, "rule": "", "detail": "", "pred": pred, "gold": gold,
           "pred_normalized": None, "gold_normalized": None,
           "pred_parsed": None, "gold_parsed": None}
    if pred is None or gold is None:
        out.update(rule="no-answer", detail="pred is None" if pred is None else "gold is None")
        return out
    pn, pt, perr = _prepare(pred, sentences)
    gn, gt, gerr = _prepare(gold)
    pt, gt = _decimal_comma(pn, pt, gt), _decimal_comma(gn, gt, pt)
    if perr and gt is not None:
        pt, perr = _choice(pn, gt, perr)
    if gerr and pt is not None:
        gt, gerr = _choice(gn, pt, gerr)
    out["pred_normalized"], out["gold_normalized"] = pn, gn
    if pt is not None:
        out["pred_parsed"] = P.describe(pt)
    if gt is not None:
        out["gold_parsed"] = P.describe(gt)
    if perr or gerr:
        if pn and gn and pn == gn and not (perr or "").startswith("normalise"):
            # Unparseable but identical after normalisation (e.g. an exotic text answer).
            out.update(equal=True, rule="identical-text", detail=perr or gerr)
            return out
        if (pn and gn and perr and gerr and "guard" not in (perr + gerr)
                and not re.search(r"[\d\\^]", pn + gn) and pn.lower() == gn.lower()):
            out.update(equal=True, rule="text", detail="identical words (case-insensitive)")
            return out
        out.update(equal=False, rule="parse-failure",
                   detail="; ".join(f"{side}: {e}" for side, e in (("pred", perr), ("gold", gerr)) if e))
        return out
    if pt[0] == "text" or gt[0] == "text":
        if pt[0] == "text" and gt[0] == "text":
            eq = pt[1] == gt[1]
        else:
            # one side wrote \text{A} (a word), the other A: compare the written words
            eq = " ".join((pn or "").lower().split()) == " ".join((gn or "").lower().split())
        out.update(equal=eq, rule="text", detail="words compared case-insensitively")
        return out
    try:
        v = _Comparer(timeout_s, ordered).compare(pt, gt)
        out.update(equal=v.equal, rule=v.rule, detail=v.detail)
    except P.GuardError as e:
        out.update(equal=False, rule="guard", detail=str(e))
    except P.Undefined as e:
        out.update(equal=False, rule="undefined", detail=str(e))
    except RecursionError:
        out.update(equal=False, rule="guard", detail="nesting too deep")
    return out


def explain(pred: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, ordered: bool = False) -> dict:
    """The verdict and why: {'equal', 'rule', 'detail', 'pred', 'gold', 'pred_normalized',
    'gold_normalized', 'pred_parsed', 'gold_parsed'}. Never raises. `ordered=True`: bare lists
    (`4, 1, 9`) compare in order, for rows whose question asks for an order."""
    try:
        return _decide(pred, gold, timeout_s, ordered)
    except Exception as e:  # a checker bug must cost a reward, not a training run
        return {"equal": False, "rule": "internal-error", "detail": f"{type(e).__name__}: {e}"[:300],
                "pred": pred, "gold": gold, "pred_normalized": None, "gold_normalized": None,
                "pred_parsed": None, "gold_parsed": None}


def _grade(pred: str, gold: str, ordered: bool, sentences: bool) -> bool:
    try:
        return bool(_decide(pred, gold, DEFAULT_TIMEOUT_S, ordered, sentences)["equal"])
    except Exception:  # as explain(): a checker bug costs a reward, not a training run
        return False


def math_equal(pred: str, gold: str, *, timeout_s: float = DEFAULT_TIMEOUT_S, ordered: bool = False) -> bool:
    """True iff pred and gold are mathematically equivalent (rules in the module docstring).
    Never raises; False on parse failure, guard, or timeout. `ordered=True`: bare lists compare
    in order."""
    return bool(explain(pred, gold, timeout_s=timeout_s, ordered=ordered)["equal"])


# ---------------------------------------------------------------------------------------------
# Reward
# ---------------------------------------------------------------------------------------------

# Tasks whose prompts ask for a number (data/arithmetic.py, data/equations.py): see "Answer form".
NUMBER_TASKS = frozenset({"arithmetic", "equations"})


def _is_number_tree(node) -> bool:
    if node[0] == "rel" and node[1] == "=" and node[2][0] == "sym":
        node = node[3]               # `x = 7/3`: the builder's own equations answers
    if node[0] == "neg":
        node = node[1]
    if node[0] == "num":
        return True
    if node[0] != "div":
        return False
    top, bottom = node[1][1] if node[1][0] == "neg" else node[1], node[2]
    if top[0] != "num" or bottom[0] != "num" or top[2] is not None or bottom[2] is not None:
        return False                 # only integer over integer, as written (no decimals)
    p, q = top[1], bottom[1]
    return (p.denominator == 1 and q.denominator == 1 and q > 1
            and _math.gcd(p.numerator, q.numerator) == 1)


def is_number(answer: str | None) -> bool:
    """True when `answer` is one plain number: an integer or decimal (`47`, `-3`, `0.5`, `1,000`,
    `2 1/3`), or a fraction of two integers in lowest terms (`-3/4`, `\\frac{7}{3}`), optionally
    written `x = <number>`. Not an expression (`29 + 18`, `94/2`), list, hedge or relation."""
    if answer is None:
        return False
    _, tree, error = _prepare(answer, sentences=False)
    return error is None and tree is not None and _is_number_tree(tree)


def accuracy_reward(prompts, completions, answer=None, task=None, ordered=None, broad: bool = False,
                    **kwargs) -> list[float | None]:
    """R1 accuracy reward: 1.0 if the extracted final answer equals the row's `answer`, else
    0.0; None where the row has no answer (None or empty, or no `answer` column at all). A gold
    answer that contains `\\boxed{}` is reduced to its boxed content first. Rows whose `task` is
    in `NUMBER_TASKS` are paid only for a plain number (module docstring, "Answer form").
    `ordered` (a column, or one bool for all rows): the row's question asks for the values in an
    order, so a bare list must match in order. `broad=True` (an option, e.g.
    `rewards.get("accuracy", broad=True)` for an external dataset's outputs) reads the answer by
    the broad extraction rules; the default is the strict rule RL pays by."""
    n = len(completions)
    if isinstance(answer, (str, int, float)) or answer is None:
        answer = [answer] * n
    if isinstance(task, str) or task is None:
        task = [task] * n
    if isinstance(ordered, bool) or ordered is None:
        ordered = [bool(ordered)] * n
    rewards: list[float | None] = []
    for completion, gold, row_task, row_ordered in zip(completions, answer, task, ordered):
        if gold is None or (isinstance(gold, str) and not gold.strip()):
            rewards.append(None)
            continue
        gold = str(gold)
        if "\\boxed" in gold or "\\fbox" in gold:
            gold = extract_answer(gold) or gold
        pred = extract_answer(completion_text(completion), broad=broad)
        if pred is not None and row_task in NUMBER_TASKS and not is_number(pred):
            pred = None
        # The strict rule also holds inside the answer: a prediction written as a sentence
        # ("3 or maybe $4$") is not read for the answer it marks, which would pay a hedge.
        equal = pred is not None and bool(_grade(pred, gold, bool(row_ordered), sentences=broad))
        rewards.append(1.0 if equal else 0.0)
    return rewards
