"""The preference reward model: Bradley-Terry loss, packed scoring, its folder, training, resume,
its use as a reward function, and the `rlpipe train-rm` command's errors.

A real tokenizer trained on real preference rows (`data.build.build_preferences`) and a two-layer
MLA + MoE model from the project's own init stand in for a stage checkpoint."""

import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch

from rlpipe.config import StageConfig
from rlpipe.logging import read_metrics
from rlpipe.model import Transformer, load_pretrained
from rlpipe.train.reward_model import (RewardModel, RewardModelConfig, RewardModelReward, bradley_terry_loss,
                                       encode, load_reward_model, main, pack_sequences, pair_accuracy,
                                       score_sequences, train_reward_model)



def small_config(vocab_size: int):
    """The trainer tests' two-layer MLA + MoE model (tests/_train_driver.py), sized to the tokenizer."""
    from _train_driver import tiny_model_config

    return tiny_model_config(vocab_size=vocab_size, max_position_embeddings=512)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A backbone folder (random tiny model + tokenizer) and a data folder with a `preferences` split."""
    import datasets

    from data.build import BuildConfig, build_preferences
    from rlpipe.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("rm")
    rows = build_preferences(BuildConfig(out=str(root)), 240, set())
    tok = train_tokenizer([r["prompt"] + r["chosen"] + r["rejected"] for r in rows], 600, root / "tok")
    torch.manual_seed(0)
    model = Transformer(small_config(len(tok)))
    model.save_pretrained(root / "backbone")
    tok.save_pretrained(str(root / "backbone"))
    datasets.Dataset.from_list(rows).save_to_disk(str(root / "data" / "preferences"))
    return root, tok, rows


@dataclass
class RMStage(StageConfig):
    reward_model: RewardModelConfig = field(default_factory=RewardModelConfig)


def stage_config(out: Path, **rm) -> RMStage:
    cfg = RMStage(stage="stage-4", run=out.name, runs_dir=str(out.parent),
                  reward_model=RewardModelConfig(**{"micro_batch_pairs": 8, "seq_len": 320, "lr": 2e-3,
                                                    "warmup_steps": 2, **rm}))
    cfg.train.num_threads, cfg.train.log_every, cfg.logging.plots = 1, 1, False
    return cfg


def test_bradley_terry_loss_matches_hand_values():
    chosen = torch.tensor([2.0, 0.0, 1.0], requires_grad=True)
    rejected = torch.tensor([0.0, 0.0, 3.0])
    loss, metrics = bradley_terry_loss(chosen, rejected)
    # diffs 2, 0, -2: -log sigma(2) = 0.126928, -log sigma(0) = log 2, -log sigma(-2) = 2.126928
    assert float(loss.detach()) == pytest.approx((0.126928 + math.log(2) + 2.126928) / 3, abs=1e-5)
    assert metrics["pair_accuracy"] == pytest.approx(1 / 3)  # a tie is not a win
    assert metrics["margin"] == pytest.approx(0.0)
    loss.backward()
    # d/d r_c of -log sigma(d) / P = -(1 - sigma(d)) / P; sigma(2) = 0.880797
    assert chosen.grad.tolist() == pytest.approx([-(1 - 0.880797) / 3, -0.5 / 3, -(1 - 0.119203) / 3], abs=1e-5)


def test_packed_score_equals_score_alone(workspace):
    root, tok, rows = workspace
    torch.manual_seed(1)
    rm = RewardModel(Transformer(small_config(len(tok))), seq_len=320, seed=3).eval()
    seqs = encode(tok, [r["prompt"] for r in rows[:12]], [r["chosen"] for r in rows[:12]], "full", 320)
    batch = pack_sequences(seqs, 320, tok.pad_token_id)
    assert batch["input_ids"].shape[0] < len(seqs)  # several sequences share a row
    with torch.no_grad():
        packed = rm(**batch)
        alone = torch.stack([rm(torch.tensor([s]))[0] for s in seqs])
    torch.testing.assert_close(packed, alone, atol=1e-5, rtol=1e-5)
    assert packed.std() > 0


def test_answer_view_reads_only_the_answer_block(workspace):
    root, tok, rows = workspace
    from rlpipe.tokenizer import format_prompt

    (ids,) = encode(tok, ["q"], ["<think>\nlong reasoning\n</think> <answer>42</answer>"], "answer", 320)
    assert tok.decode(ids) == format_prompt(tok, "q") + "<answer>42</answer><|eos|>"
    # Without a well-formed block the final part is read as it is, so the missing tags are visible.
    (ids,) = encode(tok, ["q"], ["<think>\nr\n</think> 42"], "answer", 320)
    assert tok.decode(ids).endswith("<|assistant|>42<|eos|>")


def test_save_and_load_give_identical_scores(workspace, tmp_path):
    root, tok, rows = workspace
    from rlpipe.errors import CheckpointError

    torch.manual_seed(2)
    rm = RewardModel(Transformer(small_config(len(tok))), view="answer", seq_len=256, seed=5)
    rm.score_mean, rm.score_std = 0.25, 2.0
    rm.save_pretrained(tmp_path / "rm")
    back = load_reward_model(tmp_path / "rm")
    assert (back.view, back.seq_len, back.score_mean, back.score_std) == ("answer", 256, 0.25, 2.0)
    seqs = encode(tok, [r["prompt"] for r in rows[:6]], [r["rejected"] for r in rows[:6]], "answer", 256)
    np.testing.assert_array_equal(score_sequences(rm, seqs, tok.pad_token_id),
                                  score_sequences(back, seqs, tok.pad_token_id))
    with pytest.raises(CheckpointError, match="not a reward model"):
        load_reward_model(root / "backbone")


@pytest.fixture(scope="module")
def trained(workspace, tmp_path_factory):
    root, tok, rows = workspace
    out = tmp_path_factory.mktemp("trained") / "rm"
    cfg = stage_config(out, max_steps=40, held_out=0.25)
    report = train_reward_model(cfg, init_dir=root / "backbone", data_dir=root / "data", out_dir=out)
    return out, report


def test_training_orders_held_out_pairs_of_a_separable_kind(trained):
    out, report = trained
    held = report["held_out"]
    # Malformed responses lack tags the chosen ones always have: learnable from tokens alone.
    assert held["by_kind"]["malformed"]["n"] >= 10
    assert held["by_kind"]["malformed"]["accuracy"] >= 0.8, held
    assert report["train"]["accuracy"] > 0.6
    saved = (out / "rm_eval.json").read_text()
    assert '"malformed"' in saved and (out / "reward_head.pt").is_file()
    assert len(read_metrics(out / "metrics.jsonl")) == 40


def test_pair_accuracy_reports_each_kind(trained, workspace):
    out, _ = trained
    _, tok, rows = workspace
    result = pair_accuracy(load_reward_model(out), tok, rows[:40])
    assert result["n"] == 40 and sum(v["n"] for v in result["by_kind"].values()) == 40
    # An identical pair is a tie, counted as not ordered right.
    tie = pair_accuracy(load_reward_model(out), tok, [dict(rows[0], rejected=rows[0]["chosen"])])
    assert (tie["accuracy"], tie["ties"]) == (0.0, 1)
    assert set(result["by_kind"]) <= {"wrong_answer", "malformed", "mixed_language", "wrong_language"}


def test_reward_in_combine_filters_tasks_and_waits_for_start_step(trained, workspace):
    import rewards
    from rewards.parallel import ParallelReward

    out, _ = trained
    _, tok, rows = workspace
    rm = RewardModelReward(out, tasks={"greeting", "arithmetic"}, start_step=5)
    assert rm.__name__ == "reward_model"
    picked = [r for r in rows if r["task"] == "arithmetic"][:2] + [r for r in rows if r["task"] == "code"][:1]
    prompts = [r["prompt"] for r in picked] * 2
    completions = [r["chosen"] for r in picked] * 2
    columns = {"task": [r["task"] for r in picked] * 2, "training_step": [7, 7, 7, 2, 2, 2]}
    values = rm(prompts, completions, **columns)
    assert values[2] is None and values[3:] == [None, None, None]  # code row; steps before start_step
    plain = load_reward_model(out)
    raw = score_sequences(plain, encode(tok, prompts[:2], completions[:2], plain.view, plain.seq_len), tok.pad_token_id)
    assert values[:2] == pytest.approx(((raw - plain.score_mean) / plain.score_std).tolist(), abs=1e-5)

    combined = rewards.combine({rm: 2.0, "format": 0.5})
    totals = combined(prompts, completions, **columns)
    assert totals[0] == pytest.approx(2.0 * values[0] + 0.5, abs=1e-5)  # chosen responses are well formed
    assert totals[3] == pytest.approx(0.5) and combined.last_breakdown["reward_model"] == values
    batch = ParallelReward(combined, max_workers=2)(prompts, completions, **columns)
    # the worker threads score sub-batches (other padding and batch shape): equal to float precision
    assert batch.totals == pytest.approx(totals, abs=1e-5) and batch.n_errors["reward_model"] == 0


def test_interrupted_training_resumes_exactly(workspace, tmp_path):
    root, tok, rows = workspace
    full, part = tmp_path / "full", tmp_path / "part"
    settings = dict(max_steps=6)
    cfg = stage_config(full, **settings)
    cfg.train.save_every, cfg.train.keep_last = 3, 0
    train_reward_model(cfg, init_dir=root / "backbone", data_dir=root / "data", out_dir=full)
    # Rewind a copy to its step-3 checkpoint, as if it had been killed after it.
    shutil.copytree(full, part)
    shutil.rmtree(part / "checkpoints" / "step-000006")
    cfg = stage_config(part, **settings)
    cfg.train.save_every, cfg.train.keep_last = 3, 0
    report = train_reward_model(cfg, init_dir=root / "backbone", data_dir=root / "data", out_dir=part)
    assert report["resumed_from"] == 3
    a = {r["step"]: r for r in read_metrics(full / "metrics.jsonl")}
    b = {r["step"]: r for r in read_metrics(part / "metrics.jsonl")}
    assert sorted(b) == list(range(1, 7))
    for step in range(4, 7):
        for key in ("bt_loss", "pair_accuracy", "grad_norm", "lr"):
            assert b[step][key] == pytest.approx(a[step][key], abs=1e-6), (step, key)
    wa, wb = load_reward_model(full).state_dict(), load_reward_model(part).state_dict()
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-6, rtol=0, msg=name)
    # The expert biases stay frozen during reward-model training (PreferenceSteps.after_step).
    start = load_pretrained(root / "backbone").state_dict()
    biases = [n for n in start if n.endswith("e_score_correction_bias")]
    assert biases
    for name in biases:
        torch.testing.assert_close(wa["backbone." + name], start[name], atol=0, rtol=0)


def test_cli_errors_are_one_line_naming_the_fix(workspace, tmp_path, capsys):
    import datasets

    from rlpipe.cli import COMMANDS
    from rlpipe.cli import main as rlpipe_main

    root, tok, rows = workspace
    assert "train-rm" in COMMANDS
    out = str(tmp_path / "out")
    assert rlpipe_main(["train-rm", "--model", str(tmp_path / "nope"), "--data", str(root / "data"),
                        "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nope" in err and "config.json" in err

    assert main(["--model", str(root / "backbone"), "--data", str(tmp_path), "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'preferences' split is missing" in err and "rlpipe data build" in err

    bad = tmp_path / "bad"
    datasets.Dataset.from_list([{"prompt": "p", "chosen": "c"}]).save_to_disk(str(bad / "preferences"))
    capsys.readouterr()  # the save's progress bar
    assert main(["--model", str(root / "backbone"), "--data", str(bad), "--out", out]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "['rejected']" in err and "prompt, chosen, rejected" in err

    assert main(["--model", str(root / "backbone"), "--data", str(root / "data"), "--out", out,
                 "--held-out", "1.5"]) == 2
    assert "reward_model.held_out=1.5" in capsys.readouterr().err
