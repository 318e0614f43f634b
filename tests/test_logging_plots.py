"""Run logging and plots: metrics.jsonl, offline wandb files, and the PNGs a stage writes at its end."""

import json
import math

import pytest
import torch

from rlpipe.logging import MetricsLogger, read_metrics
from rlpipe.plots import plot_stage

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_metrics_jsonl_rows_and_resume_truncation(tmp_path):
    with MetricsLogger(tmp_path) as log:
        for step in range(1, 6):
            log.log({"loss": torch.tensor(1.0 / step), "lr": 1e-3, "grad_norm": math.nan}, step=step)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5]
    assert rows[1]["loss"] == pytest.approx(0.5) and rows[0]["grad_norm"] is None  # NaN is not JSON
    # A killed run may leave a torn last line; a resumed run drops the steps after its checkpoint.
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 5
    with MetricsLogger(tmp_path, resume_step=3) as log:
        log.log({"loss": 0.2}, step=4)
    rows = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4] and rows[-1]["loss"] == pytest.approx(0.2)


def test_logger_on_other_ranks_writes_nothing(tmp_path):
    with MetricsLogger(tmp_path / "rank1", enabled=False) as log:
        log.log({"loss": 1.0}, step=1)
    assert not (tmp_path / "rank1").exists()


def test_wandb_offline_writes_a_local_run(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with MetricsLogger(tmp_path, report_to="wandb", run_name="t/stage", config={"lr": 1e-3}) as log:
        log.log({"loss": 2.0, "lr": 1e-3}, step=1)
        log.log({"loss": 1.5, "lr": 1e-3}, step=2)
    runs = list((tmp_path / "wandb").rglob("offline-run-*"))
    assert runs, "no offline run folder under the stage's wandb/ directory"
    assert list(runs[0].glob("*.wandb")), "the offline run has no .wandb log file"
    assert len(read_metrics(tmp_path / "metrics.jsonl")) == 2


def test_plots_written_from_metrics_and_eval(tmp_path):
    with MetricsLogger(tmp_path) as log:
        for step in range(1, 21):
            log.log({"loss": 5.0 / step, "main_loss": 4.0 / step, "mtp_loss": 4.5 / step, "balance_loss": 2.0,
                     "lr": 1e-3 * min(1, step / 5), "grad_norm": 1.0, "reward_mean": step / 20,
                     "expert_load_max_mean/0": 1.5 - step / 40, "expert_load_max_mean/1": 1.3}, step=step)
    (tmp_path / "eval.json").write_text(json.dumps({
        "checkpoint": str(tmp_path),
        "overall": {"accuracy": 0.5, "pass_at_k": 0.7, "k": 4, "format_rate": 0.9, "language_consistency": 1.0,
                    "mixing_rate": 0.0, "mean_length": 80.0, "n": 40},
        "by_task": {"arithmetic": {"1": {"accuracy": 0.9, "n": 10}, "3": {"accuracy": 0.2, "n": 10}},
                    "countdown": {"1": {"accuracy": 0.6, "n": 20}}}}))
    written = plot_stage(tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["eval_accuracy.png", "expert_load.png", "loss.png", "lr.png", "metrics.png"]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000, path


def test_plots_of_an_empty_stage_folder_write_nothing(tmp_path):
    assert plot_stage(tmp_path) == []
