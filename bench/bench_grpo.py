"""Benchmark: our GRPO trainer (stage 2) vs TRL's GRPOTrainer, same model, prompts and settings.

`make bench-grpo` runs it (not part of `make test`). Inputs: `--model` (an HF DeepSeek-V3 folder with
tokenizer, default runs/tiny/stage-1, made by `make stage-1`) and `--data` (default runs/tiny/data).

- Same work on both sides: the same `prompts_per_step` x (`steps` + 1) prompts (a seeded sample of the
  `rl` split, written as the only rows of a scratch copy of the data folder, so each side trains on
  exactly these prompts, in its own order), `group_size` samples each, temperature 1, at most
  `max_new_tokens` new tokens (completions stop at EOS, as in real runs), reward
  `task_accuracy + 0.2 format`, loss "dapo", beta 0, one optimizer step per generation, fp32 on CPU.
  The first step of each run is a warm-up and is not timed, so a run trains `steps + 1` steps.
- Ours: `rlpipe.cli run stages/stage-2-reasoning-rl.yaml` in a subprocess (`ours_command` lists the
  overrides); per-step seconds and the generation / reward / training split come from its
  `metrics.jsonl` (`step_seconds`, `time/generate` plus `push_seconds`, `time/reward`, and
  `time/train` where it is logged, else the rest of the step; `num_completion_tokens`).
- TRL: `GRPOTrainer` in a subprocess (this file with `--worker trl`). Its own timing metrics reach
  only wandb/mlflow/trackio, so the worker wraps the trainer's methods: `_generate` (prompt
  tokenisation, weight sync to vLLM, sampling, decoding) is generation, `_calculate_rewards` is
  reward, and the rest of the step (callback `on_step_begin` to `on_step_end`: padding, the
  old-logprob forward TRL adds for its importance-sampling correction in vLLM mode, loss forward and
  backward, clipping, AdamW) is training. TRL's generation backends are tried fastest first (`TRL_MODES`: vLLM colocate,
  transformers continuous batching, plain transformers `generate`) on the first round; the first
  that trains is used for every round, and the result keeps why the others failed.
- Each side runs in its own process (vLLM engines change process-wide state: thread binding, the
  `torch.set_num_threads` hook), with the same thread count set before any engine exists, and the
  sides alternate for `--repeats` rounds (the median round is reported, the spread printed).
  Engine start-up (everything outside the timed steps) is reported separately. The CPUs are
  shared: each round records the share of CPU time other work used meanwhile, and rounds above
  `BUSY` are starred.
- peak_rss_mb: the peak resident memory of the side's whole process tree (the sum of its processes'
  proportional set sizes, so pages a forked child shares are counted once), sampled every 0.2 s,
  and never below the largest single process's `ru_maxrss` (from `wait4`).
- Training FLOP/s: 6 x active parameters x trained tokens over the training part's seconds, as a
  share of the fp32 matmul peak measured in this run (2048^3). Active parameters: every weight a
  token multiplies, i.e. all of them except the input embedding (a lookup) and the MTP module (RL
  trains the main head only), with each MoE layer's routed experts counted at
  num_experts_per_tok / n_routed_experts (shared experts and the router count in full). Trained
  tokens: prompt + completion tokens of each sample (the prompt goes through forward and
  backward too), with the prompt length taken as the benchmark prompts' mean.
- Rollouts alone: tokens/s of vLLM (`rlpipe.rollout` "vllm"), our own model's sampler ("local") and
  transformers `generate` on one batch (the first step's prompts x group_size, same max tokens),
  each backend in its own process, best of `--repeats` calls after a warm-up call.
Prints Markdown tables and writes bench/results/grpo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "grpo.json"
RECIPE = ROOT / "stages" / "stage-2-reasoning-rl.yaml"
REWARD_WEIGHTS = {"task_accuracy": 1.0, "format": 0.2}
# Dataset columns the rewards read (TRL passes every column but `prompt` to reward functions).
REWARD_COLUMNS = ("answer", "tests", "entry_point", "numbers", "target", "task")
SEED = 0
# What our trainer logs per step into metrics.jsonl and the benchmark reads.
OURS_KEYS = ("step_seconds", "time/generate", "time/reward", "num_completion_tokens", "num_prompts")
EXCEPTION_LINE = re.compile(r"\b[A-Z]\w*(Error|Exception): .*")
# TRL's generation backends, fastest first: its vLLM colocate engine, transformers continuous
# batching, plain transformers `generate`. The benchmark uses the first that trains here.
TRL_MODES = ("vllm", "transformers-cb", "transformers")
# Share of the CPUs used by other work above which a timing is flagged as disturbed.
BUSY = 0.1


# ---------------------------------------------------------------------- inputs
def check_inputs(model: Path, data: Path) -> None:
    """Exit with one message naming the fix when the checkpoint or data folder is missing."""
    missing = [str(p) for p in (model / "config.json", model / "tokenizer.json", data / "rl") if not p.exists()]
    if missing:
        sys.exit(f"bench-grpo: missing {', '.join(missing)}; run `make stage-1` first (it writes the stage-1 "
                 f"checkpoint and the data folder), or pass --model DIR --data DIR")


def make_bench_data(data: Path, out: Path, n_prompts: int) -> Path:
    """A copy of `data` whose `rl` split holds only `n_prompts` seeded rows (the other entries are linked)."""
    import datasets

    rl = datasets.load_from_disk(str(data / "rl"))
    if len(rl) < n_prompts:
        sys.exit(f"bench-grpo: {data / 'rl'} has {len(rl)} rows, the benchmark needs {n_prompts} "
                 f"(prompts_per_step x (steps + 1)); lower --prompts-per-step or --steps")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for entry in data.iterdir():
        if entry.name != "rl":
            (out / entry.name).symlink_to(entry.resolve())
    rl.shuffle(seed=SEED).select(range(n_prompts)).save_to_disk(str(out / "rl"))
    return out


def trl_rows(data: Path, tokenizer) -> list[dict]:
    """The benchmark prompts as TRL rows: our chat template applied, reward columns passed through."""
    import datasets

    from rlpipe.tokenizer import format_prompt

    rl = datasets.load_from_disk(str(data / "rl"))
    return [{"prompt": format_prompt(tokenizer, row["prompt"]), **{c: row[c] for c in REWARD_COLUMNS}} for row in rl]


# ---------------------------------------------------------------------- measurement helpers
def active_parameters(model_dir: Path) -> tuple[int, int]:
    """(active, total) parameters of the checkpoint, counted as the module docstring says."""
    from safetensors import safe_open

    cfg = json.loads((model_dir / "config.json").read_text())
    mtp_prefix = f"model.layers.{cfg['num_hidden_layers']}."
    routed_share = cfg["num_experts_per_tok"] / cfg["n_routed_experts"]
    active = total = 0.0
    for file in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(file), "pt") as f:
            for key in f.keys():
                size = 1
                for d in f.get_slice(key).get_shape():
                    size *= d
                total += size
                if key.startswith(mtp_prefix) or key.endswith("embed_tokens.weight"):
                    continue
                active += size * (routed_share if ".mlp.experts." in key else 1.0)
    return int(active), int(total)


def tree_memory(proc) -> int:
    """Bytes resident in `proc` and its descendants, each page counted once: the sum of their PSS
    (a forked child shares its parent's pages, so summed RSS would count them twice)."""
    import psutil

    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:  # the process has just ended
        return 0
    for p in procs:
        try:
            total += p.memory_full_info().pss
        except psutil.Error:  # a child that ended between the listing and the read holds nothing
            continue
    return total


def run_process(cmd: list[str], env: dict, log: Path, timeout: float) -> dict:
    """Run `cmd` to the end, output to `log`: return code, wall seconds and peak RSS of its process tree."""
    import psutil

    with open(log, "w") as out:
        t0 = time.perf_counter()
        busy0, total0 = cpu_seconds()
        own0 = sum(os.times()[:2])
        p = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        peak, done = 0, threading.Event()

        def poll():
            nonlocal peak
            proc = psutil.Process(p.pid)
            while not done.is_set():
                peak = max(peak, tree_memory(proc))
                done.wait(0.2)

        sampler = threading.Thread(target=poll, daemon=True)
        sampler.start()
        timer = threading.Timer(timeout, p.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): take the timed process down with us
            p.kill()
            p.wait()
            raise
        finally:
            timer.cancel()
            done.set()
            sampler.join()
        p.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    busy1, total1 = cpu_seconds()
    # CPU the rest of the machine used meanwhile: busy time less the timed tree's (its waited-for
    # descendants included) and this process's own (the memory sampler).
    others = (busy1 - busy0) - (usage.ru_utime + usage.ru_stime) - (sum(os.times()[:2]) - own0)
    return {"rc": p.returncode, "wall_s": wall, "peak_rss_mb": max(peak / 2**20, usage.ru_maxrss / 1024),
            "others_cpu_share": max(0.0, others / max(total1 - total0, 1e-9)), "timed_out": wall >= timeout}


def cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores summed (/proc/stat)."""
    with open("/proc/stat") as f:
        jiffies = [int(v) for v in f.readline().split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    return (sum(jiffies) - jiffies[3] - jiffies[4]) / tick, sum(jiffies) / tick  # idle and iowait are not busy


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of the machine's CPU that was busy over the next `seconds` (other work, before we start)."""
    busy0, total0 = cpu_seconds()
    time.sleep(seconds)
    busy1, total1 = cpu_seconds()
    return (busy1 - busy0) / max(total1 - total0, 1e-9)


def last_error(log_tail: str) -> str:
    """The distinct exception lines (`SomeError: message`) of a log tail, else its last line."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    errors = list(dict.fromkeys(m.group(0) for m in map(EXCEPTION_LINE.search, lines) if m))
    return "; ".join(errors[-2:]) or (lines or ["?"])[-1]


def tail(path: Path, lines: int = 25) -> str:
    """The last `lines` lines of a log, traceback frames left out."""
    kept = [line for line in path.read_text(errors="replace").splitlines()
            if not line.replace("[rank0]:", "").startswith("  ")]
    return "\n".join(kept[-lines:])


def child_env(threads: int) -> dict:
    """The environment of every timed process: same threads, offline, no tokenizer thread pool."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), TOKENIZERS_PARALLELISM="false",
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1", WANDB_MODE="offline",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    return env


# ---------------------------------------------------------------------- TRL side (worker process)
def trl_worker(args) -> None:
    """Train `steps + 1` GRPO steps with TRL; write per-step timings to args.result."""
    import torch

    torch.set_num_threads(args.threads)  # before any engine exists (vLLM freezes it afterwards)
    import datasets
    import transformers
    import trl
    from trl import GRPOConfig, GRPOTrainer

    import rewards
    from rlpipe.rollout.vllm_engine import needs_mla_disable
    from rlpipe.tokenizer import load_tokenizer

    transformers.logging.set_verbosity_error()
    model_dir = Path(args.model)
    tokenizer = load_tokenizer(model_dir)
    dataset = datasets.Dataset.from_list(trl_rows(Path(args.data), tokenizer))
    reward = rewards.combine(REWARD_WEIGHTS)
    reward.__name__ = "task_accuracy+0.2format"  # TRL names its reward metrics after the function

    if args.trl_mode == "vllm":
        # The engine TRL builds itself gets none of rlpipe's vLLM settings; only these come through
        # the environment: the MLA switch this checkpoint's latent size needs (vllm_engine.py), and
        # a 1 GiB KV cache (TRL sizes it as a share of *host* memory on CPU, 0.3 by default).
        os.environ["VLLM_MLA_DISABLE"] = "1" if needs_mla_disable(model_dir) else "0"
        os.environ["VLLM_CPU_KVCACHE_SPACE"] = "1"
    batch = args.prompts_per_step * args.group_size
    config = GRPOConfig(
        output_dir=str(Path(args.scratch) / "trl-out"), report_to="none", save_strategy="no", eval_strategy="no",
        logging_steps=1, disable_tqdm=True, use_cpu=True, bf16=False, seed=SEED,
        max_steps=args.steps + 1, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_generations=args.group_size, max_completion_length=args.max_new_tokens, temperature=1.0, top_p=1.0,
        loss_type="dapo", beta=0.0, num_iterations=1, learning_rate=1e-6,
        use_vllm=args.trl_mode == "vllm", vllm_mode="colocate",
        use_transformers_continuous_batching=args.trl_mode == "transformers-cb",
        model_init_kwargs={"dtype": torch.float32},
    )
    t0 = time.perf_counter()
    trainer = GRPOTrainer(model=str(model_dir), reward_funcs=[reward], args=config, train_dataset=dataset,
                          processing_class=tokenizer)
    startup = time.perf_counter() - t0

    parts = {"generate": 0.0, "reward": 0.0}

    def timed(fn, part):
        def wrapper(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[part] += time.perf_counter() - t
        return wrapper

    trainer._generate = timed(trainer._generate, "generate")
    trainer._calculate_rewards = timed(trainer._calculate_rewards, "reward")
    steps: list[dict] = []

    class StepTimer(transformers.TrainerCallback):
        def on_step_begin(self, *_, **__):
            parts.update(generate=0.0, reward=0.0)
            self.t = time.perf_counter()

        def on_step_end(self, *_, **__):
            seconds = time.perf_counter() - self.t
            steps.append({"step_seconds": seconds, "time/generate": parts["generate"], "time/reward": parts["reward"],
                          "time/train": seconds - parts["generate"] - parts["reward"]})

    trainer.add_callback(StepTimer())
    t0 = time.perf_counter()
    trainer.train()
    train_wall = time.perf_counter() - t0
    logs = [row for row in trainer.state.log_history if "completions/mean_length" in row]
    assert len(logs) == len(steps), (len(logs), len(steps))
    for step, row in zip(steps, logs):
        step["num_completion_tokens"] = row["completions/mean_length"] * batch
        step["num_prompts"] = args.prompts_per_step
        step["reward"] = row.get("reward")
        step["clipped_ratio"] = row.get("completions/clipped_ratio")
        step["sampling_logp_difference_mean"] = row.get("sampling/sampling_logp_difference/mean")
    Path(args.result).write_text(json.dumps({
        "mode": args.trl_mode, "trl_version": trl.__version__, "startup_s": startup, "train_wall_s": train_wall,
        "steps": steps}))


# ---------------------------------------------------------------------- rollouts alone (worker process)
def rollout_worker(args) -> None:
    """Sample one batch with one backend `repeats` times after a warm-up; write tokens/s to args.result."""
    import torch

    torch.set_num_threads(args.threads)
    from rlpipe.rollout import Sampling, make_engine
    from rlpipe.tokenizer import load_tokenizer

    model_dir = Path(args.model)
    tokenizer = load_tokenizer(model_dir)
    rows = trl_rows(Path(args.data), tokenizer)[: args.prompts_per_step]
    prompt_ids = [tokenizer(r["prompt"], add_special_tokens=False)["input_ids"] for r in rows]
    G, L = args.group_size, args.max_new_tokens
    t0 = time.perf_counter()
    if args.backend == "transformers":
        from transformers import DeepseekV3ForCausalLM

        model = DeepseekV3ForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
        width = max(map(len, prompt_ids))
        pad = tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompt_ids])  # left padding
        mask = (torch.arange(width) >= torch.tensor([width - len(p) for p in prompt_ids])[:, None]).long()

        def sample() -> int:
            with torch.no_grad():
                out = model.generate(ids, attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                                     max_new_tokens=L, num_return_sequences=G, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=pad)
            new = out[:, width:]
            # tokens up to and including each row's EOS (rows that ended early are padded afterwards)
            ended = (new == tokenizer.eos_token_id).int().cumsum(1)
            return int(((ended == 0) | ((ended == 1) & (new == tokenizer.eos_token_id))).sum())
    else:
        engine = make_engine(args.backend, model_dir, seed=SEED)

        def sample() -> int:
            out = engine.generate(prompt_ids, G, Sampling(temperature=1.0, max_new_tokens=L))
            return sum(map(len, out.token_ids))
    startup = time.perf_counter() - t0
    sample()  # warm-up
    calls = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        tokens = sample()
        calls.append({"seconds": time.perf_counter() - t, "tokens": tokens})
    best = max(calls, key=lambda c: c["tokens"] / c["seconds"])
    Path(args.result).write_text(json.dumps({"backend": args.backend, "startup_s": startup, "calls": calls,
                                             "tokens_per_s": best["tokens"] / best["seconds"]}))


