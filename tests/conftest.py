"""Test-wide settings.

One torch thread per test process: several tests start child processes (vLLM engines, two
gloo ranks, sandboxes) on a 2-core machine, and torch's default of one thread per core makes them
fight for the cores (tiny-model tests measured 30-80x slower). Set before any test imports torch.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
