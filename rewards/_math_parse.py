"""Private: the math checker's own tokenizer and grammar (no eval, no sympify, no parse_expr).

What this module does:
- `normalize(text)`: string-level clean-up of an answer (TeX wrappers, boxes, spacing, `\\text{}`,
  units, currency, degrees, percent words, thousands separators, set notations); the rules are
  documented in `rewards/math.py`.
- `parse(text)`: a recursive-descent parser from the normalised answer to a small AST of plain
  tuples. Bounded by construction: at most `MAX_CHARS` characters, `MAX_TOKENS` tokens and
  `MAX_DEPTH` levels of nesting, so 5,000 nested parentheses fail fast instead of overflowing.
- `rational(node)`: the exact fast path. Evaluates an AST that denotes a rational number with
  `fractions.Fraction`, refusing (`GuardError`) any power, factorial or intermediate result whose
  size would exceed `MAX_BITS` BEFORE computing it, so `10**10**10` costs microseconds.
- `check_guards(node)`: the same size bounds for trees that go to sympy in the worker.
- `to_json(node)` / `describe(node)`: the wire format for the worker and a readable form for
  `explain`.

AST nodes (tuples, so two trees compare with `==`):
  ('num', Fraction, places)  places: None for an exact number, else the decimal places written
                             (`2.50` -> 2, `1.5e-3` -> 4): the precision the writer states
  ('sym', name)   ('const', 'pi'|'E'|'I'|'oo')   ('ratio', (x, y, ...))
  ('add', (x, ...))  ('mul', (x, ...))  ('neg', x)  ('div', x, y)  ('pow', x, y)  ('fact', x)
  ('pct', x)  ('func', name, (args...))
  ('tuple', open, close, (elems...))  ('set', (elems...))  ('list', (elems...))
  ('union', (items...))  ('matrix', ((row...), ...))  ('rel', op, lhs, rhs)  ('text', s)
  (rel ops: = < > <= >= != and ~= for \\approx; a chain a = b = c nests to the right)
"""
from __future__ import annotations

import math
import re
from fractions import Fraction

MAX_CHARS = 2000          # a final answer longer than this is not an answer, it is an essay
MAX_TOKENS = 800
MAX_DEPTH = 96            # parser recursion levels (about 3 per bracket): ~30 nested brackets
MAX_BITS = 200_000        # size cap of any exact intermediate value (numerator + denominator)
MAX_FACTORIAL = 10_000    # 10000! has ~119k bits; 2006! (a known trap) is well inside
MAX_EXPONENT = 100_000    # |exponent| cap for any power, symbolic or not
MAX_ROOT_DEGREE = 64
MAX_WORK_BITS = 2_000_000     # all exact intermediate results of one side together
MAX_SYMPY_CONST_BITS = 4096   # a rational inside a function/radical handed to sympy


class ParseError(ValueError):
    """The text is not an answer this grammar accepts."""


class GuardError(ValueError):
    """The answer denotes a value too large to compute safely (huge power/factorial/nesting)."""


# ---------------------------------------------------------------------------------------------
# Normalisation (string level)
# ---------------------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_UNICODE = {
    "\u2212": "-", "\u2013": "-", "\u00d7": r"\times ", "\u22c5": r"\cdot ", "\u00b7": r"\cdot ",
    "\u00f7": r"\div ", "\u03c0": r"\pi ", "\u221a": r"\sqrt", "\u221e": r"\infty ",
    "\u00b0": r"^\circ", "\u2264": r"\le ", "\u2265": r"\ge ", "\u2260": r"\ne ", "\u222a": r"\cup ",
    "\u00a0": " ", "\u2009": " ", "\u202f": " ", "\uff0c": ",", "\u3001": ",",
    "\u00b2": "^2", "\u00b3": "^3", "\u2248": r"\approx ", "\u27e8": r"\langle ", "\u27e9": r"\rangle ",
    "\u2208": r"\in ", "\u211d": r"\mathbb{R}", "\u2205": r"\emptyset ",
}
_SPACING = re.compile(r"(?<!\\)(?:\\[,;:!>]|\\ |\\q?quad\b|~|\\(?:display|text|script)style\b|\\hfill\b)")
_SIZERS = re.compile(r"\\(?:left|right|[bB]ig{1,2}[lrm]?)(?![a-zA-Z])\s*(\\?[.])?")
_LEADING_PHRASE = re.compile(
    r"^\s*(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)\s*:?\s*|^\s*therefore,?\s*", re.IGNORECASE)
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\\degree\b|\bdegrees?\b", re.IGNORECASE)
_PERCENT = re.compile(r"\\%|\bper\s?cent(?:age)?\b|\bpct\b|%", re.IGNORECASE)
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|textrm|textnormal|mathrm|mathbf|mathit|mbox|"
                       r"operatorname|mathsf|mathtt|rm|bf)\s*\{")
_UNIT_WORDS = (
    "square units|sq units|cubic units|units?|mm|cm|km|meters?|metres?|kilometers?|centimeters?|"
    "millimeters?|inch(?:es)?|in|ft|feet|foot|yards?|yd|miles?|mi|mph|kmh|km/h|m/s|kg|grams?|"
    "kilograms?|pounds?|lbs?|oz|ounces?|seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?|"
    "months?|years?|dollars?|cents?|liters?|litres?|ml|mL|cm\\^2|m\\^2|sq ft|square feet|"
    "square meters?|square inches|cubic feet|cubic meters?|cubic inches|radians?|rad|points?|"
    "people|persons?|students?|ways|times|apples|marbles|balls|books|cookies|coins|cards|pieces|"
    "items|hats|pages|boxes|cups|tickets|trees|cars|children|girls|boys|games|bags|candies")
# A one-letter unit (m, s, g, h, L) needs a space before it: `12 m` is 12 metres, `2m` is 2*m.
_TRAILING_UNIT = re.compile(r"(?:(?<=[\d}.)])\s*(?:" + _UNIT_WORDS + r")|\s+(?:" + _UNIT_WORDS
                            + r"|[mshgL]))(?:\s*\^\s*\{?[23]\}?)?\s*$")
