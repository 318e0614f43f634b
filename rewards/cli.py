"""`rlpipe reward ...`: run one grader by hand and print its verdict and why.

    rlpipe reward math --pred P --gold G [--extract [--broad]] [--ordered]
                                                          math_equal verdict with the checker's reasons
    rlpipe reward code --file solution.py --tests T [--entry-point f] [--timeout 5]
                                                          T: Python test code defining check(candidate),
                                                          or a .json list of {"input", "output"} cases
    rlpipe reward format --text T [--prefilled]           strict format verdict + tag-count score
    rlpipe reward language --text T [--language en]       language share, foreign words, mixing flag
    rlpipe reward countdown --text T --numbers 1 2 3 --target 6 [--use-all]

`--text -` reads the text from stdin; `--text-file F` reads it from a file.
Exit status: 0 when the verdict is a pass (equal / all tests passed / format ok / not mixed /
target reached), 1 when it is a fail, 2 for a usage error. `--json` prints the result as JSON.
Imports nothing from `rlpipe`: graders can be debugged without torch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any, Sequence


class UsageError(Exception):
    """A mistake on the command line or in an input file; printed as one line, exit status 2."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlpipe reward", description="Debug a reward grader by hand.")
    sub = parser.add_subparsers(dest="grader", required=True)

    math_p = sub.add_parser("math", help="is a predicted answer equal to the gold answer?")
    math_p.add_argument("--pred", required=True, help="predicted answer (or a whole response with --extract)")
    math_p.add_argument("--gold", required=True, help="gold answer")
    math_p.add_argument("--extract", action="store_true",
                        help="treat --pred as a full response and extract its final answer first")
    math_p.add_argument("--broad", action="store_true",
                        help="with --extract: the broad rules (Final Answer:, ####, math spans, last number)")
    math_p.add_argument("--ordered", action="store_true", help="bare lists must match in order")

    code_p = sub.add_parser("code", help="run a solution against tests in the sandbox")
    code_p.add_argument("--file", required=True, help="the candidate solution (.py)")
    code_p.add_argument("--tests", required=True,
                        help="Python test code defining check(candidate), or a .json list of {input, output}")
    code_p.add_argument("--entry-point", default=None, help="function name passed to check(candidate)")
    code_p.add_argument("--timeout", type=float, default=5.0, help="seconds per run (default 5)")

    for name, help_ in (("format", "check the <think>/<answer> format"),
                        ("language", "language consistency of the chain of thought"),
                        ("countdown", "check a countdown answer")):
        p = sub.add_parser(name, help=help_)
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument("--text", help="the response text ('-' reads stdin)")
        src.add_argument("--text-file", help="a file holding the response text")
        if name == "format":
            p.add_argument("--prefilled", action="store_true",
                           help="the prompt template already opened <think>")
        if name == "language":
            p.add_argument("--language", default=None, help="target language code (default: detect)")
            p.add_argument("--threshold", type=float, default=None, help="mixing threshold")
        if name == "countdown":
            p.add_argument("--numbers", type=int, nargs="+", required=True, help="the given numbers")
            p.add_argument("--target", type=int, required=True, help="the target")
            p.add_argument("--use-all", action="store_true", help="every number must be used exactly once")

    for p in sub.choices.values():
        p.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _read_text(args: argparse.Namespace) -> str:
    if args.text_file:
        return _read_file(args.text_file, "--text-file")
    return sys.stdin.read() if args.text == "-" else args.text