# ---------------------------------------------------------------------- the two sides, from the parent
class SideFailed(RuntimeError):
    """One side of the benchmark did not produce timings; `why` holds the error and its log's tail."""

    def __init__(self, side: str, why: str):
        super().__init__(f"{side} side failed: {why}")
        self.side, self.why = side, why


def worker_args(args, data: Path) -> list[str]:
    return ["--model", str(args.model), "--data", str(data), "--scratch", args.scratch,
            "--prompts-per-step", str(args.prompts_per_step), "--group-size", str(args.group_size),
            "--max-new-tokens", str(args.max_new_tokens), "--steps", str(args.steps),
            "--threads", str(args.threads), "--repeats", str(args.repeats)]


def ours_command(args, runs_dir: Path, data: Path) -> list[str]:
    """Our stage-2 recipe on the benchmark's settings. Beyond the issue's overrides: the reward TRL gets
    (the recipe adds a language term), no DAPO refill rounds (TRL generates once per step), no wandb
    (TRL logs to none), and the thread count every timed process gets."""
    weights = "{" + ", ".join(f"{k}: {v}" for k, v in REWARD_WEIGHTS.items()) + "}"
    return [sys.executable, "-m", "rlpipe.cli", "run", str(RECIPE), "run=bench", f"runs_dir={runs_dir}",
            f"init_from={args.model}", f"data_dir={data}", f"train.max_steps={args.steps + 1}",
            f"rollout.group_size={args.group_size}", f"rollout.prompts_per_step={args.prompts_per_step}",
            f"rollout.max_new_tokens={args.max_new_tokens}", "eval.enabled=false", "sampler.curriculum=none",
            "sampler.priority=false", f"rewards.weights={weights}", "grpo.dynamic_sampling=false",
            "logging.report_to=none", f"train.num_threads={args.threads}", "train.log_every=1", *args.ours_args]


