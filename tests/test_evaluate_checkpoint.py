"""Held-out evaluation on real artefacts: built data, a saved checkpoint, both generation backends."""

import json
import subprocess
import sys

import datasets
import pytest

from data.build import main as build_data
from rlpipe.evaluate import EvalConfig, evaluate_checkpoint, grade
from rlpipe.model.cli import main as init_model

OVERALL_KEYS = {"accuracy", "pass_at_k", "k", "format_rate", "language_consistency", "mixing_rate",
                "mean_length", "mixed_groups", "pass_at_k_curve", "slip_rate", "n"}


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    assert build_data(["--out", str(root / "data"), "--seed", "0", "--size", "tiny"]) == 0
    assert init_model(["--preset", "tiny", "--tokenizer", str(root / "data" / "tokenizer"),
                       "--out", str(root / "model"), "--seed", "0"]) == 0
    return root


def _rows(artefacts, n_per_task=2):
    rows = [dict(r) for r in datasets.load_from_disk(str(artefacts / "data" / "eval"))]
    picked, seen = [], {}
    for r in rows:
        if seen.get(r["task"], 0) < n_per_task:
            seen[r["task"]] = seen.get(r["task"], 0) + 1
            picked.append(r)
    return picked


def test_reference_solutions_grade_correct_and_swapped_ones_wrong(artefacts):
    rows = _rows(artefacts)
    assert {r["task"] for r in rows} >= {"arithmetic", "equations", "countdown", "code", "code_io"}
    assert grade(rows, [r["solution"] for r in rows]) == [True] * len(rows)
    # Each row graded against the solution of the next row whose answer differs: wrong.
    def other(i):
        return next(r for r in rows[i + 1:] + rows[:i] if r["answer"].strip() != rows[i]["answer"].strip())
    assert not any(grade(rows, [other(i)["solution"] for i in range(len(rows))]))


def _check_shape(result, n, k):
    assert set(result["overall"]) >= OVERALL_KEYS
    o = result["overall"]
    assert o["n"] == n and o["k"] == k
    for key in ("accuracy", "pass_at_k", "format_rate", "language_consistency", "mixing_rate"):
        assert 0.0 <= o[key] <= 1.0, key
    assert o["mean_length"] > 0
    curve = o["pass_at_k_curve"]  # from the same sample counts as pass@k
    assert curve[str(k)] == pytest.approx(o["pass_at_k"]) and curve["1"] <= curve[str(k)]
    cells = [c for levels in result["by_task"].values() for c in levels.values()]
    assert sum(c["n"] for c in cells) == n
    assert all(0.0 <= c[key] <= 1.0 for c in cells for key in ("accuracy", "pass_at_k", "mixed_groups"))


def test_local_backend_writes_eval_json(artefacts, tmp_path):
    out = tmp_path / "eval.json"
    cfg = EvalConfig(backend="local", limit=6, k=2, n_samples=2, max_new_tokens=12)
    result = evaluate_checkpoint(artefacts / "model", artefacts / "data", out, cfg)
    _check_shape(json.loads(out.read_text()), n=6, k=2)
    assert result["overall"]["mean_length"] <= 12


def test_cli_with_vllm_backend(artefacts, tmp_path):
    pytest.importorskip("vllm", reason="vLLM is not installed")
    out = tmp_path / "eval.json"
    # A child process: an in-process vLLM engine would pin this test process's torch threads.
    proc = subprocess.run(
        [sys.executable, "-m", "rlpipe.cli", "eval", "--model", str(artefacts / "model"),
         "--data", str(artefacts / "data"), "--out", str(out), "--limit", "6", "--k", "2",
         "--n-samples", "2", "--max-new-tokens", "12"],
        capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _check_shape(json.loads(out.read_text()), n=6, k=2)
    assert "| task |" in proc.stdout


def test_missing_split_is_one_clear_error(artefacts, tmp_path):
    with pytest.raises(FileNotFoundError, match="rlpipe data build"):
        evaluate_checkpoint(artefacts / "model", tmp_path, None, EvalConfig(backend="local"))


def test_solution_loss_is_the_mean_nll_of_the_reference_solutions(artefacts):
    """Stage 0's base-quality number, recomputed here from the model's plain logits."""
    import math

    import torch

    from rlpipe.evaluate import solution_loss
    from rlpipe.model import load_pretrained
    from rlpipe.tokenizer import load_tokenizer, prompt_ids

    model, tokenizer = load_pretrained(artefacts / "model"), load_tokenizer(artefacts / "model")
    rows = _rows(artefacts, n_per_task=1)
    result = solution_loss(model, tokenizer, rows)
    nats, tokens = {}, {}
    for row, p in zip(rows, prompt_ids(tokenizer, [r["prompt"] for r in rows])):
        s = tokenizer(row["solution"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([p + s])).logits[0].double(), -1)
        nats[row["task"]] = -sum(logp[len(p) - 1 + i, t].item() for i, t in enumerate(s))
        tokens[row["task"]] = len(s)
    assert result["n"] == len(rows) and result["tokens"] == sum(tokens.values())
    assert result["loss"] == pytest.approx(sum(nats.values()) / sum(tokens.values()), rel=1e-4)
    assert result["by_task"] == pytest.approx({t: nats[t] / tokens[t] for t in nats}, rel=1e-4)
    # An untrained model is near uniform over the vocabulary.
    assert result["loss"] > 0.5 * math.log(len(tokenizer))