_LEADING_CURRENCY = re.compile(r"^\s*(?:\\\$|\$|USD|\\textdollar)\s*")
# Currency signs are never math: dropped wherever they stand (`€45`, `45 €`, `\pounds 3`).
_CURRENCY = re.compile(r"€|£|¥|₹|\\(?:euro|pounds|textsterling|textdollar|textyen)(?![a-zA-Z])|\b(?:USD|EUR)\b")
# Markup that names what the number measures, not part of the value: `\angle ABC = 30`.
_NAME_MARKUP = re.compile(r"\\(?:angle|measuredangle|triangle|overrightarrow|vec|widehat|hat)(?![a-zA-Z])")
# The reals written as a set: the interval (-oo, oo).
_REALS = re.compile(r"\\mathbb\s*\{?\s*R\s*\}?|^\s*(?:\\text\{)?\s*all real numbers\s*\}?\s*$", re.IGNORECASE)
# `\{x \mid x > 3\}` (set-builder notation) -> `x > 3`, the condition; a whole answer only.
_SET_BUILDER = re.compile(r"^\\\{\s*[a-zA-Z]\s*(?:\\in\s*\\mathbb\s*\{?\s*R\s*\}?\s*)?(?:\||\\mid\b|:)\s*(.+?)\s*\\\}$")
# `]0, 1[` (ISO notation for open ends) -> `(0, 1)`; a whole answer only.
_ISO_INTERVAL = re.compile(r"^([\[\]])([^\[\]]+),([^\[\]]+)([\[\]])$")
# A leading group never starts with 0 (`0,111` is a decimal comma or a list, never 111).
_THOUSANDS = re.compile(r"(?<![\d.,])([1-9]\d{0,2}(?:,\d{3})+)(?![\d,]|\.\d*,)")
_OR_AND = re.compile(r"\s+(?:or|and)\s+|\\(?:text|mbox)\{\s*(?:or|and|,)\s*\}", re.IGNORECASE)
_VAR_IN = re.compile(r"^\s*[a-zA-Z]\s*\\in\s*")


def _match_brace(s: str, open_idx: int) -> int:
    """Index of the `}` closing the `{` at open_idx, or -1 (unbalanced)."""
    depth = 0
    i = open_idx
    n = len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return -1


def _strip_wrappers(s: str) -> str:
    """Remove whole-answer wrappers: $...$, \\(...\\), \\[...\\], \\boxed{...}."""
    for _ in range(8):
        t = s.strip()
        if t.startswith("$$") and t.endswith("$$") and len(t) >= 4:
            t = t[2:-2]
        elif t.startswith("$") and t.endswith("$") and len(t) >= 2 and not t.startswith("\\$"):
            t = t[1:-1]
        elif (t.startswith("\\(") and t.endswith("\\)")) or (t.startswith("\\[") and t.endswith("\\]")):
            t = t[2:-2]
        else:
            m = re.match(r"\\(?:boxed|fbox)\s*\{", t)
            if m:
                end = _match_brace(t, m.end() - 1)
                if end == len(t) - 1:
                    t = t[m.end():end]
        if t == s:
            break
        s = t
    return s.strip()


_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _unbox(s: str) -> str:
    """Every balanced \\boxed{X} inside an answer -> X."""
    out, pos = [], 0
    while True:
        m = _BOX_OPEN.search(s, pos)
        if not m:
            return "".join(out) + s[pos:]
        end = _match_brace(s, m.end() - 1)
        if end < 0:
            return "".join(out) + s[pos:]
        out.append(s[pos:m.start()] + s[m.end():end])
        pos = end + 1


def _rewrite_text_commands(s: str) -> tuple[str, bool]:
    """Apply the \\text{} rules. Returns (new string, whole_answer_was_text)."""
    m = _TEXT_CMD.match(s.strip())
    if m:
        st = s.strip()
        end = _match_brace(st, m.end() - 1)
        if end == len(st) - 1:
            inner = st[m.end():end].strip()
            # \text{Evelyn} is a word answer; \mathrm{e}, \text{(A)} and \text{5 cm} are math
            # written in roman type and go on through the normal rules.
            if re.search(r"[A-Za-z]{2,}", inner) and not re.search(r"\d", inner):
                return inner, True
            s = inner
    out = []
    i = 0
    while True:
        m = _TEXT_CMD.search(s, i)
        if not m:
            out.append(s[i:])
            break
        end = _match_brace(s, m.end() - 1)
        if end < 0:
            raise ParseError("unbalanced braces in \\text{...}")
        inner = s[m.end():end]
        before = "".join(out) + s[i:m.start()]
        rest = s[end + 1:]
        after_power = re.match(r"\s*\^\s*(\{[23]\}|[23])\s*$", rest)
        trailing = rest.strip() == "" or after_power is not None
        if trailing and before.strip() and re.fullmatch(r"[\sA-Za-z/.\-^{}0-9]*", inner) \
                and re.search(r"[A-Za-z]", inner):
            # A trailing \text{ cm}, \text{ units}^2, \mathrm{kg}: a unit, dropped.
            out.append(s[i:m.start()])
            return "".join(out), False
        if inner.strip().lower() in ("or", "and"):
            out.append(s[i:m.start()] + ",")
        else:
            out.append(s[i:m.start()] + inner)
        i = end + 1
    return "".join(out), False