def run_ours(args, data: Path, round_: int, env: dict) -> dict:
    runs_dir = Path(args.scratch) / f"ours-{round_}"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs_dir.mkdir(parents=True)
    log = Path(args.scratch) / f"ours-{round_}.log"
    proc = run_process(ours_command(args, runs_dir, data), env, log, args.timeout)
    metrics = runs_dir / "bench" / "stage-2" / "metrics.jsonl"
    if proc["rc"] != 0 or not metrics.is_file():
        why = "timed out" if proc["timed_out"] else f"exit code {proc['rc']}"
        raise SideFailed("ours", f"{why}; log {log}:\n{tail(log)}")
    steps = [row for row in map(json.loads, metrics.read_text().splitlines()) if "step_seconds" in row]
    if len(steps) != args.steps + 1:
        raise SideFailed("ours", f"{metrics} has {len(steps)} rows with step_seconds, expected {args.steps + 1}")
    missing = sorted({k for s in steps for k in OURS_KEYS if k not in s})
    if missing:
        raise SideFailed("ours", f"{metrics} lacks {', '.join(missing)} in some step rows (the benchmark reads "
                                 f"{', '.join(OURS_KEYS)}, and time/train where logged)")
    shutil.rmtree(runs_dir / "bench" / "stage-2" / "checkpoints", ignore_errors=True)  # ~100 MB a run
    return {**proc, "steps": steps, "outside_steps_s": proc["wall_s"] - sum(s["step_seconds"] for s in steps)}


