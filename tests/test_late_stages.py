"""Stages 3 and 4 and the run report, end to end through `rlpipe run` on real parts.

- Stage 3 samples the stage-2 checkpoint through the rollout interface and filters with the real
  graders. A random tiny model solves nothing, so its run must stop with one clear error naming
  the drop reasons; the SFT half then runs on a rejection set the real filter built from hand-made
  completions (the cache a rerun reuses), and writes every output a user looks for.
- Stage 4 trains the reward model (a few steps), mixes general prompts in, runs GRPO with the RM
  paid on general rows and probed on reasoning rows, and writes the guard and the general-prompt
  scores. Learning is measured by `make pipeline`, not here: the model is random.
- A finished stage is not rerun (one line says so) unless redo=true; `rlpipe report` builds the
  one-page report with its plots from whatever stages exist.
The model is a random tiny checkpoint; the data is the real builder at a small size.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STAGE3 = str(ROOT / "stages" / "stage-3-rejection-sft.yaml")
STAGE4 = str(ROOT / "stages" / "stage-4-all-scenarios-rl.yaml")
EVAL = ["eval.backend=local", "eval.limit=4", "eval.n_samples=2", "eval.k=1", "eval.max_new_tokens=8"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """runs/t with data, and a random tiny checkpoint standing in for stages 1 and 2."""
    import shutil

    from _artefacts import small_data_and_model

    root = tmp_path_factory.mktemp("late")
    small_data_and_model(root / "t" / "data", root / "t" / "stage-1", sft=200, rl=60, nonreasoning=60, preferences=80)
    shutil.copytree(root / "t" / "stage-1", root / "t" / "stage-2")
    return root


def rlpipe_run(root, recipe, *args, timeout=900):
    cmd = [sys.executable, "-m", "rlpipe.cli", "run", recipe, "run=t", f"runs_dir={root}",
           "logging.report_to=none", "train.num_threads=1", *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_stage3_from_a_model_that_solves_nothing_is_one_clear_error(run_dir):
    proc = rlpipe_run(run_dir, STAGE3, "rejection.backend=local", "rejection.max_prompts=6", "rejection.n_samples=2",
                      "rejection.max_new_tokens=8", *EVAL)
    assert proc.returncode == 2, proc.stderr[-2000:]
    message = proc.stderr.strip().splitlines()[-1]
    assert message.startswith("rlpipe run: stage-3: no sample of") and "'wrong': 12" in message
    assert "Traceback" not in proc.stderr


def seed_rejection_set(run_dir):
    """What sample_and_filter writes, from hand-made completions through the real filter."""
    import datasets

    from rlpipe.pipeline.rejection_sft import SFT_DATA
    from rlpipe.rejection import RejectionConfig, funnel, nonreasoning_rows, rejection_rows, select

    rl = [dict(r) for r in datasets.load_from_disk(str(run_dir / "t" / "data" / "rl"))][:24]
    right = [r["solution"] for r in rl]  # the builder's verified traces: right and well formed
    wrong = [s.split("<answer>")[0] + "<answer>no idea</answer>" for s in right]
    verdicts = select(rl, [[a, b] for a, b in zip(right, wrong)], [[40, 40]] * len(rl), [[False, False]] * len(rl),
                      RejectionConfig())
    kept = rejection_rows(rl, verdicts, source="hand-made")
    general = nonreasoning_rows([dict(r) for r in datasets.load_from_disk(str(run_dir / "t" / "data" / "nonreasoning"))],
                                len(kept), 0.2, 0, source="nonreasoning")
    out = run_dir / "t" / "stage-3"
    out.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_list(kept + general).save_to_disk(str(out / SFT_DATA))
    counts = funnel(rl, verdicts)
    counts["sft_rows"] = {"rejection_sampling": len(kept), "nonreasoning": len(general)}
    (out / "funnel.json").write_text(json.dumps(counts))
    return counts


def test_stage3_then_stage4_then_the_report(run_dir):
    import datasets

    counts = seed_rejection_set(run_dir)
    assert counts["overall"]["sampled"] == 48 and 0 < counts["overall"]["kept"] <= 24
    proc = rlpipe_run(run_dir, STAGE3, "train.max_steps=2", "train.micro_batch_size=4", *EVAL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s3 = run_dir / "t" / "stage-3"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "eval.json", "report.md",
                 "stage.json"):
        assert (s3 / name).is_file(), name
    marker = json.loads((s3 / "stage.json").read_text())
    assert marker["minutes"] > 0 and 0.3 < marker["peak_rss_gb"] < 8  # the trainer process with its vLLM engine
    report = (s3 / "report.md").read_text()
    assert "Rejection-sampling funnel" in report and "| all | 48 |" in report
    sft = datasets.load_from_disk(str(s3 / "sft_data"))
    assert {"source", "origin", "sample_index", "reward_accuracy", "reward_format", "length"} <= set(sft.column_names)
    assert set(sft["origin"]) == {"rejection_sampling", "nonreasoning"}

    again = rlpipe_run(run_dir, STAGE3, "train.max_steps=2", *EVAL)
    assert again.returncode == 0 and "already finished" in again.stdout and "redo=true" in again.stdout

    proc = rlpipe_run(run_dir, STAGE4, "train.max_steps=3", "rollout.backend=local", "rollout.prompts_per_step=4",
                      "rollout.group_size=4", "rollout.max_new_tokens=12", "train.seq_len=128",
                      "grpo.completions_every=1", "general_share=0.5", "general_held_out=4",
                      "reward_model.max_steps=2", "reward_model.micro_batch_pairs=4", "reward_model.seq_len=192",
                      "reward_model.start_step=1", *EVAL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    s4 = run_dir / "t" / "stage-4"
    for name in ("model.safetensors", "reward_model/rm_eval.json", "reward_model/reward_head.pt", "eval.json",
                 "general_eval.json", "rm_vs_rule.json", "completions.jsonl", "report.md", "rl_curves.png"):
        assert (s4 / name).is_file(), name
    lines = [json.loads(x) for x in (s4 / "completions.jsonl").read_text().splitlines()]
    general = [x for x in lines if x["parts"].get("task_accuracy") is None]
    reasoning = [x for x in lines if x["parts"].get("task_accuracy") is not None]
    assert general and reasoning
    # The RM is paid on general prompts from start_step (rollout step 1) on, never on reasoning ones.
    assert all((x["parts"]["reward_model"] is not None) == (x["step"] >= 1) for x in general)
    assert any(x["parts"]["reward_model"] is not None for x in general)
    assert all(x["parts"]["rm_probe"] is None for x in general)
    assert all(x["parts"]["reward_model"] is None and x["parts"]["rm_probe"] is not None for x in reasoning)
    metrics = [json.loads(x) for x in (s4 / "metrics.jsonl").read_text().splitlines()]
    assert "reward/rm_probe" in metrics[0] and any("reward/reward_model" in m for m in metrics[1:])
    assert 0 < metrics[0]["graded_frac"] < 1  # accuracy is over the rule-graded (reasoning) samples only
    g = json.loads((s4 / "general_eval.json").read_text())
    assert g["before"]["n"] == g["after"]["n"] == 4
    assert "Reward model vs the rule" in (s4 / "report.md").read_text()

    from rlpipe.report import main as report_main

    assert report_main(["--run", str(run_dir / "t")]) == 0
    page = (run_dir / "t" / "report.md").read_text()
    assert "## Targets" in page and "stage 3 >= stage 2 - 0.02" in page and "stage-4 (all-scenario RL)" in page
    for png in ("stages_accuracy.png", "stages_overall.png", "funnel.png"):
        assert (run_dir / "t" / png).is_file(), png


def test_stage3_two_processes_share_the_sampling_and_stop_together(run_dir, tmp_path):
    """accelerate launch, 2 CPU processes: each samples half of the prompts with its own engine, the
    shares are gathered on rank 0, and its verdict (nothing kept: the model is random) ends both
    processes with the same one-line error instead of leaving one waiting at a barrier."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                str(ROOT / "stages" / "accelerate" / "ddp_cpu.yaml"), "--num_processes", "2",
                "--main_process_port", str(port)]
    cmd = [*launcher, "-m", "rlpipe.cli", "run", STAGE3, "run=t", f"runs_dir={tmp_path}",
           f"data_dir={run_dir / 't' / 'data'}", f"sample_from={run_dir / 't' / 'stage-2'}",
           f"init_from={run_dir / 't' / 'stage-1'}", "logging.report_to=none", "train.num_threads=1",
           "rejection.backend=local", "rejection.max_prompts=6", "rejection.n_samples=2",
           "rejection.max_new_tokens=8", *EVAL]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode != 0
    # one error per process; the two processes' lines can land on one line of the shared stderr
    errors = proc.stderr.split("rlpipe run: stage-3: no sample of")[1:]
    assert len(errors) == 2 and all("'wrong': 12" in e.split("\n")[0] for e in errors), proc.stderr[-3000:]
