"""Subprocess driver for the trainer tests: the real loop on a very small real Transformer.

    python tests/_train_driver.py OUT_DIR [key=value ...]       (StageConfig overrides)
    accelerate launch --multi_gpu --num_processes 2 ... tests/_train_driver.py OUT_DIR ...

Data: synthetic prompt/completion sequences with a learnable rule (each completion counts on from
the prompt's last number), packed exactly as stage data is. `slow_step_s=<seconds>` (driver-only,
not a config key) sleeps in every micro-batch so a test can kill the run mid-way.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

from rlpipe.config import StageConfig, apply_override
from rlpipe.model import ModelConfig, Transformer
from rlpipe.train import SupervisedData, pack, seed_everything, train
from rlpipe.train.loop import make_accelerator
from rlpipe.train.sft import IGNORE, Example

VOCAB = 64


def tiny_model_config(**overrides) -> ModelConfig:
    """2 layers (1 dense + 1 MoE), hidden 64, 4 experts, MTP depth 1: a few hundred thousand parameters."""
    fields = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=2, kv_lora_rank=16, qk_nope_head_dim=16, qk_rope_head_dim=16,
                  v_head_dim=16, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                  max_position_embeddings=128, bos_token_id=0, eos_token_id=1, pad_token_id=2)
    fields.update(overrides)
    return ModelConfig.preset("tiny", **fields)


def synthetic_examples(n: int, seed: int) -> list[Example]:
    """Prompt = a few random tokens; completion = counting on from the last one (mod the vocab)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        prompt = [0] + rng.integers(3, VOCAB, size=int(rng.integers(2, 6))).tolist()
        start = prompt[-1]
        completion = [3 + (start - 3 + k) % (VOCAB - 3) for k in range(1, int(rng.integers(4, 14)))] + [1]
        out.append(Example(prompt + completion, [IGNORE] * len(prompt) + completion))
    return out


def main(argv: list[str]) -> None:
    out_dir = Path(argv[0])
    slow = 0.0
    cfg = StageConfig(stage="driver", run="test", runs_dir=str(out_dir.parent))
    cfg.train.seq_len, cfg.train.micro_batch_size, cfg.train.max_steps = 32, 4, 8
    cfg.train.num_threads, cfg.optim.warmup_steps, cfg.optim.lr = 1, 2, 3e-3
    for item in argv[1:]:
        if item.startswith("slow_step_s="):
            slow = float(item.split("=", 1)[1])
        else:
            apply_override(cfg, item)
    acc = make_accelerator(cfg.train)
    seed_everything(cfg.train.seed)  # the same initial weights on every process
    model = Transformer(tiny_model_config())
    rows = pack(synthetic_examples(256, cfg.train.seed), cfg.train.seq_len, pad_id=2, packing=cfg.train.packing)
    data = SupervisedData(rows, micro_batch_size=cfg.train.micro_batch_size, grad_accum=cfg.train.grad_accum,
                          world_size=acc.num_processes, seed=cfg.train.seed, max_steps=cfg.train.max_steps,
                          expert_bias_gamma=cfg.train.expert_bias_gamma)

    if slow:  # slowed steps, so a test can kill the run mid-way
        plain_loss = data.loss

        def slowed(m: torch.nn.Module, batch: dict):
            time.sleep(slow)
            return plain_loss(m, batch)

        data.loss = slowed
    result = train(model, data, cfg, out_dir=out_dir, accelerator=acc)
    if acc.is_main_process:
        result.model.save_pretrained(out_dir / "final")
        print(f"done step={result.step} resumed_from={result.resumed_from}")


if __name__ == "__main__":
    main(sys.argv[1:])