def run_worker(args, data: Path, env: dict, name: str, flags: list[str]) -> tuple[dict, Path, dict | None]:
    """Run this script as `--worker ...` with `flags`: (process record, its log, its JSON result or None)."""
    log = Path(args.scratch) / f"{name}.log"
    result = Path(args.scratch) / f"{name}.json"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--worker", *flags, "--result", str(result), *worker_args(args, data)]
    proc = run_process(cmd, env, log, args.timeout)
    ok = proc["rc"] == 0 and result.is_file()
    return proc, log, json.loads(result.read_text()) if ok else None


def run_trl(args, data: Path, round_: int, env: dict, mode: str) -> dict:
    proc, log, result = run_worker(args, data, env, f"trl-{mode}-{round_}", ["trl", "--trl-mode", mode])
    if result is None:
        why = "timed out" if proc["timed_out"] else f"exit code {proc['rc']}"
        raise SideFailed(f"trl ({mode})", f"{why}; log {log}:\n{tail(log)}")
    run = {**proc, **result}
    run["outside_steps_s"] = proc["wall_s"] - sum(s["step_seconds"] for s in run["steps"])
    return run


def run_rollout(args, data: Path, backend: str, env: dict) -> dict:
    proc, log, result = run_worker(args, data, env, f"rollout-{backend}", ["rollout", "--backend", backend])
    if result is None:
        return {"error": f"exit code {proc['rc']}; log {log}:\n{tail(log, 8)}"}
    return {**result, "others_cpu_share": proc["others_cpu_share"]}


