"""Training machinery every stage reuses.

- `loop`: the accelerate training loop (accumulation, clipping, AdamW + warm-up/cosine, expert-bias
  balancing, metrics, checkpoints, resume).
- `sft`: supervised data (tokenise, mask prompts, pack with segment ids, deterministic batches).
- `checkpoint`: atomic, verified checkpoints and exact resume.
- `lora`: optional peft LoRA with merged exports.
- `reward_model`: the stage-4 Bradley-Terry preference reward model (imported on its own).
"""

from rlpipe.train.loop import TrainResult, build_optimizer, build_scheduler, make_accelerator, seed_everything, train
from rlpipe.train.sft import SupervisedData, dataset_examples, pack

__all__ = ["TrainResult", "SupervisedData", "build_optimizer", "build_scheduler", "dataset_examples",
           "make_accelerator", "pack", "seed_everything", "train"]