def normalize(text: str) -> tuple[str, bool]:
    """Clean an answer string. Returns (normalised, is_text_answer). Raises ParseError."""
    if not isinstance(text, str):
        text = str(text)
    if len(text) > MAX_CHARS:
        raise ParseError(f"answer longer than {MAX_CHARS} characters")
    if _CONTROL.search(text):
        raise ParseError("answer contains control characters (NUL or similar)")
    s = text
    for k, v in _UNICODE.items():
        if k in s:
            s = s.replace(k, v)
    s = _strip_wrappers(s.strip().strip("*"))      # **42**: markdown bold around an answer
    s = _LEADING_PHRASE.sub("", s, count=1)
    s = _strip_wrappers(s)
    s = _unbox(s)           # \boxed{1}, \boxed{2}: boxes inside an answer are only emphasis
    s = re.sub(r"\\[dtc]frac", r"\\frac", s)
    s = re.sub(r"\\[dt]binom", r"\\binom", s)
    s = _SIZERS.sub(lambda m: "" if (m.group(1) or "").endswith(".") else (m.group(1) or ""), s)
    s = s.replace("{,}", "")
    s = re.sub(r",\\!\s*", ",", s)                  # 10,\!000 and 11,\! 111: TeX-typed separators
    s = re.sub(r"(?<=\d)\\,(?=\d{3}(?!\d))", "", s)     # 1\,000: a thin-space thousands separator
    s = _SPACING.sub(" ", s)
    s = s.strip()
    s = re.sub(r"(?:\\\.|\.|;|\\\\)+\s*$", "", s).strip()        # trailing sentence period
    for _ in range(4):                          # \text{\textbf{7}}: nested wrappers
        s, is_text = _rewrite_text_commands(s)
        if is_text or not _TEXT_CMD.search(s):
            break
    if is_text:
        return re.sub(r"\s+", " ", s).strip().rstrip("."), True
    s = _LEADING_CURRENCY.sub("", s)
    s = s.replace("\\$", "")
    s = _CURRENCY.sub("", s)
    s = _SET_BUILDER.sub(r"\1", s.strip())
    s = _NAME_MARKUP.sub("", s)
    s = _REALS.sub(r"(-\\infty, \\infty)", s)
    s = s.replace("\\langle", "(").replace("\\rangle", ")")      # a vector <1, 2, 3>
    s = _DEGREES.sub("", s)
    s = _PERCENT.sub("%", s)
    s = _OR_AND.sub(",", s)
    s = re.sub(r",(?:\s*,)+", ",", s)            # `1, 2, and 3`: the Oxford comma before "and"
    s = s.replace(";", ",")                     # `1; 2; 3`, `(1, 2); (3, 4)`: list separators
    s = _REPEATING.sub(_repeating_decimal, s)
    s = _VAR_IN.sub("", s)
    s = s.strip().rstrip(".").strip()
    # Units: only after a purely numeric remainder, so `2m` (a variable) keeps its m.
    m = _TRAILING_UNIT.search(s)
    if m and m.start() > 0:
        rest = s[:m.start()]
        if not re.search(r"[A-Za-z]", re.sub(r"\\[A-Za-z]+", "", rest)) and re.search(r"\d", rest):
            s = rest.strip()
    s = _THOUSANDS.sub(lambda m: m.group(1).replace(",", ""), s) if _is_single_number_context(s) \
        else s
    if _SPACE_THOUSANDS.fullmatch(s):
        s = s.replace(" ", "")                    # 1 000 000 (SI digit groups), whole answer only
    m = _ISO_INTERVAL.match(s.strip())
    if m and (m.group(1) == "]" or m.group(4) == "["):
        s = ("(" if m.group(1) == "]" else "[") + m.group(2) + "," + m.group(3) + (")" if m.group(4) == "[" else "]")
    return re.sub(r"\s+", " ", s).strip(), False


_SPACE_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?: \d{3})+(?:\.\d+)?")


_REPEATING = re.compile(r"(\d*)\.(\d*)\\overline\s*\{\s*(\d{1,30})\s*\}")


def _repeating_decimal(m: re.Match) -> str:
    """0.1\\overline{6} -> (1/6): a repeating decimal is an exact rational."""
    whole, fixed, rep = m.group(1) or "0", m.group(2), m.group(3)
    num = int(whole + fixed + rep) - int(whole + fixed)
    den = 10 ** len(fixed) * (10 ** len(rep) - 1)
    return f"({num}/{den})"


def _is_single_number_context(s: str) -> bool:
    """Thousands separators are read only where the whole answer is one number (1,000 or -1,234.5)
    or a number with % -- inside a tuple `(1,000)` a comma stays a separator."""
    return re.fullmatch(r"[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?\s*%?", s) is not None


# `2,74` or `0,111`: a decimal comma or a list of two numbers; math.py decides by the other side.
DECIMAL_COMMA = re.compile(r"[-+]?\d+,\d+")


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

_GREEK = {
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta",
    "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau", "upsilon", "phi", "varphi",
    "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Sigma", "Phi", "Psi", "Omega",
}
FUNCS = {
    "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "ln", "log", "exp", "sqrt", "abs",
}
_FUNC_ALIASES = {"asin": "arcsin", "acos": "arccos", "atan": "arctan"}
_WORD_CONSTS = {"pi": ("const", "pi"), "inf": ("const", "oo"), "infinity": ("const", "oo"),
                "infty": ("const", "oo"), "oo": ("const", "oo")}
_RELS = {"=": "=", "<": "<", ">": ">", "<=": "<=", ">=": ">=", "!=": "!=",
         "le": "<=", "leq": "<=", "leqslant": "<=", "ge": ">=", "geq": ">=", "geqslant": ">=",
         "ne": "!=", "neq": "!=", "lt": "<", "gt": ">", "approx": "~=", "simeq": "~="}

_TOKEN = re.compile(r"""
    (?P<num>\d+\.\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+(?![a-zA-Z])|\d+)
  | (?P<begin>\\begin\{(?:p|b|B|v|V|small)?matrix\}|\\begin\{array\}\{[lcr|]*\})
  | (?P<end>\\end\{(?:p|b|B|v|V|small)?matrix\}|\\end\{array\})
  | (?P<cmd>\\[a-zA-Z]+|\\[{}|])
  | (?P<rowsep>\\\\)
  | (?P<word>[a-zA-Z]+)
  | (?P<op><=|>=|!=|\*\*|[-+*/^!=<>,()\[\]{}|_&:'%])
  | (?P<ws>\s+)
""", re.VERBOSE)


