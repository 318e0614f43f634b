"""Benchmark: our math checker (`rewards.math.math_equal`) vs Math-Verify on the same labelled pairs.

What this script does:
- Loads every labelled pair of tests/data/math_cases*.jsonl that has `pred`, `gold`, `equal`.
  A row with `extract: true` holds a whole response as `pred`: ours reads it with
  `extract_answer(pred, broad=True)` (the dataset/evaluation path), Math-Verify with its own
  `parse(pred)` on the raw text. A row with `ordered: true` asks ours for an ordered list
  (`math_equal(..., ordered=True)`); Math-Verify has no such option and gets the pair as is.
- Runs each checker in its own child process (spawned), pair by pair, timing each call inside
  the child with `time.perf_counter` (so process start-up and pipe traffic are not counted).
  A watchdog in this process kills a child stuck on one pair for more than `--hang-s` seconds
  (Math-Verify's SIGALRM timeout cannot stop C-level big-integer work), records that pair as a
  wrong verdict with latency = the cap, and resumes with the next pair in a fresh child.
- Reports accuracy per category (the `tag` of tests/data/math_cases_forms.jsonl: extraction,
  numbers, relations, intervals, sets, matrices, latex, precision; other files count as `core`),
  accuracy, false positives (said equal, label not equal), false negatives, p50/p99
  latency (all pairs, and "ordinary" pairs: integers, decimals, fractions, mixed numbers,
  thousands separators, percentages, scientific notation), pairs/s (pairs / summed latency,
  sequential, one core; also without the `security` pairs, where Math-Verify mostly waits for its
  own 5 s timeouts -- the 20x target is judged on that figure) and hangs. Prints a Markdown table, writes bench/results/rewards_math.json.

Math-Verify is called as its README shows for final answers: `verify(parse(gold), parse(pred))`,
each side wrapped in `\\boxed{}` so its highest-priority extraction reads the bare answer (a whole
response, `extract: true`, goes to `parse` unwrapped).

Usage: .venv/bin/python bench/bench_rewards_math.py [--hang-s 30] [--repeat 1]
"""
from __future__ import annotations

import argparse
import glob
import json
import multiprocessing as mp
import os
import pathlib
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
ORDINARY_TAGS = {"integer", "decimal", "fraction", "mixed", "thousands", "percent", "scientific"}
FORM_CATEGORIES = ("extraction", "numbers", "relations", "intervals", "sets", "matrices", "latex", "precision")


def load_pairs() -> list[dict]:
    pairs = []
    for path in sorted(glob.glob(str(ROOT / "tests" / "data" / "math_cases*.jsonl"))):
        for line in open(path, encoding="utf-8"):
            if line.strip():
                row = json.loads(line)
                if {"pred", "gold", "equal"} <= row.keys():
                    row["file"] = os.path.basename(path)
                    pairs.append(row)
    return pairs


def category(row: dict) -> str:
    return row.get("tag") if row.get("tag") in FORM_CATEGORIES else "core"


def _make_checker(name: str):
    """check(pred, gold, extract, ordered) -> bool for one checker."""
    if name == "ours":
        sys.path.insert(0, str(ROOT))
        from rewards.math import extract_answer, math_equal

        def ours_equal(pred: str, gold: str, extract: bool = False, ordered: bool = False) -> bool:
            if extract:
                pred = extract_answer(pred, broad=True)
            return math_equal(pred, gold, ordered=ordered)
        return ours_equal
    if name == "math-verify":
        import logging
        logging.disable(logging.CRITICAL)     # it logs every timeout / parse failure
        from math_verify import parse, verify

        def mv_equal(pred: str, gold: str, extract: bool = False, ordered: bool = False) -> bool:
            try:
                pred_parsed = parse(pred) if extract else parse("\\boxed{" + pred + "}")
                return bool(verify(parse("\\boxed{" + gold + "}"), pred_parsed))
            except BaseException:  # its own errors count as "not equal", as ours do
                return False
        return mv_equal
    raise ValueError(name)


