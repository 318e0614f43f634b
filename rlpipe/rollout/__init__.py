"""Rollouts: sampling completions from the policy with vLLM.

`vllm_engine.build_llm` is the one place an engine is built (CPU workarounds included);
`vllm_engine.push_weights` moves the trainer's current weights into a running engine.
vLLM is imported lazily, so importing this package does not need it.
"""
