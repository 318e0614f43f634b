"""Model configuration: one dataclass with DeepSeek-V3 / Hugging Face field names, presets, validation.

- `ModelConfig`: every architectural field under the name `config.json` of a DeepSeek-V3 checkpoint
  uses (`kv_lora_rank`, `qk_rope_head_dim`, `n_routed_experts`, ...), plus the training-only knobs
  (`mtp_loss_weight` = the paper's lambda, `balance_loss_alpha`, `bias_update_speed` = gamma) that
  are saved under an `rlpipe` key so transformers and vLLM ignore them.
- `ModelConfig.preset(name, **overrides)`: `tiny` (CPU, ~7M parameters), `small` (one GPU, ~200M),
  `tiny-mla-kernel` (kv_lora_rank 512 + qk_rope_head_dim 64, the only latent size vLLM's CPU MLA
  kernel accepts), `dense-tiny` (every layer dense: the distillation student).
- `validate()`: rejects impossible shapes with one message naming the field and the fix.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from rlpipe.errors import ConfigError  # re-exported: the one user-error family (rlpipe.errors)

# vLLM's ordinary (non-MLA) CPU attention accepts these head sizes (platform-notes.md).
VLLM_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256)
# vLLM's CPU MLA kernel accepts only the full DeepSeek latent: kv_lora_rank + qk_rope_head_dim.
VLLM_CPU_MLA_SIZE = 576


@dataclass
class ModelConfig:
    """DeepSeek-V3 architecture (MLA + DeepSeekMoE + MTP), field names as in HF `config.json`."""

    vocab_size: int = 4096
    hidden_size: int = 256
    intermediate_size: int = 768  # dense SwiGLU width (layers < first_k_dense_replace)
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    # MLA
    q_lora_rank: int | None = None  # None: plain q_proj (no query compression)
    kv_lora_rank: int = 64
    qk_nope_head_dim: int = 32
    qk_rope_head_dim: int = 32
    v_head_dim: int = 64
    # DeepSeekMoE
    n_routed_experts: int = 8
    n_shared_experts: int = 1
    num_experts_per_tok: int = 2
    moe_intermediate_size: int = 128
    first_k_dense_replace: int = 1
    n_group: int = 1
    topk_group: int = 1
    routed_scaling_factor: float = 1.0
    norm_topk_prob: bool = True
    # MTP
    num_nextn_predict_layers: int = 1
    # RoPE, norms, init
    rope_theta: float = 10000.0
    max_position_embeddings: int = 1024
    rms_norm_eps: float = 1e-6
    initializer_range: float = 0.02
    # special tokens (the CLI overwrites them from the tokenizer)
    bos_token_id: int | None = 0
    eos_token_id: int | None = 1
    pad_token_id: int | None = 2
    # training-only knobs (saved under config.json["rlpipe"])
    mtp_loss_weight: float = 0.3  # lambda: loss = main + lambda / D * sum_k mtp_k
    balance_loss_alpha: float = 1e-4  # sequence-wise balance loss weight (0 disables it)
    bias_update_speed: float = 1e-3  # gamma of auxiliary-loss-free balancing

    # ---------------------------------------------------------------- derived sizes
    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def n_moe_layers(self) -> int:
        """MoE layers in the main stack plus MoE blocks inside the MTP modules."""
        return sum(self.is_moe_layer(i) for i in range(self.num_hidden_layers + self.num_nextn_predict_layers))

    def is_moe_layer(self, layer_idx: int) -> bool:
        """Layer `layer_idx` (MTP module k has index num_hidden_layers + k, as in vLLM) uses MoE."""
        return layer_idx >= self.first_k_dense_replace

    @property
    def uses_vllm_mla_kernel(self) -> bool:
        """True when vLLM's CPU MLA kernel can run this shape; otherwise VLLM_MLA_DISABLE=1 is needed."""
        return self.kv_lora_rank + self.qk_rope_head_dim == VLLM_CPU_MLA_SIZE

    # ---------------------------------------------------------------- presets
    @classmethod
    def preset(cls, name: str, **overrides) -> "ModelConfig":
        """A named preset with field overrides; unknown names or fields raise ConfigError."""
        if name not in PRESETS:
            raise ConfigError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        fields = dict(PRESETS[name])
        fields.update(overrides)
        return cls.from_dict(fields)

    @classmethod
    def from_dict(cls, values: dict, source: str = "model config") -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {unknown}; valid fields are {sorted(known)}")
        config = cls(**values)
        config.validate(source)
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    # ---------------------------------------------------------------- validation
    def validate(self, source: str = "model config") -> None:
        def bad(field_name: str, why: str) -> ConfigError:
            return ConfigError(f"{source}: field {field_name!r} = {getattr(self, field_name)!r} is invalid: {why}")

        positive = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_lora_rank",
                    "qk_rope_head_dim", "v_head_dim", "max_position_embeddings"]
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise bad(name, "must be a positive integer")
        if not isinstance(self.n_routed_experts, int) or self.n_routed_experts <= 0:
            raise bad("n_routed_experts", "must be >= 1 (for an all-dense model keep it and set "
                      "first_k_dense_replace = num_hidden_layers, as the dense-tiny preset does)")
        non_negative = ["qk_nope_head_dim", "n_shared_experts", "first_k_dense_replace",
                        "num_nextn_predict_layers", "intermediate_size", "moe_intermediate_size"]
        for name in non_negative:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise bad(name, "must be an integer >= 0")
        if self.q_lora_rank is not None and (not isinstance(self.q_lora_rank, int) or self.q_lora_rank <= 0):
            raise bad("q_lora_rank", "must be a positive integer or null (plain q_proj)")
        if self.qk_rope_head_dim % 2:
            raise bad("qk_rope_head_dim", "RoPE rotates pairs of dimensions, so it must be even")
        if self.first_k_dense_replace > 0 and self.intermediate_size <= 0:
            raise bad("intermediate_size", "dense layers exist (first_k_dense_replace > 0) so it must be > 0")
        if self.n_moe_layers > 0:
            if self.moe_intermediate_size <= 0:
                raise bad("moe_intermediate_size", "MoE layers exist so it must be > 0")
            if not 1 <= self.num_experts_per_tok <= self.n_routed_experts:
                raise bad("num_experts_per_tok", f"must be between 1 and n_routed_experts ({self.n_routed_experts})")
            if self.n_group <= 0 or self.n_routed_experts % self.n_group:
                raise bad("n_group", f"must divide n_routed_experts ({self.n_routed_experts})")
            per_group = self.n_routed_experts // self.n_group
            if self.n_group > 1 and per_group < 2:
                raise bad("n_group", "group scores sum each group's top-2 experts, so groups need >= 2 experts")
            if not 1 <= self.topk_group <= self.n_group:
                raise bad("topk_group", f"must be between 1 and n_group ({self.n_group})")
            if self.num_experts_per_tok > self.topk_group * per_group:
                raise bad("num_experts_per_tok", f"exceeds the experts in the kept groups "
                          f"(topk_group * n_routed_experts / n_group = {self.topk_group * per_group})")
        if self.vocab_size < 3:
            raise bad("vocab_size", "needs room for BOS/EOS/PAD")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and not 0 <= value < self.vocab_size:
                raise bad(name, f"must be a token id below vocab_size ({self.vocab_size})")
        if self.mtp_loss_weight < 0 or self.balance_loss_alpha < 0 or self.bias_update_speed < 0:
            raise ConfigError(f"{source}: mtp_loss_weight, balance_loss_alpha and bias_update_speed must be >= 0")


