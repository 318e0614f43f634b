"""Parallel reward computation (rewards/parallel.py): the same numbers as the sequential
combination, and a term that raises, hangs or misbehaves costs only its own values, counted."""

import subprocess
import sys
import threading
import time

import pytest

from data.build import BuildConfig, Size, build_task_splits
from rewards import combine
from rewards.parallel import ParallelReward

RELEASE = threading.Event()  # lets the deliberately stuck calls finish once a test is done


@pytest.fixture(autouse=True)
def _release_stuck_calls():
    RELEASE.clear()
    yield
    RELEASE.set()


@pytest.fixture(scope="module")
def batch():
    """Two samples (the reference solution, a wrong answer) per prompt, over real rows of every task."""
    size = Size(sft=0, rl=0, eval_per_cell=2, pretrain_problems=0, pretrain_facts=0, pretrain_chat=0,
                nonreasoning=0, preferences=0)
    rows = [r for r in build_task_splits(BuildConfig(out="unused", seed=4), size)[0]["eval"] if r["difficulty"] == 2]
    prompts, completions, columns = [], [], {k: [] for k in ("answer", "task", "tests", "entry_point", "numbers", "target")}
    for r in rows:
        for completion in (r["solution"], "<think>no idea</think> <answer>0</answer>"):
            prompts.append(r["prompt"])
            completions.append(completion)
            for k in columns:
                columns[k].append(r[k] or None if k == "entry_point" else r[k])
    return prompts, completions, columns


def boom(prompts, completions, **columns):
    if any("no idea" in c for c in completions) and any("乘" in p or "*" in p for p in prompts):
        raise RuntimeError("reward model crashed")
    return [0.5] * len(completions)


def stuck(prompts, completions, **columns):
    RELEASE.wait(30)
    return [0.25] * len(completions)


def test_same_values_as_the_sequential_combination(batch):
    prompts, completions, columns = batch
    weights = {"task_accuracy": 1.0, "format": 0.5, "kimi_length": 0.2}
    totals, breakdown = combine(weights).with_breakdown(prompts, completions, **columns)
    out = ParallelReward(combine(weights), max_workers=3, timeout_s=60)(prompts, completions, **columns)
    assert out.breakdown == breakdown and out.totals == totals
    assert set(out.n_errors.values()) == {0} and set(out.n_timeouts.values()) == {0} and out.errors == {}
    assert breakdown["task_accuracy"][::2] == [1.0] * (len(prompts) // 2)  # the references are right
    assert any(v not in (0.0, None) for v in breakdown["kimi_length"])  # groups kept whole


def test_a_raising_term_loses_only_its_chunks(batch):
    prompts, completions, columns = batch
    reward = ParallelReward(combine({"task_accuracy": 1.0, boom: 1.0}), max_workers=len(prompts), timeout_s=60)
    out = reward(prompts, completions, **columns)
    failed = [i for i, v in enumerate(out.breakdown["boom"]) if v is None]
    # One chunk per prompt group: exactly the groups whose prompt has a product lost the term.
    assert failed and failed == [i for i, p in enumerate(prompts) if "乘" in p or "*" in p]
    assert out.n_errors == {"task_accuracy": 0, "boom": len(failed)}
    assert out.errors == {"boom": "RuntimeError: reward model crashed"}
    assert out.breakdown["task_accuracy"] == combine({"task_accuracy": 1.0}).with_breakdown(
        prompts, completions, **columns)[1]["task_accuracy"]
    for i in failed:  # the failed term is skipped in the total, like a term that does not apply
        assert out.totals[i] == out.breakdown["task_accuracy"][i]


def test_a_stuck_term_times_out_without_holding_the_batch(batch):
    prompts, completions, columns = batch
    # Two workers, both stuck in the `stuck` calls while the `format` calls wait in the queue:
    # fresh threads take over when the stuck calls are given up.
    reward = ParallelReward(combine({stuck: 1.0, "format": 1.0, "task_accuracy": 1.0}), max_workers=2, timeout_s=1.0)
    start = time.monotonic()
    out = reward(prompts, completions, **columns)
    assert time.monotonic() - start < 10
    assert out.n_timeouts == {"task_accuracy": 0, "stuck": len(prompts), "format": 0}
    assert out.n_errors == {"task_accuracy": 0, "stuck": 0, "format": 0}
    assert out.breakdown["stuck"] == [None] * len(prompts)
    assert out.errors == {"stuck": "timed out after 1 s"}
    assert None not in out.breakdown["format"] and None not in out.breakdown["task_accuracy"]
    assert out.metrics()["reward/stuck/n_timeouts"] == len(prompts)
    # The next batch is not held by the threads still finishing the last one.
    RELEASE.set()
    again = reward(prompts, completions, **columns)
    assert again.n_timeouts["stuck"] == 0 and again.breakdown["stuck"] == [0.25] * len(prompts)


def test_a_term_returning_the_wrong_number_of_values_is_an_error(batch):
    prompts, completions, columns = batch

    def short(prompts, completions, **columns):
        return [1.0]

    out = ParallelReward(combine({short: 1.0, "format": 1.0}), max_workers=2)(prompts, completions, **columns)
    assert out.n_errors["short"] == len(prompts) and "returned 1 values" in out.errors["short"]
    assert out.totals == out.breakdown["format"]


def test_parallel_rewards_import_nothing_from_the_trainer():
    code = ("import sys, rewards.parallel; bad = [m for m in ('rlpipe', 'torch', 'vllm') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
