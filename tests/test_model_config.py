"""Model config: presets have the promised sizes and shapes; impossible shapes fail naming the field."""

import pytest
import torch

from rlpipe.model import ConfigError, ModelConfig, Transformer
from rlpipe.model.config import VLLM_HEAD_SIZES


def _params(config: ModelConfig) -> int:
    with torch.device("meta"):
        return Transformer(config).num_parameters()


def test_presets_sizes_and_vllm_shapes():
    tiny = ModelConfig.preset("tiny")
    assert 5e6 <= _params(tiny) <= 20e6
    assert tiny.qk_head_dim in VLLM_HEAD_SIZES and not tiny.uses_vllm_mla_kernel
    assert tiny.first_k_dense_replace == 1 and tiny.num_nextn_predict_layers == 1
    assert 100e6 <= _params(ModelConfig.preset("small")) <= 300e6
    kernel = ModelConfig.preset("tiny-mla-kernel")
    assert kernel.kv_lora_rank == 512 and kernel.qk_rope_head_dim == 64 and kernel.uses_vllm_mla_kernel
    dense = ModelConfig.preset("dense-tiny")
    assert dense.first_k_dense_replace == dense.num_hidden_layers and dense.n_moe_layers == 0


def test_preset_overrides_and_unknown_names():
    assert ModelConfig.preset("tiny", num_hidden_layers=6).num_hidden_layers == 6
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        ModelConfig.preset("huge")
    with pytest.raises(ConfigError, match=r"unknown field\(s\) \['hidden'\]"):
        ModelConfig.preset("tiny", hidden=3)


@pytest.mark.parametrize("field,value,message", [
    ("qk_rope_head_dim", 33, "must be even"),
    ("n_group", 3, "must divide n_routed_experts"),
    ("topk_group", 5, "between 1 and n_group"),
    ("num_experts_per_tok", 9, "between 1 and n_routed_experts"),
    ("kv_lora_rank", 0, "positive integer"),
    ("n_routed_experts", 0, "first_k_dense_replace = num_hidden_layers"),
    ("pad_token_id", 5000, "below vocab_size"),
    ("q_lora_rank", -1, "positive integer or null"),
])
def test_impossible_shapes_name_the_field(field, value, message):
    with pytest.raises(ConfigError, match=rf"field '{field}' = {value} is invalid: .*{message}"):
        ModelConfig.preset("tiny", **{field: value})


def test_group_limit_that_leaves_too_few_experts():
    with pytest.raises(ConfigError, match="num_experts_per_tok"):
        ModelConfig.preset("tiny", n_group=4, topk_group=1, num_experts_per_tok=3)
