"""Checkpoints: a SIGKILLed run resumes to the same metrics as an uninterrupted one; bad checkpoints are skipped."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlpipe.logging import read_metrics
from rlpipe.train.checkpoint import CheckpointError, latest_checkpoint, list_checkpoints, verify_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DRIVER = ROOT / "tests" / "_train_driver.py"
ARGS = ["train.max_steps=12", "train.save_every=3", "train.keep_last=2"]


def run_driver(out: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DRIVER), str(out), *ARGS, *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("full") / "run"
    proc = run_driver(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def test_sigkill_then_resume_matches_uninterrupted(uninterrupted, tmp_path):
    out = tmp_path / "run"
    # Slow steps so the kill lands mid-run, after at least one checkpoint and before the end.
    proc = subprocess.Popen([sys.executable, str(DRIVER), str(out), *ARGS, "slow_step_s=0.25"], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    metrics = out / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and len(read_metrics(metrics)) >= 5:
            break
        assert proc.poll() is None, "driver exited before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = len(read_metrics(metrics))
    assert killed_at < 12, "the run finished before the kill"
    assert list_checkpoints(out / "checkpoints"), "no checkpoint before the kill"

    resumed = run_driver(out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout + resumed.stderr
    assert "resumed_from=0" not in resumed.stdout

    full = {r["step"]: r for r in read_metrics(uninterrupted / "metrics.jsonl")}
    mine = {r["step"]: r for r in read_metrics(metrics)}
    assert sorted(mine) == list(range(1, 13))  # one line per step: lines past the checkpoint were replaced
    for step in range(1, 13):  # before the kill, and every step recomputed after the resume
        for key in ("loss", "main_loss", "mtp_loss", "grad_norm", "lr", "expert_load_max_mean/1"):
            assert mine[step][key] == pytest.approx(full[step][key], abs=1e-6), (step, key)
    # The final weights agree too (expert biases included: they are buffers in the state dict).
    from rlpipe.model import load_pretrained

    a = load_pretrained(uninterrupted / "final").state_dict()
    b = load_pretrained(out / "final").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-6, rtol=0, msg=name)
    assert any("e_score_correction_bias" in n and a[n].abs().sum() > 0 for n in a), "biases never moved"


def test_keep_last_prunes_old_checkpoints(uninterrupted):
    steps = [s for s, _ in list_checkpoints(uninterrupted / "checkpoints")]
    assert steps == [9, 12]
    manifest = verify_checkpoint(uninterrupted / "checkpoints" / "step-000012")
    assert "model/model.safetensors" in manifest["files"] and "rng/rank0.pt" in manifest["files"]


def test_corrupt_and_partial_checkpoints_are_skipped(uninterrupted, tmp_path):
    root = tmp_path / "checkpoints"
    shutil.copytree(uninterrupted / "checkpoints", root)
    newest = root / "step-000012"
    # Flip bytes in the newest checkpoint's weights: same size, different checksum.
    weights = newest / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10:] = bytes(b ^ 0xFF for b in data[-10:])
    weights.write_bytes(bytes(data))
    (root / ".tmp-step-000015").mkdir()  # an interrupted save
    with pytest.raises(CheckpointError, match="checksum"):
        verify_checkpoint(newest)
    with pytest.warns(UserWarning) as caught:
        chosen = latest_checkpoint(root)
    assert chosen == root / "step-000009"
    text = " ".join(str(w.message) for w in caught)
    assert "skipping corrupt checkpoint" in text and "partial checkpoint" in text

    # A checkpoint whose manifest never got written (killed mid-save before the rename) is skipped too.
    (root / "step-000009" / "manifest.json").unlink()
    with pytest.warns(UserWarning) as caught:
        assert latest_checkpoint(root) is None
    assert any("no manifest.json" in str(w.message) for w in caught)


def test_resume_skips_corrupt_checkpoint_and_warns(uninterrupted, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(uninterrupted, out)
    # Truncate the newest trainer state: the run must fall back to step 9, not load the damaged file.
    state = out / "checkpoints" / "step-000012" / "trainer_state.pt"
    state.write_bytes(state.read_bytes()[:100])
    proc = run_driver(out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "skipping corrupt checkpoint" in proc.stderr
    assert "resumed_from=9" in proc.stdout
    full = {r["step"]: r for r in read_metrics(uninterrupted / "metrics.jsonl")}
    mine = {r["step"]: r for r in read_metrics(out / "metrics.jsonl")}
    assert mine[12]["loss"] == pytest.approx(full[12]["loss"], abs=1e-6)