def _child(name: str, pairs: list[tuple[str, str, bool, bool]], start: int, repeat: int, conn) -> None:
    check = _make_checker(name)
    check("1", "1")                       # import-time work and worker start-up are not timed
    check("x^2", "x*x")
    check("\\infty", "-\\infty")       # starts the sympy worker (infinities are its to decide)
    for i in range(start, len(pairs)):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            verdict = check(*pairs[i])
            times.append(time.perf_counter() - t0)
        conn.send((i, bool(verdict), min(times)))
    conn.send(None)


def run_checker(name: str, pairs: list[dict], hang_s: float, repeat: int) -> list[tuple[bool | None, float]]:
    """[(verdict or None for a hang, seconds)] per pair."""
    ctx = mp.get_context("spawn")
    plain = [(p["pred"], p["gold"], bool(p.get("extract")), bool(p.get("ordered"))) for p in pairs]
    results: list[tuple[bool | None, float] | None] = [None] * len(pairs)
    start = 0
    while start < len(pairs):
        parent, child = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(name, plain, start, repeat, child), daemon=True)
        proc.start()
        child.close()
        budget = 300.0                     # the first message waits for imports and warm-up
        while True:
            if not parent.poll(budget):
                proc.kill()
                proc.join()
                results[start] = (None, hang_s)
                print(f"  [{name}] pair {start} hung > {hang_s}s: {plain[start][0][:60]!r}", file=sys.stderr)
                start += 1
                break
            try:
                msg = parent.recv()
            except EOFError:               # the child died (e.g. out of memory) on this pair
                proc.join()
                results[start] = (None, hang_s)
                start += 1
                break
            if msg is None:
                proc.join()
                start = len(pairs)
                break
            i, verdict, seconds = msg
            results[i] = (verdict, seconds)
            start = i + 1
            budget = hang_s * repeat
    return results  # type: ignore[return-value]