def step_parts(step: dict) -> dict:
    """A logged step's generate / reward / train / other seconds. Generation includes the weight push to
    the engine (TRL's `_generate` holds its weight sync); train is `time/train` where the trainer logs
    it, else the rest of the step; other is whatever the logged parts leave of `step_seconds`."""
    generate = step["time/generate"] + step.get("push_seconds", 0.0)
    reward = step["time/reward"]
    train = step.get("time/train", step["step_seconds"] - generate - reward)
    return {"generate_s": generate, "reward_s": reward, "train_s": train,
            "other_s": step["step_seconds"] - generate - reward - train}


def summarise(run: dict, flops_per_token: float, prompt_tokens_per_sample: float, group_size: int,
              peak_flops: float) -> dict:
    """One run's timed steps (the warm-up step dropped): means per step and the training part's FLOP/s."""
    timed = run["steps"][1:]
    parts = [step_parts(s) for s in timed]
    completion = sum(s["num_completion_tokens"] for s in timed)
    trained = completion + sum(s["num_prompts"] for s in timed) * group_size * prompt_tokens_per_sample
    seconds = sum(s["step_seconds"] for s in timed)
    train_flops_per_s = flops_per_token * trained / sum(p["train_s"] for p in parts)
    return {"seconds_per_step": seconds / len(timed), "tokens_per_s": completion / seconds,
            "peak_rss_mb": run["peak_rss_mb"], **{k: statistics.fmean(p[k] for p in parts) for k in parts[0]},
            "train_logged": "time/train" in timed[0], "completion_tokens_per_step": completion / len(timed),
            "train_flops_per_s": train_flops_per_s, "train_share_of_matmul_peak": train_flops_per_s / peak_flops,
            "outside_steps_s": run["outside_steps_s"], "wall_s": run["wall_s"],
            "others_cpu_share": run["others_cpu_share"]}