def _read_file(path: str, flag: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot read the file ({err.strerror}); pass an existing file")
    except UnicodeDecodeError:
        raise UsageError(f"{flag} {path}: not UTF-8 text; save it as UTF-8")


def _as_dict(obj: Any) -> dict[str, Any]:
    if isinstance(obj, dict):
        return dict(obj)
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if hasattr(obj, "_asdict"):
        return dict(obj._asdict())
    return dict(vars(obj))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if dataclasses.is_dataclass(value) or hasattr(value, "_asdict"):
        return _jsonable(_as_dict(value))
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _print(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(_jsonable(result), ensure_ascii=False, indent=2))
        return
    for key, value in result.items():
        if isinstance(value, (list, tuple)) and value:
            # One line per item: per-test reasons of the code grader, foreign words, ...
            print(f"{key}:")
            for i, item in enumerate(value, 1):
                shown = item if isinstance(item, str) else json.dumps(_jsonable(item), ensure_ascii=False)
                print(f"  [{i}] {shown}")
        elif isinstance(value, dict):
            print(f"{key}: {json.dumps(_jsonable(value), ensure_ascii=False)}")
        else:
            print(f"{key}: {value}")


def _math(args: argparse.Namespace) -> tuple[bool, dict[str, Any]]:
    from rewards import math as math_reward

    pred = args.pred
    result: dict[str, Any] = {}
    if args.extract:
        pred = math_reward.extract_answer(args.pred, broad=args.broad)
        result["extracted"] = pred
        if pred is None:
            result.update(verdict="NOT EQUAL", why="no final answer found in --pred")
            return False, result
    explanation = _as_dict(math_reward.explain(pred, args.gold, ordered=args.ordered))
    # explain() carries the verdict it reasoned about; asking math_equal again would grade twice.
    equal = bool(explanation["equal"]) if "equal" in explanation else math_reward.math_equal(
        pred, args.gold, ordered=args.ordered)
    result["verdict"] = "EQUAL" if equal else "NOT EQUAL"
    result.update({k: v for k, v in explanation.items() if k not in ("verdict", "equal")})
    return equal, result


def _code(args: argparse.Namespace) -> tuple[bool, dict[str, Any]]:
    code = _read_file(args.file, "--file")
    tests_src = _read_file(args.tests, "--tests")
    tests: Any = tests_src
    if args.tests.endswith(".json"):
        try:
            tests = json.loads(tests_src)
        except json.JSONDecodeError as err:
            raise UsageError(f"--tests {args.tests}: invalid JSON at line {err.lineno} ({err.msg})")
        if not isinstance(tests, list) or not all(
            isinstance(t, dict) and "input" in t and "output" in t for t in tests
        ):
            raise UsageError(
                f"--tests {args.tests}: expected a JSON list of {{\"input\": ..., \"output\": ...}} objects"
            )
    elif "def check(" in tests_src and not args.entry_point:
        raise UsageError(
            f"--tests {args.tests}: check(candidate) tests need the function's name; pass --entry-point NAME"
        )
    from rewards.code import check_solution

    outcome = check_solution(code, tests, entry_point=args.entry_point, timeout_s=args.timeout)
    fields = _as_dict(outcome)
    passed, total = int(fields.get("passed", 0)), int(fields.get("total", 0))
    ok = total > 0 and passed == total
    result: dict[str, Any] = {"verdict": "PASS" if ok else "FAIL", "passed": f"{passed}/{total}"}
    result.update({k: v for k, v in fields.items() if k not in ("passed", "total")})
    return ok, result


def _format(args: argparse.Namespace) -> tuple[bool, dict[str, Any]]:
    from rewards.format import check_format, tag_count_score

    text = _read_text(args)
    verdict = check_format(text, think_prefilled=args.prefilled)
    return verdict.ok, {
        "verdict": "OK" if verdict.ok else "BAD FORMAT",
        "why": verdict.reason,
        "format_reward": 1.0 if verdict.ok else 0.0,
        "tag_count_reward": tag_count_score(text, think_prefilled=args.prefilled),
    }


def _language(args: argparse.Namespace) -> tuple[bool, dict[str, Any]]:
    from rewards.format import think_text
    from rewards.language import count_language, detect_language, is_language_mixed, normalize_language

    text = _read_text(args)
    cot = think_text(text)
    try:
        language = normalize_language(args.language) if args.language else detect_language(cot)
    except ValueError as err:
        raise UsageError(f"--language: {err}")
    count = count_language(cot, language)
    kwargs = {} if args.threshold is None else {"threshold": args.threshold}
    mixed = is_language_mixed(text, language, **kwargs)
    return not mixed, {
        "language": language + ("" if args.language else " (detected)"),
        "language_reward": count.share,
        "target_words": count.target,
        "foreign_words": count.foreign,
        "neutral_tokens": count.neutral,
        "foreign": count.foreign_words,
        "mixed": mixed,
    }


def _countdown(args: argparse.Namespace) -> tuple[bool, dict[str, Any]]:
    from rewards.countdown import check_countdown
    from rewards.format import answer_text

    text = _read_text(args)
    answer = answer_text(text)
    expression = answer if answer is not None else text
    verdict = check_countdown(expression, args.numbers, args.target, use_all=args.use_all)
    return verdict.ok, {
        "verdict": "OK" if verdict.ok else "WRONG",
        "expression": expression.strip(),
        "why": verdict.reason,
        "value": None if verdict.value is None else str(verdict.value),
    }


_GRADERS = {"math": _math, "code": _code, "format": _format, "language": _language, "countdown": _countdown}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `rlpipe reward`; returns the exit status (0 pass, 1 fail, 2 usage error)."""
    parser = _parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:  # argparse exits on --help (0) and on usage errors (2)
        return int(exc.code or 0)
    try:
        ok, result = _GRADERS[args.grader](args)
    except UsageError as err:
        print(f"rlpipe reward {args.grader}: {err}", file=sys.stderr)
        return 2
    _print(result, args.json)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