def tokenize(s: str) -> list[tuple[str, str]]:
    """(kind, text) tokens; a run of letters that is not a known word becomes one token per
    letter. Raises ParseError on any character outside the grammar (quotes, dots after names,
    semicolons...), which is where code like `__import__('os')` stops."""
    toks: list[tuple[str, str]] = []
    pos = 0
    n = len(s)
    while pos < n:
        if len(toks) > MAX_TOKENS:
            raise ParseError(f"more than {MAX_TOKENS} tokens")
        m = _TOKEN.match(s, pos)
        if not m:
            raise ParseError(f"unexpected character {s[pos]!r} at {pos}")
        kind = m.lastgroup
        val = m.group()
        pos = m.end()
        if kind == "ws":
            continue
        if kind == "word":
            if val in FUNCS or val in _FUNC_ALIASES or val in _WORD_CONSTS:
                toks.append(("word", _FUNC_ALIASES.get(val, val)))
            elif val in ("or", "and"):
                toks.append(("op", ","))
            else:
                # Juxtaposed letters multiply (TeX convention): xy = x*y.
                toks.extend(("letter", c) for c in val)
            continue
        toks.append((kind, val))
    if len(toks) > MAX_TOKENS:
        raise ParseError(f"more than {MAX_TOKENS} tokens")
    return toks


# ---------------------------------------------------------------------------------------------
# Parser
# ---------------------------------------------------------------------------------------------

_OPEN = {"(": ")", "[": "]"}