def summarise(pairs: list[dict], results) -> dict:
    n = len(pairs)
    correct = fp = fn = hangs = 0
    lat, lat_ord, lat_plain = [], [], []
    for p, (verdict, seconds) in zip(pairs, results):
        lat.append(seconds)
        if p.get("tag") != "security":
            lat_plain.append(seconds)
        if p.get("tag") in ORDINARY_TAGS:
            lat_ord.append(seconds)
        if verdict is None:
            hangs += 1
            verdict = False if p["equal"] else True   # a hang is scored as a wrong verdict
        if verdict == p["equal"]:
            correct += 1
        elif verdict:
            fp += 1
        else:
            fn += 1
    q = lambda xs, f: sorted(xs)[min(len(xs) - 1, int(f * len(xs)))] if xs else float("nan")
    by_file: dict[str, list[int]] = {}
    by_category: dict[str, dict[str, int]] = {}
    for p, (verdict, _) in zip(pairs, results):
        hit = by_file.setdefault(p["file"], [0, 0])
        hit[0] += verdict == p["equal"]
        hit[1] += 1
        cat = by_category.setdefault(category(p), {"pairs": 0, "traps": 0, "correct": 0, "fp": 0, "fn": 0})
        cat["pairs"] += 1
        cat["traps"] += not p["equal"]
        cat["correct"] += verdict == p["equal"]
        cat["fp"] += bool(verdict) and not p["equal"]
        cat["fn"] += (not verdict) and p["equal"]
    return {
        "accuracy_by_file": {f: round(c / n_f, 4) for f, (c, n_f) in by_file.items()},
        "by_category": {c: {**v, "accuracy": round(v["correct"] / v["pairs"], 4)} for c, v in by_category.items()},
        "pairs": n, "accuracy": correct / n, "false_positives": fp, "false_negatives": fn,
        "hangs": hangs, "p50_ms": 1e3 * statistics.median(lat), "p99_ms": 1e3 * q(lat, 0.99),
        "p50_ordinary_ms": 1e3 * statistics.median(lat_ord), "p99_ordinary_ms": 1e3 * q(lat_ord, 0.99),
        "max_ms": 1e3 * max(lat), "pairs_per_s": n / sum(lat),
        # without the adversarial inputs (where Math-Verify spends its 5 s timeouts)
        "pairs_per_s_non_security": len(lat_plain) / sum(lat_plain),
        "pairs_per_s_ordinary": len(lat_ord) / sum(lat_ord),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hang-s", type=float, default=30.0, help="per-pair cap before a child is killed")
    ap.add_argument("--repeat", type=int, default=1,
                    help="timed calls per pair, minimum kept (above 1, sympy caches flatter both)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "rewards_math.json"))
    args = ap.parse_args(argv)
    pairs = load_pairs()
    report = {"pairs": len(pairs), "ordinary_tags": sorted(ORDINARY_TAGS),
              "checkers": {}, "disagreements": {}}
    for name in ("ours", "math-verify"):
        t0 = time.time()
        results = run_checker(name, pairs, args.hang_s, args.repeat)
        report["checkers"][name] = summarise(pairs, results)
        report["checkers"][name]["wall_s"] = time.time() - t0
        report["disagreements"][name] = [
            {"pred": p["pred"], "gold": p["gold"], "label": p["equal"], "verdict": v, "tag": p.get("tag"),
             "extract": bool(p.get("extract")), "ordered": bool(p.get("ordered"))}
            for p, (v, _) in zip(pairs, results) if v != p["equal"]]
    ours, mv = report["checkers"]["ours"], report["checkers"]["math-verify"]
    report["speedup_pairs_per_s"] = ours["pairs_per_s"] / mv["pairs_per_s"]
    report["speedup_non_security"] = ours["pairs_per_s_non_security"] / mv["pairs_per_s_non_security"]
    report["speedup_ordinary"] = ours["pairs_per_s_ordinary"] / mv["pairs_per_s_ordinary"]
    report["targets"] = {
        "accuracy_ge_math_verify": ours["accuracy"] >= mv["accuracy"],
        "fewer_false_positives": ours["false_positives"] < mv["false_positives"],
        "p99_ordinary_le_50ms": ours["p99_ordinary_ms"] <= 50.0,
        "throughput_ge_20x": report["speedup_non_security"] >= 20.0,
    }
    cols = ["accuracy", "false_positives", "false_negatives", "hangs", "p50_ms", "p99_ms",
            "p99_ordinary_ms", "max_ms", "pairs_per_s", "pairs_per_s_non_security"]
    print(f"\nMath checker on {len(pairs)} labelled pairs (tests/data/math_cases*.jsonl)\n")
    print("| checker | " + " | ".join(cols) + " |")
    print("|" + "---|" * (len(cols) + 1))
    for name, s in report["checkers"].items():
        cells = [f"{s[c]:.3f}" if c == "accuracy" else f"{s[c]:.2f}" if isinstance(s[c], float) else str(s[c])
                 for c in cols]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\naccuracy per category (pairs, traps = pairs labelled unequal; FP / FN):\n")
    print("| category | pairs | traps | ours acc | ours FP | ours FN | Math-Verify acc | MV FP | MV FN |")
    print("|---|---|---|---|---|---|---|---|---|")
    for cat in FORM_CATEGORIES + ("core",):
        o, m = ours["by_category"].get(cat), mv["by_category"].get(cat)
        if o:
            print(f"| {cat} | {o['pairs']} | {o['traps']} | {o['accuracy']:.3f} | {o['fp']} | {o['fn']} | "
                  f"{m['accuracy']:.3f} | {m['fp']} | {m['fn']} |")
    print("\naccuracy by case file (the held-out files were labelled before either checker ran on them):")
    for f in ours["accuracy_by_file"]:
        print(f"  {f}: ours {ours['accuracy_by_file'][f]:.3f}, math-verify {mv['accuracy_by_file'][f]:.3f}")
    print(f"\nthroughput ratio (ours / Math-Verify): all pairs {report['speedup_pairs_per_s']:.1f}x, "
          f"without security inputs {report['speedup_non_security']:.1f}x, "
          f"ordinary answers {report['speedup_ordinary']:.1f}x")
    print("targets: " + ", ".join(f"{k}={'met' if v else 'NOT met'}" for k, v in report["targets"].items()))
    for name in ("ours", "math-verify"):
        wrong = report["disagreements"][name]
        print(f"\n{name}: {len(wrong)} wrong verdicts" + (":" if wrong else ""))
        for w in wrong[:80]:
            print(f"  [{w['tag']}] {w['pred']!r} vs {w['gold']!r}: label {w['label']}, said {w['verdict']}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
