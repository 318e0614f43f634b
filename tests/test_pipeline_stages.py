"""`rlpipe run stages/<recipe>.yaml`: stage dispatch, one-message user errors, and stages 0 -> 1 end to end."""

import json
from pathlib import Path

import pytest

from rlpipe.pipeline import run_stage

ROOT = Path(__file__).resolve().parents[1]
STAGE0 = str(ROOT / "stages" / "stage-0-base.yaml")
STAGE1 = str(ROOT / "stages" / "stage-1-cold-start.yaml")


def test_stage1_without_stage0_names_the_make_target(tmp_path, capsys):
    code = run_stage([STAGE1, f"runs_dir={tmp_path}", "run=nope"])
    err = capsys.readouterr().err
    assert code == 2
    assert "make stage-0 RUN=nope" in err and str(tmp_path / "nope" / "stage-0") in err
    assert len(err.strip().splitlines()) == 1  # one message, no traceback


def test_bad_override_is_one_message(tmp_path, capsys):
    assert run_stage([STAGE0, f"runs_dir={tmp_path}", "train.epoch=2"]) == 2
    err = capsys.readouterr().err
    assert "unknown key 'train.epoch'" in err and "did you mean 'epochs'" in err
    assert not (tmp_path / "default").exists()


def test_bad_model_override_fails_before_any_work(tmp_path, capsys):
    code = run_stage([STAGE0, f"runs_dir={tmp_path}", "run=r", "model.preset=huge"])
    assert code == 2
    assert "unknown model preset 'huge'" in capsys.readouterr().err
    assert not (tmp_path / "r" / "data").exists()  # rejected before the data build


def test_usage_without_arguments(capsys):
    assert run_stage([]) == 2
    assert "stages/<recipe>.yaml" in capsys.readouterr().out


@pytest.mark.slow
def test_stage0_then_stage1_end_to_end(tmp_path):
    """Tiny budgets: checks the wiring and the folders, not the learning (make stage-0 stage-1 does that)."""
    from rlpipe.model import load_pretrained

    common = [f"runs_dir={tmp_path}", "run=e2e", "train.micro_batch_size=4", "train.save_every=5",
              "train.num_threads=2"]
    assert run_stage([STAGE0, *common, "train.max_steps=12", "train.max_examples=2000"]) == 0
    s0 = tmp_path / "e2e" / "stage-0"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "loss.png", "lr.png",
                 "expert_load.png", "report.md", "config.yaml", "heldout_loss.json"):
        assert (s0 / name).exists(), name
    load_pretrained(s0)
    heldout = json.loads((s0 / "heldout_loss.json").read_text())
    assert heldout["n"] > 0 and set(heldout["by_task"]) >= {"arithmetic", "code"}
    assert "Held-out solution loss" in (s0 / "report.md").read_text()

    assert run_stage([STAGE1, *common, "train.max_steps=6", "train.max_examples=300", "eval.backend=local",
                      "eval.limit=24", "eval.max_new_tokens=48", "eval.k=1", "eval.n_samples=1"]) == 0
    s1 = tmp_path / "e2e" / "stage-1"
    result = json.loads((s1 / "eval.json").read_text())
    assert result["overall"]["n"] == 24 and 0.0 <= result["overall"]["accuracy"] <= 1.0
    report = (s1 / "report.md").read_text()
    assert "Held-out evaluation" in report and "| task |" in report and "eval_accuracy.png" in report
    assert (s1 / "eval_accuracy.png").exists()
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(s1)  # the stage's checkpoint is a plain HF folder