class _Parser:
    """Recursive descent over the tokens, loosest binding first:

        union    := list ('\\cup' list)*
        list     := relation (',' relation)*
        relation := expr (('=' | '<' | '\\le' | ...) relation)?
        expr     := term (('+' | '-') term)*
        term     := unary (('*' | '\\cdot' | '/' | '\\div') unary | <juxtaposed> power)*
        unary    := ('-' | '+') unary | power
        power    := postfix ('^' exponent)?          (right-associative: 2^3^2 = 2^9)
        postfix  := primary '!'* '%'?
        primary  := number | letter | \\pi | ( ... ) | [ ... ] | { ... } | \\{ ... \\} | |x|
                  | \\frac{}{} | \\sqrt[n]{} | \\binom{}{} | function | matrix

    Every nested rule passes through enter()/leave(), which caps recursion at MAX_DEPTH."""

    def __init__(self, toks: list[tuple[str, str]]):
        self.toks = toks
        self.i = 0
        self.depth = 0

    # -- helpers --
    def peek(self, k: int = 0) -> tuple[str, str] | None:
        j = self.i + k
        return self.toks[j] if j < len(self.toks) else None

    def take(self) -> tuple[str, str]:
        t = self.peek()
        if t is None:
            raise ParseError("unexpected end of answer")
        self.i += 1
        return t

    def at(self, kind: str, val: str | None = None) -> bool:
        t = self.peek()
        return t is not None and t[0] == kind and (val is None or t[1] == val)

    def expect(self, kind: str, val: str) -> None:
        t = self.take()
        if t != (kind, val):
            raise ParseError(f"expected {val!r}, found {t[1]!r}")

    def enter(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError(f"nesting deeper than {MAX_DEPTH} levels")

    def leave(self) -> None:
        self.depth -= 1

    # -- grammar --
    def top(self):
        node = self.union()
        if self.peek() is not None:
            raise ParseError(f"unexpected {self.peek()[1]!r}")
        return node

    def union(self):
        items = [self.comma_list()]
        while self.at("cmd", "\\cup"):
            self.take()
            items.append(self.comma_list())
        return items[0] if len(items) == 1 else ("union", tuple(items))

    def comma_list(self):
        elems = [self.relation()]
        while self.at("op", ","):
            self.take()
            elems.append(self.relation())
        return elems[0] if len(elems) == 1 else ("list", tuple(elems))

    def relation(self):
        lhs = self.ratio()
        t = self.peek()
        op = None
        if t and t[0] == "op" and t[1] in ("=", "<", ">", "<=", ">=", "!="):
            op = _RELS[t[1]]
        elif t and t[0] == "cmd" and t[1][1:] in _RELS:
            op = _RELS[t[1][1:]]
        if op is None:
            return lhs
        self.take()
        # chained `a < x < b` nests: ('rel', '<', a, ('rel', '<', x, b))
        return ("rel", op, lhs, self.relation())

    def ratio(self):
        """`11:21`, `V_1:V_2`: a ratio of two or more terms."""
        parts = [self.expr()]
        while self.at("op", ":"):
            self.take()
            parts.append(self.expr())
        return parts[0] if len(parts) == 1 else ("ratio", tuple(parts))

    def expr(self):
        self.enter()
        terms = [self.term()]
        while self.at("op", "+") or self.at("op", "-") or self.at("cmd", "\\pm") or self.at("cmd", "\\mp"):
            t = self.take()
            if t[0] == "cmd":
                raise ParseError("\\pm answers are ambiguous; write the values as a list")
            rhs = self.term()
            terms.append(rhs if t[1] == "+" else ("neg", rhs))
        self.leave()
        return terms[0] if len(terms) == 1 else ("add", tuple(terms))

    def term(self):
        factors = [self.unary()]
        while True:
            t = self.peek()
            if t is None:
                break
            if t == ("op", "*") or (t[0] == "cmd" and t[1] in ("\\cdot", "\\times", "\\ast")):
                self.take()
                factors.append(self.unary())
            elif (t[0] == "op" and t[1] == "/") or (t[0] == "cmd" and t[1] == "\\div"):
                self.take()
                den = self.unary()
                factors = [("div", _mul(factors), den)]
            elif self._starts_primary(t) and t[0] != "num":
                # implicit multiplication: 2x, 2\pi, (1)(2), x y -- but never `2 3`
                factors.append(self.power())
            else:
                break
        return _mul(factors)

    def _starts_primary(self, t) -> bool:
        kind, val = t
        if kind in ("num", "letter", "word", "begin"):
            return True
        if kind == "op" and val in ("(", "{"):
            return True
        if kind == "cmd":
            name = val[1:]
            return (name in ("frac", "sqrt", "binom", "pi", "infty", "lfloor", "lceil", "exp", "ln", "log")
                    or name in FUNCS or name in _GREEK or name in ("{", "vert", "lvert", "|", "mathrm"))
        return False

    def unary(self):
        if self.at("op", "-"):
            self.take()
            self.enter()
            node = self.unary()
            self.leave()
            return ("neg", node)
        if self.at("op", "+"):
            self.take()
            return self.unary()
        return self.power()

    def power(self):
        self.enter()
        base = self.postfix()
        if self.at("op", "^") or self.at("op", "**"):
            self.take()
            if self.at("op", "{"):
                exp = self.group("{", "}")
            elif self.at("op", "-") or self.at("op", "+"):
                exp = self.unary()
            else:
                exp = self.power()
            base = ("pow", base, exp)
            base = self._postfix_tail(base)
        self.leave()
        return base

    def postfix(self):
        return self._postfix_tail(self.primary())

    def _postfix_tail(self, node):
        while self.at("op", "!"):
            self.take()
            node = ("fact", node)
        if self.at("op", "%"):
            self.take()
            node = ("pct", node)
        if self.at("op", "'"):
            raise ParseError("primes (f') are not compared")
        return node

    def group(self, open_: str, close: str):
        self.expect("op", open_)
        self.enter()
        node = self.union()
        self.leave()
        self.expect("op", close)
        return node

    def tex_arg(self):
        """A TeX macro argument: {...} or a single token (\\frac12 = \\frac{1}{2})."""
        if self.at("op", "{"):
            return self.group("{", "}")
        t = self.take()
        if t[0] == "num":
            if "." in t[1] or "e" in t[1].lower():
                raise ParseError("ambiguous unbraced macro argument")
            # TeX reads one digit: \frac12 -> 1 and 2, the rest of the digits stay in the stream.
            if len(t[1]) > 1:
                self.toks.insert(self.i, ("num", t[1][1:]))
            return ("num", Fraction(int(t[1][0])), None)
        if t[0] == "letter":
            return self._letter(t[1])
        if t[0] == "cmd" and (t[1][1:] in _GREEK or t[1] in ("\\pi", "\\infty")):
            self.i -= 1
            return self.primary()
        raise ParseError(f"unsupported macro argument {t[1]!r}")

    def _letter(self, c: str):
        if self.at("op", "_"):
            self.take()
            if self.at("op", "{"):
                sub = self._raw_group()
            else:
                sub = self.take()[1]
            if not re.fullmatch(r"[A-Za-z0-9]{1,8}", sub):
                raise ParseError("unsupported subscript")
            return ("sym", f"{c}_{sub}")
        if c == "e":
            return ("const", "E")
        if c == "i":
            return ("const", "I")
        return ("sym", c)

    def _raw_group(self) -> str:
        self.expect("op", "{")
        parts = []
        while not self.at("op", "}"):
            parts.append(self.take()[1])
            if len(parts) > 8:
                raise ParseError("subscript too long")
        self.take()
        return "".join(parts)

    def _func_args(self, name: str):
        if self.at("op", "("):
            node = self.group("(", ")")
            args = node[1] if node[0] == "list" else (node,)
            return args
        if self.at("op", "{"):
            return (self.group("{", "}"),)
        # \sin x, \cos 2x = cos(2x): the argument runs over juxtaposed factors and stops at an
        # operator or at the next function (\sin x \cos x = sin(x) cos(x))
        factors = [self.power()]
        while True:
            t = self.peek()
            if t is None or t[0] == "num" or not self._starts_primary(t):
                break
            if t[0] == "word" and t[1] in FUNCS or t[0] == "cmd" and (t[1][1:] in FUNCS or t[1] in (
                    "\\exp", "\\ln", "\\log", "\\frac", "\\sqrt")):
                break
            factors.append(self.power())
        return (_mul(factors),)

    def primary(self):
        t = self.take()
        kind, val = t
        if kind == "num":
            return _number(val)
        if kind == "letter":
            return self._letter(val)
        if kind == "word":
            if val in _WORD_CONSTS:
                return _WORD_CONSTS[val]
            return self._function(val)
        if kind == "op":
            if val in _OPEN:
                return self._bracketed(val)
            if val == "{":
                self.i -= 1
                return self.group("{", "}")
            if val == "|":
                return self._abs()
            if val == "]":
                raise ParseError("reversed interval brackets are not compared")
            raise ParseError(f"unexpected {val!r}")
        if kind == "cmd":
            return self._command(val)
        if kind == "begin":
            return self._matrix()
        raise ParseError(f"unexpected {val!r}")

    def _abs(self):
        self.enter()
        inner = self.expr()
        self.leave()
        t = self.take()
        if t[1] not in ("|", "\\|", "\\vert", "\\rvert"):
            raise ParseError("unbalanced |...|")
        return ("func", "abs", (inner,))

    def _bracketed(self, open_: str):
        self.enter()
        first = self.union()
        elems = first[1] if first[0] == "list" else (first,)
        self.leave()
        t = self.take()
        if t[0] != "op" or t[1] not in (")", "]"):
            raise ParseError(f"expected a closing bracket, found {t[1]!r}")
        close = t[1]
        if len(elems) == 1 and first[0] != "list":
            if open_ == "(" and close == ")":
                return first                          # grouping
            if open_ == "[" and close == "]":
                return first
            raise ParseError("a one-element interval is not an answer")
        return ("tuple", open_, close, tuple(elems))

    def _function(self, name: str):
        if name == "log" and self.at("op", "_"):
            self.take()
            base = self.tex_arg()
            args = self._func_args(name)
            if len(args) != 1:
                raise ParseError("log takes one argument")
            return ("func", "log", (args[0], base))
        power = None
        if self.at("op", "^") and name in FUNCS and name not in ("sqrt", "abs", "exp", "ln", "log"):
            # \sin^2 x = (\sin x)^2; \sin^{-1} is the inverse, which we do not guess at
            self.take()
            power = self.tex_arg()
            if power == ("neg", ("num", Fraction(1), None)):
                raise ParseError("f^{-1} notation is ambiguous")
        args = self._func_args(name)
        if name == "sqrt":
            if len(args) != 1:
                raise ParseError("sqrt takes one argument")
            node = ("func", "sqrt", args)
        elif name == "log":
            if len(args) not in (1, 2):
                raise ParseError("log takes one or two arguments")
            node = ("func", "log", args)
        else:
            if len(args) != 1:
                raise ParseError(f"{name} takes one argument")
            node = ("func", name, args)
        return ("pow", node, power) if power is not None else node

    def _command(self, val: str):
        name = val[1:]
        if name == "frac":
            num = self.tex_arg()
            den = self.tex_arg()
            return ("div", num, den)
        if name == "binom":
            return ("func", "binom", (self.tex_arg(), self.tex_arg()))
        if name == "sqrt":
            if self.at("op", "["):
                self.take()
                deg = self.expr()
                self.expect("op", "]")
                return ("func", "root", (self.tex_arg(), deg))
            return ("func", "sqrt", (self.tex_arg(),))
        if name == "pi":
            return ("const", "pi")
        if name == "infty":
            return ("const", "oo")
        if name in ("emptyset", "varnothing"):
            return ("set", ())
        if name == "mathrm":
            return self.tex_arg()
        if name in _GREEK:
            return ("sym", name)
        if name in FUNCS or name in ("exp", "ln", "log"):
            return self._function(name)
        if name in ("lfloor", "lceil"):
            self.enter()
            inner = self.expr()
            self.leave()
            self.expect("cmd", "\\rfloor" if name == "lfloor" else "\\rceil")
            return ("func", "floor" if name == "lfloor" else "ceil", (inner,))
        if name in ("vert", "lvert", "|"):
            return self._abs()
        if name == "{":
            self.enter()
            if self.at("cmd", "\\}"):
                self.take()
                self.leave()
                return ("set", ())
            node = self.union()
            self.leave()
            self.expect("cmd", "\\}")
            return ("set", node[1] if node[0] == "list" else (node,))
        raise ParseError(f"unsupported command {val}")

    def _matrix(self):
        rows: list[tuple] = []
        row: list = []
        self.enter()
        while True:
            if self.at("end"):
                self.take()
                break
            row.append(self.expr())
            if self.at("op", "&"):
                self.take()
            elif self.at("rowsep"):
                self.take()
                rows.append(tuple(row))
                row = []
            elif not self.at("end"):
                raise ParseError("malformed matrix")
        if row:
            rows.append(tuple(row))
        self.leave()
        if not rows or len({len(r) for r in rows}) != 1:
            raise ParseError("matrix rows of unequal length")
        return ("matrix", tuple(rows))


def _mul(factors: list):
    return factors[0] if len(factors) == 1 else ("mul", tuple(factors))


def _number(text: str):
    if len(text) > 400:
        raise GuardError("number literal longer than 400 digits")
    mant, _, exp = text.lower().partition("e")
    value = Fraction(mant) if mant not in ("", ".") else Fraction(0)
    places = len(mant.partition(".")[2]) if "." in mant else 0
    if exp:
        e = int(exp)
        if abs(e) > 400:
            raise GuardError("scientific exponent beyond 1e400")
        value *= Fraction(10) ** e
        places -= e
    is_decimal = "." in mant or bool(exp)
    return ("num", value, places if is_decimal else None)


_MIXED = re.compile(r"^(-?)\s*(\d+)\s*(?:\\frac\s*(?:\{\s*(\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))"
                    r"|\s(\d+)\s*/\s*(\d+))$")


_PM = re.compile(r"\\(?:pm|mp)(?![a-zA-Z])")


def parse(s: str):
    """Parse a normalised answer into an AST. Raises ParseError / GuardError."""
    m = _MIXED.match(s)
    if m:
        # Mixed numbers are read as a whole answer only: 2\frac{1}{2} = 5/2, 2 1/2 = 5/2.
        # 3\frac14 (TeX reads one digit per unbraced argument) is 3 1/4 as well
        sign, whole, a, a1, b, b1, c, d = m.groups()
        num, den = ((a or a1), (b or b1)) if c is None else (c, d)
        if int(den) != 0 and int(num) < int(den):
            v = int(whole) + Fraction(int(num), int(den))
            return ("num", -v if sign else v, None)
    if len(_PM.findall(s)) == 1 and "," not in s:
        # `\pm 2`, `1 \pm \sqrt2`, `x = \pm 3`: the two values, as an unordered list
        plus, minus = parse(_PM.sub("+", s)), parse(_PM.sub("-", s))
        return ("list", (plus, minus))
    toks = tokenize(s)
    if not toks:
        raise ParseError("empty answer")
    return _Parser(toks).top()


# ---------------------------------------------------------------------------------------------
# Exact rational evaluation (the fast path)
# ---------------------------------------------------------------------------------------------

def _bits(q: Fraction) -> int:
    return q.numerator.bit_length() + q.denominator.bit_length()


def _check(q: Fraction) -> Fraction:
    if _bits(q) > MAX_BITS:
        raise GuardError(f"intermediate value larger than {MAX_BITS} bits")
    return q


def _iroot(n: int, k: int) -> int | None:
    """Exact integer k-th root of n >= 0, or None. Integer Newton from a power-of-two upper bound
    (floats would overflow on the 200k-bit values the guards allow)."""
    if n < 2:
        return n
    x = 1 << -(-n.bit_length() // k)
    while True:
        y = ((k - 1) * x + n // x ** (k - 1)) // k
        if y >= x:
            break
        x = y
    return x if x ** k == n else None


def _rational_root(q: Fraction, k: int) -> Fraction | None:
    if k <= 0 or k > MAX_ROOT_DEGREE:
        return None
    if q < 0:
        if k % 2 == 0:
            return None
        r = _rational_root(-q, k)
        return -r if r is not None else None
    a, b = _iroot(q.numerator, k), _iroot(q.denominator, k)
    return Fraction(a, b) if a is not None and b is not None else None


class Undefined(ValueError):
    """Division by zero and similar: the answer has no value."""


def rational(node) -> Fraction | None:
    """Exact value of a rational-valued tree; None when the value is not (evidently) rational.
    Raises GuardError before computing anything too large, Undefined for 1/0. The bits of all
    intermediate results together are capped at MAX_WORK_BITS, so 250 copies of `10000!`
    cost a few milliseconds before the refusal, not seconds."""
    return _rational(node, _Work())


class _Work:
    """Work budget of one evaluation, plus a memo of subtree values (keyed by id: the tree is
    alive for the whole evaluation) so guard checks never recompute a costly subtree."""
    __slots__ = ("spent", "memo")

    def __init__(self) -> None:
        self.spent = 0
        self.memo: dict[int, Fraction | None] = {}


def _spend(budget: _Work, bits: int) -> None:
    budget.spent += bits
    if budget.spent > MAX_WORK_BITS:
        raise GuardError(f"more than {MAX_WORK_BITS} bits of exact arithmetic")


def _rational(node, budget: _Work) -> Fraction | None:
    key = id(node)
    if key in budget.memo:
        return budget.memo[key]
    value = _rational_uncached(node, budget)
    budget.memo[key] = value
    return value


def _rational_uncached(node, budget: _Work) -> Fraction | None:
    kind = node[0]
    if kind == "num":
        return node[1]
    if kind == "neg":
        v = _rational(node[1], budget)
        return None if v is None else -v
    if kind in ("add", "mul"):
        vals = [_rational(c, budget) for c in node[1]]
        if any(v is None for v in vals):
            return None
        acc = Fraction(0) if kind == "add" else Fraction(1)
        for v in vals:
            acc = _check(acc + v if kind == "add" else acc * v)
            _spend(budget, _bits(acc))
        return acc
    if kind == "div":
        a, b = _rational(node[1], budget), _rational(node[2], budget)
        if a is None or b is None:
            return None
        if b == 0:
            raise Undefined("division by zero")
        _spend(budget, _bits(a) + _bits(b))
        return _check(a / b)
    if kind == "pct":
        v = _rational(node[1], budget)
        return None if v is None else v / 100
    if kind == "pow":
        b = _rational(node[1], budget)
        e = _rational(node[2], budget)
        if b is None or e is None:
            return None
        if abs(e.numerator) > MAX_EXPONENT and b not in (0, 1, -1):
            raise GuardError(f"exponent larger than {MAX_EXPONENT}")
        if b == 0 and e <= 0:
            raise Undefined("0 to a non-positive power")
        if e.denominator != 1:
            _spend(budget, 4 * _bits(b))
            r = _rational_root(b, e.denominator)
            if r is None:
                return None
            b, e = r, Fraction(e.numerator)
        n = int(e)
        if b in (0, 1):
            return b
        if b == -1:
            return Fraction(-1 if n % 2 else 1)
        if _bits(b) * abs(n) > MAX_BITS:
            raise GuardError(f"power larger than {MAX_BITS} bits")
        _spend(budget, _bits(b) * abs(n))
        return b ** n
    if kind == "fact":
        v = _rational(node[1], budget)
        if v is None:
            return None
        if v.denominator != 1 or v < 0:
            return None
        if v > MAX_FACTORIAL:
            raise GuardError(f"factorial of more than {MAX_FACTORIAL}")
        n = int(v)
        _spend(budget, int(n * max(1.0, math.log2(max(n, 2)) - 1.44)) + 1)   # ~ bits of n!
        return Fraction(math.factorial(n))
    if kind == "func":
        name, args = node[1], node[2]
        if name in ("sqrt", "root", "abs", "floor", "ceil", "binom"):
            vals = [_rational(a, budget) for a in args]
            if any(v is None for v in vals):
                return None
            if name == "abs":
                return abs(vals[0])
            if name == "floor":
                return Fraction(math.floor(vals[0]))
            if name == "ceil":
                return Fraction(math.ceil(vals[0]))
            if name in ("sqrt", "root"):
                _spend(budget, 4 * _bits(vals[0]))          # Newton steps on numbers this size
            if name == "sqrt":
                return _rational_root(vals[0], 2)
            if name == "root":
                k = vals[1]
                if k.denominator != 1:
                    return None
                return _rational_root(vals[0], int(k))
            if name == "binom":
                n, k = vals
                if n.denominator != 1 or k.denominator != 1 or n < 0:
                    return None
                if n > MAX_FACTORIAL:
                    raise GuardError(f"binomial of more than {MAX_FACTORIAL}")
                _spend(budget, int(n) + 1)                           # C(n, k) < 2^n
                return Fraction(math.comb(int(n), int(k))) if k >= 0 else Fraction(0)
        return None
    return None


def has_decimal(node) -> bool:
    """Whether the tree contains a written decimal (the writer's approximation)."""
    if node[0] == "num":
        return node[2] is not None
    return any(has_decimal(c) for c in _children(node))


def _children(node):
    kind = node[0]
    if kind in ("num", "sym", "const", "text"):
        return ()
    if kind in ("add", "mul", "list", "set", "union", "ratio"):
        return node[1]
    if kind in ("neg", "fact", "pct"):
        return (node[1],)
    if kind in ("div", "pow"):
        return (node[1], node[2])
    if kind == "func":
        return node[2]
    if kind == "tuple":
        return node[3]
    if kind == "matrix":
        return tuple(x for row in node[1] for x in row)
    if kind == "rel":
        return (node[2], node[3])
    return ()


def check_guards(node, budget: _Work | None = None) -> None:
    """Size bounds for a tree about to be built in sympy: every power's exponent and every
    factorial's or binomial's argument that is rational must be small, and rational subtrees must
    fit MAX_BITS (rational() raises GuardError otherwise). Symbolic arguments are fine: sympy keeps
    `x!` unevaluated and the probes evaluate it through the gamma function."""
    if budget is None:
        budget = _Work()        # one work budget and memo for the whole tree
    kind = node[0]
    radicands = ()
    if kind == "pow":
        e = _rational(node[2], budget)
        if e is not None and abs(e) > MAX_EXPONENT:
            raise GuardError(f"exponent larger than {MAX_EXPONENT}")
        if e is not None and abs(e) > 1000 and _contains(node[1], "sym"):
            raise GuardError("symbolic power with exponent above 1000 (expansion blow-up)")
        if e is not None and e.denominator != 1:
            radicands = (node[1],)
    if kind == "fact":
        v = _rational(node[1], budget)
        if v is not None and (abs(v) > MAX_FACTORIAL or _bits(v) > 64):
            raise GuardError(f"factorial of more than {MAX_FACTORIAL}")
    if kind == "func":
        radicands = node[2]
        if node[1] == "binom":
            for a in node[2]:
                v = _rational(a, budget)
                if v is not None and (abs(v) > MAX_FACTORIAL or _bits(v) > 64):
                    raise GuardError(f"binomial of more than {MAX_FACTORIAL}")
    for a in radicands:
        # sympy factors big integers under radicals and reduces big trig arguments: keep the
        # numbers it sees small (exact perfect powers were already settled by rational()).
        v = _rational(a, budget)
        if v is not None and _bits(v) > MAX_SYMPY_CONST_BITS:
            raise GuardError(f"a number above {MAX_SYMPY_CONST_BITS} bits inside a function or radical")
    for c in _children(node):
        check_guards(c, budget)


def _contains(node, kind: str) -> bool:
    return node[0] == kind or any(_contains(c, kind) for c in _children(node))


def has_symbols(node) -> bool:
    return _contains(node, "sym")


def to_json(node):
    """Wire format for the worker: nested lists, exact numbers as 'p/q' strings."""
    kind = node[0]
    if kind == "num":
        return ["num", f"{node[1].numerator}/{node[1].denominator}"]
    if kind in ("sym", "const", "text"):
        return [kind, node[1]]
    if kind in ("add", "mul"):
        return [kind, [to_json(c) for c in node[1]]]
    if kind in ("neg", "fact", "pct"):
        return [kind, to_json(node[1])]
    if kind in ("div", "pow"):
        return [kind, to_json(node[1]), to_json(node[2])]
    if kind == "func":
        return ["func", node[1], [to_json(a) for a in node[2]]]
    raise ValueError(f"{kind} is not a scalar expression")


_PREC = {"add": 1, "neg": 2, "mul": 3, "div": 3, "pow": 5, "fact": 6}


def describe(node) -> str:
    """A readable, unambiguous rendering of an AST (for explain())."""
    kind = node[0]
    if kind == "num":
        q = node[1]
        if node[2] is not None:
            return _decimal_str(q)
        return str(q.numerator) if q.denominator == 1 else f"{q.numerator}/{q.denominator}"
    if kind == "sym":
        return node[1]
    if kind == "const":
        return {"pi": "pi", "E": "e", "I": "i", "oo": "oo"}[node[1]]
    if kind == "text":
        return repr(node[1])
    if kind == "add":
        out = describe(node[1][0])
        for c in node[1][1:]:
            out += " - " + _paren(c[1], 2) if c[0] == "neg" else " + " + _paren(c, 1)
        return out
    if kind == "neg":
        return "-" + _paren(node[1], 3)
    if kind == "mul":
        return "*".join(_paren(c, 3) for c in node[1])
    if kind == "div":
        return f"{_paren(node[1], 3)}/{_paren(node[2], 4)}"
    if kind == "pow":
        return f"{_paren(node[1], 6)}^{_paren(node[2], 5)}"
    if kind == "fact":
        return f"{_paren(node[1], 7)}!"
    if kind == "pct":
        return f"{describe(node[1])}%"
    if kind == "func":
        return f"{node[1]}({', '.join(describe(a) for a in node[2])})"
    if kind == "tuple":
        return f"{node[1]}{', '.join(describe(e) for e in node[3])}{node[2]}"
    if kind == "set":
        return "{" + ", ".join(describe(e) for e in node[1]) + "}"
    if kind == "list":
        return ", ".join(describe(e) for e in node[1])
    if kind == "union":
        return " U ".join(describe(e) for e in node[1])
    if kind == "ratio":
        return ":".join(describe(e) for e in node[1])
    if kind == "matrix":
        return "[" + "; ".join(", ".join(describe(x) for x in row) for row in node[1]) + "]"
    if kind == "rel":
        return f"{describe(node[2])} {node[1]} {describe(node[3])}"
    return repr(node)


def _paren(node, prec: int) -> str:
    s = describe(node)
    return f"({s})" if _PREC.get(node[0], 9) < prec else s


def _decimal_str(q: Fraction) -> str:
    if q.denominator == 1:
        return f"{q.numerator}.0"
    d = q.denominator
    twos = fives = 0
    while d % 2 == 0:
        d //= 2
        twos += 1
    while d % 5 == 0:
        d //= 5
        fives += 1
    if d == 1 and max(twos, fives) <= 60:
        k = max(twos, fives)
        digits = str(abs(q.numerator) * 10 ** k // q.denominator).rjust(k + 1, "0")
        sign = "-" if q < 0 else ""
        return f"{sign}{digits[:-k]}.{digits[-k:]}"
    return f"{q.numerator}/{q.denominator}"