_TINY = dict(
    vocab_size=4096, hidden_size=256, intermediate_size=768, num_hidden_layers=4, num_attention_heads=4,
    q_lora_rank=None, kv_lora_rank=64, qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=64,
    n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=2, moe_intermediate_size=128,
    first_k_dense_replace=1, n_group=1, topk_group=1, routed_scaling_factor=1.0, num_nextn_predict_layers=1,
    max_position_embeddings=1024,
)

PRESETS: dict[str, dict] = {
    # qk_nope + qk_rope = 64 is one of vLLM's non-MLA head sizes (VLLM_MLA_DISABLE=1 path).
    "tiny": _TINY,
    # One GPU: about 200M parameters, q compression on, grouped routing as in V3 (4 groups keep 2).
    "small": dict(
        vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
        q_lora_rank=384, kv_lora_rank=256, qk_nope_head_dim=64, qk_rope_head_dim=32, v_head_dim=64,
        n_routed_experts=16, n_shared_experts=1, num_experts_per_tok=4, moe_intermediate_size=384,
        first_k_dense_replace=1, n_group=4, topk_group=2, routed_scaling_factor=2.5, num_nextn_predict_layers=1,
        max_position_embeddings=4096,
    ),
    # vLLM's CPU MLA kernel needs kv_lora_rank + qk_rope_head_dim == 576.
    "tiny-mla-kernel": {**_TINY, "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 64,
                        "v_head_dim": 64},
    # The distillation student: every layer dense, no MTP (R1 distils into plain dense models).
    "dense-tiny": {**_TINY, "first_k_dense_replace": _TINY["num_hidden_layers"], "num_nextn_predict_layers": 0},
}
