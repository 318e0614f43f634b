"""Stage 2 (GRPO) end to end on real parts: built data, a saved checkpoint, real rollout engines.

- The stage through `rlpipe run` with the own-model backend: every output a user looks for.
- kill -9 mid-run, then a rerun: the resumed metrics equal the uninterrupted run's (own-model
  backend: sampling is seeded by (seed, step), the sampler table and RNG are checkpointed).
- vLLM colocated: after every optimizer step and weight push, the engine's logprobs of what it
  sampled equal the trainer's within 1e-4 (fp32, CPU), as logged each step.
- `accelerate launch` with 2 CPU processes, each with its own vLLM engine: both ranks train, and the
  sampler's success table merges every rank's prompts.
- DAPO dynamic sampling with a reward that makes some groups all-equal: they are dropped and
  refilled within the bound, and the batch keeps its size.
- The greedy member (rollout.greedy_member) with the real local engine: each group's last sample is
  the greedy decode, exempt from the mismatch correction that would otherwise flag it.
- The slip penalty on scripted completions (a scripted engine: the random model writes no arithmetic):
  the credit sits on each wrong digit's token and nowhere else, the loss backpropagates through it,
  and dynamic sampling keeps an all-wrong group with a slip only when `keep_slip_groups` says so.
- The slip correction on the same scripts: the right digit's token is the second target at each
  slip, the loss adds its cross-entropy (checked against the plain forward's logits), and the slips
  of dropped groups are taught without a policy term.
- Bad input: an unknown reward, an unknown loss, an RL split without answers, no stage-1 folder:
  one line each, naming the fix, exit code 2.
The model is a random tiny checkpoint (nothing to learn from in 3 steps: learning is measured by
`make stage-2`, not here); the data is the real builder at a small size.
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rlpipe.logging import read_metrics

ROOT = Path(__file__).resolve().parents[1]
HAS_VLLM = importlib.util.find_spec("vllm") is not None
RECIPE = str(ROOT / "stages" / "stage-2-reasoning-rl.yaml")
QUICK = ["rollout.prompts_per_step=4", "rollout.group_size=4", "rollout.max_new_tokens=12", "train.seq_len=128",
         "logging.report_to=none", "train.num_threads=1", "grpo.completions_every=1"]
NO_EVAL = ["eval.enabled=false"]


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    from _artefacts import small_data_and_model

    root = tmp_path_factory.mktemp("rl")
    small_data_and_model(root / "data", root / "run" / "stage-1", sft=200, rl=120, nonreasoning=10, preferences=10)
    return root


def stage2(artefacts, run_dir, *args, timeout=600, popen=False):
    cmd = [sys.executable, "-m", "rlpipe.cli", "run", RECIPE, "run=t", f"runs_dir={run_dir}",
           f"init_from={artefacts / 'run' / 'stage-1'}", f"data_dir={artefacts / 'data'}", *QUICK, *args]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if popen:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def comparable(rows):
    """Metrics without wall-clock timings (which differ between any two runs)."""
    return [{k: v for k, v in r.items() if not (k.startswith("time/") or k.endswith("seconds") or k == "tokens_per_s")}
            for r in rows]


def test_stage_writes_checkpoint_metrics_completions_evals_report_plots(artefacts, tmp_path):
    proc = stage2(artefacts, tmp_path, "train.max_steps=2", "rollout.backend=local", "evaluate_init=true", "eval.backend=local",
                  "eval.limit=4", "eval.n_samples=2", "eval.k=1", "eval.max_new_tokens=8", "logging.plots=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = tmp_path / "t" / "stage-2"
    for name in ("config.json", "model.safetensors", "tokenizer.json", "metrics.jsonl", "completions.jsonl",
                 "eval.json", "eval_init.json", "report.md", "rl_curves.png", "success_heatmap.png", "pass_at_k.png"):
        assert (out / name).is_file(), name
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("reward/mean", "accuracy", "entropy", "clip_frac/high", "mismatch/logp_diff_max",
                "mismatch/masked_token_frac", "push_seconds", "time/generate", "time/reward",
                "dynamic_sampling/dropped_frac", "sampler/level_1", "sampler/mean_success", "completion_length/mean",
                "reward/task_accuracy/n_errors"):
        assert key in rows[0], key
    assert any(k.startswith("success/") for k in rows[0])
    completion = json.loads((out / "completions.jsonl").read_text().splitlines()[0])
    assert set(completion) >= {"step", "prompt", "completion", "reward", "parts", "advantage"}
    assert set(completion["parts"]) == {"task_accuracy", "format", "language"}
    report = (out / "report.md").read_text()
    assert "greedy accuracy" in report and "rl_curves.png" in report
    assert "| pass@2 |" in report and "pass_at_k.png" in report  # start vs end, both from 2 samples a prompt
    evaluated = json.loads((out / "eval.json").read_text())
    assert evaluated["overall"]["n"] == 4


def test_kill9_then_resume_equals_the_uninterrupted_run(artefacts, tmp_path):
    args = ["train.max_steps=4", "train.save_every=2", "rollout.backend=local", *NO_EVAL]
    whole = stage2(artefacts, tmp_path / "whole", *args)
    assert whole.returncode == 0, whole.stderr[-3000:]
    expected = comparable(read_metrics(tmp_path / "whole" / "t" / "stage-2" / "metrics.jsonl"))

    killed = tmp_path / "killed"
    proc = stage2(artefacts, killed, *args, popen=True)
    ckpt = killed / "t" / "stage-2" / "checkpoints" / "step-000002" / "manifest.json"
    deadline = time.time() + 300
    while not ckpt.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = stage2(artefacts, killed, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    got = comparable(read_metrics(killed / "t" / "stage-2" / "metrics.jsonl"))
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    assert got == expected


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed")
def test_vllm_rollout_logprobs_match_the_trainer_after_every_push(artefacts, tmp_path):
    proc = stage2(artefacts, tmp_path, "train.max_steps=3", "rollout.backend=vllm", "rollout.kv_cache_mb=64",
                  "optim.lr=1e-3", "optim.warmup_steps=0", *NO_EVAL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path / "t" / "stage-2" / "metrics.jsonl")
    assert len(rows) == 3
    assert rows[-1]["grad_norm"] > 0  # the weights really moved between the rollouts
    for r in rows:  # rollouts of step s came from the weights pushed after step s-1
        assert r["mismatch/logp_diff_max"] < 1e-4, r["mismatch/logp_diff_max"]
        assert r["push_seconds"] < 5.0


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed")
def test_lora_rl_serves_the_merged_adapters_to_vllm_and_saves_a_plain_folder(artefacts, tmp_path):
    from safetensors.torch import load_file

    proc = stage2(artefacts, tmp_path, "train.max_steps=3", "rollout.backend=vllm", "rollout.kv_cache_mb=64",
                  "optim.lr=1e-2", "optim.warmup_steps=0", "lora.enabled=true", "lora.r=4",
                  "grpo.overlong=none", *NO_EVAL)  # 12-token completions rarely end: keep them in the loss
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_metrics(tmp_path / "t" / "stage-2" / "metrics.jsonl")
    assert len(rows) == 3
    assert rows[0]["grad_norm"] > 0 and rows[1]["kl"] > 1e-6  # the adapters moved before steps 2 and 3 sampled
    for r in rows:  # the engine sampled from base + adapters (a push of the bare base would differ here)
        assert r["mismatch/logp_diff_max"] < 1e-4, r["mismatch/logp_diff_max"]
    before = load_file(str(artefacts / "run" / "stage-1" / "model.safetensors"))
    after = load_file(str(tmp_path / "t" / "stage-2" / "model.safetensors"))
    assert set(after) == set(before)  # a plain HF folder: no adapter tensors
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])  # frozen
    moved = [k for k in before if k.endswith(("q_proj.weight", "o_proj.weight", "kv_b_proj.weight"))
             and not torch.equal(after[k], before[k])]
    assert moved, "the adapters were not merged into the saved attention weights"


def test_lora_with_the_local_sampler_is_one_clear_error(artefacts, tmp_path):
    proc = stage2(artefacts, tmp_path, "train.max_steps=1", "rollout.backend=local", "lora.enabled=true")
    assert proc.returncode == 2
    assert "rollout.backend=vllm" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.vllm
@pytest.mark.skipif(not HAS_VLLM, reason="vLLM is not installed")
def test_two_processes_each_with_an_engine_merge_the_sampler(artefacts, tmp_path):
    launcher = [sys.executable, "-m", "accelerate.commands.launch",
                "--config_file", str(ROOT / "stages" / "accelerate" / "ddp_cpu.yaml"),
                "--num_processes", "2", "--main_process_port", str(free_port())]
    cmd = [*launcher, "-m", "rlpipe.cli", "run", RECIPE, "run=t", f"runs_dir={tmp_path}",
           f"init_from={artefacts / 'run' / 'stage-1'}", f"data_dir={artefacts / 'data'}", *QUICK,
           "train.max_steps=2", "train.save_every=2", "rollout.backend=vllm", "rollout.kv_cache_mb=64",
           "grpo.dynamic_sampling=false", *NO_EVAL]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr[-4000:]
    ckpt = tmp_path / "t" / "stage-2" / "checkpoints" / "step-000002"
    assert sorted(p.name for p in (ckpt / "rng").iterdir()) == ["rank0.pt", "rank1.pt"]
    state = torch.load(ckpt / "trainer_state.pt", weights_only=False)
    sampler = state["data"]["sampler"]
    # 2 steps x 4 prompts, 2 per rank: rank 0's table holds all 8 observations (merged), not its 4.
    assert sum(sampler["observations"]) == 8
    rows = read_metrics(tmp_path / "t" / "stage-2" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and rows[0]["num_prompts"] == 4


def in_process_steps(artefacts, cfg, reward_terms, engine=None, seq_len=128):
    """GRPOSteps on the built rl split and the saved checkpoint, in this process (no `rlpipe run`):
    the real local engine unless `engine` is given, the real rewards in worker threads."""
    from rewards import combine
    from rewards.parallel import ParallelReward
    from rlpipe.model import load_pretrained
    from rlpipe.rollout import make_engine
    from rlpipe.sampler import PromptSampler
    from rlpipe.tokenizer import load_tokenizer
    from rlpipe.train import make_accelerator
    from rlpipe.train.rl import GRPOSteps

    import datasets

    rows = [dict(r) for r in datasets.load_from_disk(str(artefacts / "data" / "rl"))]
    model_dir = artefacts / "run" / "stage-1"
    model, tokenizer = load_pretrained(model_dir), load_tokenizer(model_dir)
    engine = make_engine("local", model_dir, model=model) if engine is None else engine(tokenizer)
    reward = ParallelReward(combine(reward_terms(rows) if callable(reward_terms) else reward_terms), max_workers=2)
    return GRPOSteps(model=model, tokenizer=tokenizer, rows=rows, engine=engine, reward=reward,
                     sampler=PromptSampler(rows, cfg.sampler, seed=0, num_steps=4), grpo=cfg.grpo,
                     rollout=cfg.rollout, rewards_cfg=cfg.rewards, num_steps=4, seed=0, seq_len=seq_len,
                     accelerator=make_accelerator(cfg.train))


def test_dynamic_sampling_drops_all_equal_groups_and_refills_within_the_bound(artefacts):
    """In-process with the real local engine and rewards: a reward that pays every sample of
    even-numbered rows the same makes their groups carry no advantage."""
    from rlpipe.config import ReasoningRLConfig

    def terms(rows):
        even = {r["id"] for i, r in enumerate(rows) if i % 2 == 0}

        def parity_reward(prompts, completions, id, **_):
            return [1.0 if i in even else float(len(c) % 3) for i, c in zip(id, completions)]

        return {"task_accuracy": 1.0, parity_reward: 1.0}

    cfg = ReasoningRLConfig()
    cfg.rollout.prompts_per_step, cfg.rollout.group_size, cfg.rollout.max_new_tokens = 6, 4, 10
    cfg.grpo.max_refill_rounds = 2
    steps = in_process_steps(artefacts, cfg, terms)
    micro = steps.micro_batches(0, 0)
    metrics = steps.pending["metrics"]
    n_samples = sum(int(b["advantages"].numel()) for b in micro)
    assert n_samples == 6 * 4  # the batch keeps its size
    assert metrics["dynamic_sampling/dropped_frac"] > 0  # even rows were drawn and dropped
    # At most max_refill_rounds extra rounds, each no larger than what was missing.
    assert 0 < metrics["dynamic_sampling/extra_groups"] + 6 <= 6 * (1 + cfg.grpo.max_refill_rounds)
    informative = sum(float(b["advantages"].abs().sum()) > 0 for b in micro)
    assert informative >= 1
    steps.engine.close()


def test_greedy_member_is_each_groups_greedy_decode_and_is_not_reweighted(artefacts):
    """rollout.greedy_member with the real local engine at temperature 0.5: the last sample of every
    group is the prompt's greedy decode and the others are the seeded G - 1 samples; its logprobs
    are the raw ones (greedy sampling has no temperature), so counted by the mismatch correction it
    would look off-policy: it is exempt (weight 1), and the logged mismatch covers the sampled ones."""
    from rlpipe.config import ReasoningRLConfig
    from rlpipe.rollout import Sampling

    cfg = ReasoningRLConfig()
    cfg.rollout.prompts_per_step, cfg.rollout.group_size, cfg.rollout.max_new_tokens = 3, 4, 10
    cfg.rollout.temperature, cfg.rollout.greedy_member = 0.5, True
    cfg.grpo.dynamic_sampling = False
    steps = in_process_steps(artefacts, cfg, {"task_accuracy": 1.0})
    indices = [0, 1, 2]
    prompts = [steps.prompt_ids[i] for i in indices]
    scored, _ = steps._generate_and_score(indices, 0, 0)
    greedy = steps.engine.generate(prompts, 1, Sampling(temperature=0.0, max_new_tokens=10))
    sampled = steps.engine.generate(prompts, 3, cfg.rollout.sampling, seed=steps._seed(0, 0))
    for i in range(3):
        assert scored.token_ids[i * 4:i * 4 + 3] == sampled.token_ids[i * 3:i * 3 + 3]
        assert scored.token_ids[i * 4 + 3] == greedy.token_ids[i]

    micro = steps.micro_batches(0, 0)
    assert "greedy/accuracy" in steps.pending["metrics"]
    flags = torch.cat([b["sampled"] for b in micro])
    assert flags.tolist() == [1.0, 1.0, 1.0, 0.0] * 3  # packing keeps the samples' order here
    for batch in micro:
        _, metrics = steps.loss(steps.model, batch)
        assert metrics["mismatch/logp_diff_max"] < 1e-3 and metrics["mismatch/truncated_frac"] == 0.0
    # Without the exemption the greedy member's raw logprobs count against the tempered trainer's.
    _, counted = steps.loss(steps.model, {k: v for k, v in micro[0].items() if k != "sampled"})
    assert counted["mismatch/logp_diff_max"] > 1e-2
    steps.engine.close()


class ScriptedEngine:
    """A rollout engine that returns given completions (the rollout interface's contract, real
    tokenizer and `finish`): the random test model never writes arithmetic, a slip needs a script."""

    def __init__(self, tokenizer, texts):
        self.tokenizer, self.texts = tokenizer, texts

    def generate(self, prompt_ids, n, sampling, *, seed=None):
        from rlpipe.rollout import finish

        ids = [self.tokenizer.encode(self.texts[k % len(self.texts)], add_special_tokens=False)
               + [self.tokenizer.eos_token_id] for k in range(len(prompt_ids) * n)]
        return finish(self.tokenizer, n, prompt_ids, ids, [[-1.0] * len(t) for t in ids])

    def push_weights(self, model, state=None):
        return 0.0


def test_slip_penalty_lands_on_the_first_wrong_digit_and_trains(artefacts):
    """In-process: the scripted completions carry arithmetic slips; with grpo.slip_penalty each one's
    wrong digit (and nothing else) gets that much less advantage in the packed batch, and the loss
    backpropagates through the per-token advantages."""
    from rlpipe.config import ReasoningRLConfig

    texts = ["<think>\n把常数移到右边：18 - 13 = 4。\n4x = 4.\n</think> <answer>x = 1</answer>",
             "<think>\n12 + 4 = 16.\n16 / 4 = 4.\n</think> <answer>4</answer>",
             "<think>\n-9 - 9 = 3.\nx = 3 / 4 = 1.\n</think> <answer>x = 1</answer>",
             "<think>\nok\n</think> <answer>7</answer>"]
    wrong_digits = [["4"], [], ["3", "1"], []]
    cfg = ReasoningRLConfig()
    cfg.rollout.prompts_per_step, cfg.rollout.group_size = 2, 4
    cfg.grpo.slip_penalty, cfg.grpo.dynamic_sampling = 0.5, False
    steps = in_process_steps(artefacts, cfg, {"task_accuracy": 1.0}, lambda tok: ScriptedEngine(tok, texts), 256)
    tokenizer = steps.tokenizer
    micro = steps.micro_batches(0, 0)
    metrics = steps.pending["metrics"]
    assert metrics["slips/samples_frac"] == 0.5 and metrics["slips/per_sample"] == 0.75
    assert metrics["num_slips_unplaced"] == 0.0
    seen = 0
    for batch in micro:
        credit, mask = batch["token_credit"], batch["mask"]
        assert torch.all(credit[mask == 0] == 0)
        T = batch["input_ids"].shape[1]
        for i in range(credit.shape[0]):
            # the logprob of token j sits at (row, position - 1) of the (rows, T - 1) scores
            index = batch["gather_index"][i][mask[i] > 0]
            tokens = batch["input_ids"][index // (T - 1), index % (T - 1) + 1]
            text = tokenizer.decode(tokens.tolist(), skip_special_tokens=True)
            k = texts.index(text)
            hit = (credit[i] != 0).nonzero().flatten().tolist()
            assert [tokenizer.decode([int(tokens[j])]).strip() for j in hit] == wrong_digits[k]  # " 4" is one token
            assert torch.all(credit[i][hit] == -0.5)
            seen += 1
    assert seen == 8
    loss, _ = steps.loss(steps.model, micro[0])
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in steps.model.parameters())


@pytest.mark.parametrize("keep", [True, False])
def test_dynamic_sampling_keeps_all_wrong_groups_with_a_slip_when_asked(artefacts, keep):
    """Every scripted answer is wrong (all-equal rewards: DAPO drops the group), but one sample in
    each group states 18 - 13 = 4: with the slip penalty that group still has signal."""
    from rlpipe.config import ReasoningRLConfig

    texts = ["<think>\n18 - 13 = 4.\n</think> <answer>-987654</answer>",
             "<think>\nno idea\n</think> <answer>-987654</answer>"]
    cfg = ReasoningRLConfig()
    cfg.rollout.prompts_per_step, cfg.rollout.group_size = 2, 2
    cfg.grpo.slip_penalty, cfg.grpo.keep_slip_groups, cfg.grpo.max_refill_rounds = 1.0, keep, 1
    steps = in_process_steps(artefacts, cfg, {"task_accuracy": 1.0}, lambda tok: ScriptedEngine(tok, texts), 256)
    micro = steps.micro_batches(0, 0)
    metrics = steps.pending["metrics"]
    assert metrics["accuracy"] == 0.0
    assert metrics["dynamic_sampling/dropped_frac"] == (0.0 if keep else 1.0)
    assert metrics["dynamic_sampling/extra_groups"] == (0.0 if keep else 2.0)  # one refill round of 2
    # the batch has its 2 x 2 samples either way; the slip's token carries -1 in both
    assert sum(int(b["advantages"].numel()) for b in micro) == 4
    assert sum(float(b["token_credit"].sum()) for b in micro) == -2.0


def test_slip_correction_teaches_the_calculators_digit_at_each_slip(artefacts):
    """In-process: grpo.slip_correction puts, at the token of each slip's first wrong digit, the
    token with the right digit as a second target (18 - 13 = 4 -> "5"; 3 / 4 = 1 -> "0" of 0.75);
    the loss adds the weight times the mean cross-entropy of those targets, computed here by hand
    from the model's plain forward logits."""
    from rlpipe.config import ReasoningRLConfig

    texts = ["<think>\n把常数移到右边：18 - 13 = 4。\n4x = 4.\n</think> <answer>x = 1</answer>",
             "<think>\n12 + 4 = 16.\n16 / 4 = 4.\n</think> <answer>4</answer>",
             "<think>\n-9 - 9 = 3.\nx = 3 / 4 = 1.\n</think> <answer>x = 1</answer>",
             "<think>\nok\n</think> <answer>7</answer>"]
    # -9 - 9 = 3 wants "-" where " 3" stands: placed only where " -" is one token, counted either way
    cfg = ReasoningRLConfig()
    cfg.rollout.prompts_per_step, cfg.rollout.group_size = 2, 4
    cfg.grpo.slip_correction, cfg.grpo.dynamic_sampling = 2.0, False
    steps = in_process_steps(artefacts, cfg, {"task_accuracy": 1.0}, lambda tok: ScriptedEngine(tok, texts), 256)
    tokenizer, model = steps.tokenizer, steps.model
    micro = steps.micro_batches(0, 0)
    metrics = steps.pending["metrics"]
    placed, unplaced = metrics["num_slip_corrections"], metrics["num_slip_corrections_unplaced"]
    minus = len(tokenizer.encode(" -", add_special_tokens=False)) == 1
    assert placed + unplaced == 2 * 3  # 3 slips in the 4 texts, each text twice
    assert placed == 2 * (2 + minus) and metrics["num_correction_only_samples"] == 0
    swaps, nll, n = [], 0.0, 0
    with torch.no_grad():
        for batch in micro:
            at = batch["correction_mask"].nonzero().tolist()
            logits = model(batch["input_ids"], position_ids=batch["position_ids"],
                           segment_ids=batch["segment_ids"]).logits.float()
            for r, p in at:
                wrong, right = int(batch["input_ids"][r, p + 1]), int(batch["alt_targets"][r, p])
                swaps.append((tokenizer.decode([wrong]).strip(), tokenizer.decode([right]).strip()))
                nll -= float(torch.log_softmax(logits[r, p], -1)[right])
                n += 1
    assert n == placed
    assert swaps.count(("4", "5")) == 2 and swaps.count(("1", "0")) == 2  # 18 - 13 = 5; 3 / 4 = 0.75
    assert swaps.count(("3", "-")) == 2 * minus  # -9 - 9 = -18
    assert all(w != r for w, r in swaps)
    # the loss: policy loss + weight * mean cross-entropy over the step's corrections
    with torch.no_grad():
        with_fix = sum(float(steps.loss(model, b)[0]) for b in micro)
        without = sum(float(steps.loss(model, {k: v for k, v in b.items() if k != "alt_targets"})[0]) for b in micro)
    assert abs((with_fix - without) - 2.0 * nll / n) < 1e-4
    loss, _ = steps.loss(model, micro[0])
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_slip_correction_also_teaches_the_slips_of_dropped_groups(artefacts):
    """All-wrong groups are dropped by dynamic sampling (no advantage), but their slips are still
    the calculator's to correct: the unused dropped groups' samples with a slip join the batch with
    no policy or KL term (mask 0, advantage 0), carrying only their corrections."""
    from rlpipe.config import ReasoningRLConfig

    texts = ["<think>\n18 - 13 = 4.\n</think> <answer>-987654</answer>",
             "<think>\nno idea\n</think> <answer>-987654</answer>"]
    cfg = ReasoningRLConfig()
    cfg.rollout.prompts_per_step, cfg.rollout.group_size = 2, 2
    cfg.grpo.slip_correction, cfg.grpo.max_refill_rounds = 1.0, 1
    steps = in_process_steps(artefacts, cfg, {"task_accuracy": 1.0}, lambda tok: ScriptedEngine(tok, texts), 256)
    micro = steps.micro_batches(0, 0)
    metrics = steps.pending["metrics"]
    assert metrics["dynamic_sampling/dropped_frac"] == 1.0 and metrics["dynamic_sampling/extra_groups"] == 2.0
    # 2 groups fill the batch (advantage 0), the 2 refill groups' slip samples join for the correction
    assert metrics["num_correction_only_samples"] == 2.0 and metrics["num_slip_corrections"] == 4.0
    assert sum(int(b["advantages"].numel()) for b in micro) == 4 + 2
    assert all(float(b["advantages"].abs().sum()) == 0 for b in micro)
    assert sum(float(b["mask"].sum()) for b in micro) > 0  # the 4 batch samples still train (KL term)
    assert sum(float(b["correction_mask"].sum()) for b in micro) == 4.0
    assert all(float(b["total_corrections"]) == 4.0 for b in micro)