def median_round(rounds: list[dict]) -> dict:
    """The round with the median seconds_per_step (a real round, so its parts add up)."""
    ordered = sorted(rounds, key=lambda r: r["seconds_per_step"])
    return ordered[(len(ordered) - 1) // 2]


# ---------------------------------------------------------------------- main
def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "runs" / "tiny" / "stage-1")
    parser.add_argument("--data", type=Path, default=ROOT / "runs" / "tiny" / "data")
    parser.add_argument("--prompts-per-step", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run (each run adds a warm-up step)")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds of ours and TRL")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every timed process")
    parser.add_argument("--trl-mode", choices=TRL_MODES, default="vllm",
                        help="TRL's generation backend to try first (vllm: its colocate mode)")
    parser.add_argument("--ours-args", nargs="*", default=[], help="extra key=value overrides for our recipe")
    parser.add_argument("--skip-rollouts", action="store_true", help="leave out the rollout tokens/s table")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per subprocess")
    parser.add_argument("--scratch", default=str(Path(tempfile.gettempdir()) / "bench_grpo"),
                        help="working folder: the prompt subset, each run's logs and output")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--worker", choices=["trl", "rollout"], help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.model = args.model.resolve()
    if args.worker == "trl":
        return trl_worker(args)
    if args.worker == "rollout":
        return rollout_worker(args)
    if args.group_size < 2 or args.steps < 1 or args.repeats < 1:
        parser.error("--group-size needs at least 2 (group advantages), --steps and --repeats at least 1")

    began = time.perf_counter()
    check_inputs(args.model, args.data)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so a killed benchmark stops its subprocess
    busy = cpu_busy()
    if busy > BUSY:
        print(f"WARNING: the CPUs are {100 * busy:.0f}% busy before the benchmark starts; its timings will be "
              f"slower and noisier than on a quiet machine", flush=True)
    Path(args.scratch).mkdir(parents=True, exist_ok=True)
    data = make_bench_data(args.data.resolve(), Path(args.scratch) / "data", args.prompts_per_step * (args.steps + 1))
    env = child_env(args.threads)

    import torch

    torch.set_num_threads(args.threads)
    from _flops import matmul_peak_flops

    peak = matmul_peak_flops()
    from rlpipe.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(args.model)
    prompt_tokens = statistics.fmean(len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"])
                                     for r in trl_rows(data, tokenizer))
    active, total = active_parameters(args.model)
    flops_per_token = 6 * active
    print(f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s ({args.threads} threads); model {total / 1e6:.2f}M parameters, "
          f"{active / 1e6:.2f}M active per token; mean prompt {prompt_tokens:.0f} tokens", flush=True)

    # TRL's mode: the first of TRL_MODES (from --trl-mode on) that trains here; why the others failed.
    trl_modes = list(TRL_MODES[TRL_MODES.index(args.trl_mode):])
    trl_failed_modes: dict[str, str] = {}
    rounds = {"ours": [], "trl": []}
    failures = {}
    for r in range(args.repeats):
        order = ("ours", "trl") if r % 2 == 0 else ("trl", "ours")
        for side in order:
            if side in failures:
                continue
            print(f"round {r + 1}/{args.repeats}: {side} ...", flush=True)
            try:
                if side == "ours":
                    run = run_ours(args, data, r, env)
                else:
                    while True:
                        try:
                            run = run_trl(args, data, r, env, trl_modes[0])
                            break
                        except SideFailed as err:
                            if rounds["trl"] or len(trl_modes) == 1:
                                raise
                            trl_failed_modes[trl_modes.pop(0)] = err.why
                            print(f"  TRL failed here ({last_error(err.why)}); trying TRL with {trl_modes[0]}",
                                  flush=True)
            except SideFailed as err:
                failures[side] = err.why
                print(str(err), flush=True)
                continue
            rounds[side].append(summarise(run, flops_per_token, prompt_tokens, args.group_size, peak))
            if side == "trl":
                rounds[side][-1].update(mode=run["mode"], trl_version=run["trl_version"], startup_s=run["startup_s"],
                                        sampling_logp_difference_mean=[s["sampling_logp_difference_mean"]
                                                                       for s in run["steps"]])
            s = rounds[side][-1]
            print(f"  {s['seconds_per_step']:.2f} s/step, {s['tokens_per_s']:.0f} completion tokens/s "
                  f"(generate {s['generate_s']:.2f} s, reward {s['reward_s']:.2f} s, train {s['train_s']:.2f} s), "
                  f"peak RSS {s['peak_rss_mb']:.0f} MB; other work used {100 * s['others_cpu_share']:.0f}% of the CPUs "
                  f"meanwhile", flush=True)

    rollouts = {}
    if not args.skip_rollouts:
        for backend in ("vllm", "local", "transformers"):
            print(f"rollouts: {backend} ...", flush=True)
            rollouts[backend] = run_rollout(args, data, backend, env)

    result = {
        "settings": {"model": str(args.model), "prompts_per_step": args.prompts_per_step,
                     "group_size": args.group_size, "max_new_tokens": args.max_new_tokens, "steps": args.steps},
        "ours": None, "trl": None, "speedup": None,
        "trl_mode": trl_modes[0], "trl_failed_modes": trl_failed_modes, "failures": failures,
        "threads": args.threads, "repeats": args.repeats, "matmul_peak_flops": peak, "cpu_busy_before": busy,
        "parameters": total, "active_parameters": active, "mean_prompt_tokens": prompt_tokens,
        "rounds": rounds, "rollout_tokens_per_s": rollouts,
        "bench_seconds": None,
    }
    keys = ("seconds_per_step", "tokens_per_s", "peak_rss_mb")
    for side in ("ours", "trl"):
        if rounds[side] and side not in failures:
            med = median_round(rounds[side])
            result[side] = {k: med[k] for k in keys}
            result[side]["breakdown"] = {k: med[k] for k in med if k not in keys}
    if result["ours"] and result["trl"]:
        # Completion lengths differ between sides (sampling stops at EOS), so throughput is the fair ratio.
        result["speedup"] = result["ours"]["tokens_per_s"] / result["trl"]["tokens_per_s"]
        result["speedup_seconds_per_step"] = result["trl"]["seconds_per_step"] / result["ours"]["seconds_per_step"]
    result["bench_seconds"] = time.perf_counter() - began
    print_tables(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {args.out}")
    if failures:
        sys.exit(1)
    return result


def print_tables(r: dict) -> None:
    s = r["settings"]
    print(f"\n## GRPO benchmark: {s['prompts_per_step']} prompts x {s['group_size']} samples per step, "
          f"<= {s['max_new_tokens']} new tokens, {s['steps']} timed steps (+1 warm-up) x {r['repeats']} rounds, "
          f"{r['threads']} threads, fp32 matmul peak {r['matmul_peak_flops'] / 1e9:.0f} GFLOP/s\n")
    print(f"TRL generation: {r['trl_mode']}")
    for mode, why in r["trl_failed_modes"].items():
        print(f"  (TRL with {mode} failed here: {last_error(why)})")
    print("\n| side | s/step | generate | reward | train | other | train GFLOP/s (of peak) | completion tokens/step | "
          "completion tokens/s | peak RSS (MB) | start-up + exit (s) | s/step over rounds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for side in ("ours", "trl"):
        if side in r["failures"]:
            print(f"| {side} | FAILED: {last_error(r['failures'][side])} |")
            continue
        if not r["rounds"][side]:
            continue
        m = median_round(r["rounds"][side])
        spread = ", ".join(f"{x['seconds_per_step']:.2f}" + ("*" if x["others_cpu_share"] > BUSY else "")
                           for x in r["rounds"][side])
        t = m["seconds_per_step"]
        g, rw, tr, o = (f"{m[k]:.2f} ({100 * m[k] / t:.0f}%)" for k in ("generate_s", "reward_s", "train_s", "other_s"))
        print(f"| {side} | {t:.2f} | {g} | {rw} | {tr} | {o} | "
              f"{m['train_flops_per_s'] / 1e9:.1f} ({100 * m['train_share_of_matmul_peak']:.1f}%) | "
              f"{m['completion_tokens_per_step']:.0f} | {m['tokens_per_s']:.0f} | {m['peak_rss_mb']:.0f} | "
              f"{m['outside_steps_s']:.1f} | {spread} |")
    print(f"\n(*: other work used more than {100 * BUSY:.0f}% of the CPUs during that round; "
          f"the median round is reported)")
    if r["failures"]:
        print(f"\nno speedup: {', '.join(r['failures'])} failed (the JSON's `failures` holds each log's tail)")
    if r["speedup"]:
        print(f"\nspeedup (completion tokens/s, ours / TRL): {r['speedup']:.2f}x; "
              f"seconds per step, TRL / ours: {r['speedup_seconds_per_step']:.2f}x")
    if r["rollout_tokens_per_s"]:
        print(f"\nRollouts alone, one batch ({s['prompts_per_step']} prompts x {s['group_size']}, "
              f"<= {s['max_new_tokens']} tokens, temperature 1):\n")
        print("| backend | tokens/s (best call) | tokens per call | engine start (s) |")
        print("|---|---:|---:|---:|")
        for name, x in r["rollout_tokens_per_s"].items():
            if "error" in x:
                print(f"| {name} | FAILED: {x['error'].splitlines()[0]} | | |")
            else:
                mark = "*" if x["others_cpu_share"] > BUSY else ""
                print(f"| {name} | {x['tokens_per_s']:.0f}{mark} | {statistics.fmean(c['tokens'] for c in x['calls']):.0f} "
                      f"| {x['startup_s']:.1f} |")


if __name__ == "__main__":
    main()
