"""The policy model: a small DeepSeek-V3 (MLA + DeepSeekMoE + MTP) and its HF/vLLM checkpoint format.

Public API: `ModelConfig` (presets tiny / small / tiny-mla-kernel / dense-tiny), `Transformer`,
`ModelOutput`, `load_pretrained(dir, dtype=None)`, `generate(...) -> Generation`,
`CheckpointError`, `ConfigError`, `routing_mismatch(a, b, mask=None)` (routing replay, see `moe`).
"""

from .config import ConfigError, ModelConfig
from .generate import Generation, generate
from .hf_io import CheckpointError, load_pretrained
from .moe import routing_mismatch
from .transformer import ModelOutput, Transformer

__all__ = ["ModelConfig", "ConfigError", "Transformer", "ModelOutput", "load_pretrained", "CheckpointError",
           "generate", "Generation", "routing_mismatch"]