@pytest.mark.parametrize("override, message", [
    ("rewards.weights={task_accuracy: 1.0, acuracy: 1.0}", "unknown reward"),
    ("grpo.loss_type=ppo2", "loss_type"),
])
def test_bad_recipe_is_one_clear_error(artefacts, tmp_path, override, message):
    proc = stage2(artefacts, tmp_path, override, "train.max_steps=1")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr


def test_rl_split_without_answers_is_one_clear_error(artefacts, tmp_path):
    import datasets

    bad = tmp_path / "data"
    ds = datasets.load_from_disk(str(artefacts / "data" / "rl"))
    ds = ds.map(lambda r: {"answer": "", "tests": None, "numbers": None})
    ds.save_to_disk(str(bad / "rl"))
    (bad / "eval").mkdir()
    proc = stage2(artefacts, tmp_path, f"data_dir={bad}", "train.max_steps=1")
    assert proc.returncode == 2
    assert "no answer, tests or numbers" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_missing_stage1_names_the_make_target(artefacts, tmp_path):
    cmd = [sys.executable, "-m", "rlpipe.cli", "run", RECIPE, "run=nothing", f"runs_dir={tmp_path}",
           f"data_dir={artefacts / 'data'}", "train.max_steps=1"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "make stage-1 RUN=nothing" in proc.stderr and "Traceback" not in proc.stderr
