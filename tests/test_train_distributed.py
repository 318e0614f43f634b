"""2 CPU processes under `accelerate launch` (gloo DDP) train like 1 process with the same global batch."""

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rlpipe.logging import read_metrics

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "_train_driver.py"
STEPS = 10


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_match_one_process_with_same_global_batch(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = [f"train.max_steps={STEPS}", "train.micro_batch_size=4", "train.save_every=0"]
    # 1 process x 2 accumulation steps == 2 processes x 1: the same 8 rows per optimizer step.
    single = subprocess.run([sys.executable, str(DRIVER), str(one), *common, "train.grad_accum=2"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-2000:]
    launcher = [sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", str(ROOT / "stages" / "accelerate" / "ddp_cpu.yaml"),
                "--num_processes", "2", "--main_process_port", str(free_port())]
    multi = subprocess.run([*launcher, str(DRIVER), str(two), *common, "train.grad_accum=1"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert multi.returncode == 0, multi.stderr[-3000:]

    # Really two ranks: each wrote its RNG state into the final checkpoint.
    rng = sorted(p.name for p in (two / "checkpoints" / f"step-{STEPS:06d}" / "rng").iterdir())
    assert rng == ["rank0.pt", "rank1.pt"]

    a = read_metrics(one / "metrics.jsonl")
    b = read_metrics(two / "metrics.jsonl")
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, STEPS + 1))
    assert a[-1]["loss"] < a[0]["loss"] - 0.5, "the run did not learn, so the comparison says little"
    for ra, rb in zip(a, b):
        for key in ("loss", "main_loss", "mtp_loss", "balance_loss", "grad_norm"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), (ra["step"], key)
        # Expert loads are all-reduced over ranks before the bias update, so balancing sees the same step.
        assert rb["expert_load_max_mean/1"] == pytest.approx(ra["expert_load_max_mean/1"], rel=1e-4)
        assert rb["trained_tokens"] == ra["trained_tokens"]
