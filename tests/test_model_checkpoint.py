"""Checkpoint format: exact save -> load round trip, the HF layout vLLM needs, and clear errors."""

import json

import pytest
import torch
from safetensors import safe_open

from rlpipe.model import CheckpointError, ModelConfig, Transformer, load_pretrained
from rlpipe.model.cli import main as init_model_main


def _trained_model(config: ModelConfig) -> Transformer:
    """A model whose parameters AND router biases differ from their initial values."""
    torch.manual_seed(0)
    model = Transformer(config)
    ids = torch.randint(0, config.vocab_size, (2, 16))
    model(ids, labels=ids).loss.backward()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    model.update_expert_bias(0.05)
    return model


def test_round_trip_is_exact_including_buffers_and_mtp(tmp_path):
    config = ModelConfig.preset("tiny", vocab_size=300, q_lora_rank=32, num_nextn_predict_layers=2)
    model = _trained_model(config)
    model.save_pretrained(tmp_path)
    loaded = load_pretrained(tmp_path)
    assert loaded.config == config
    before, after = model.state_dict(), loaded.state_dict()
    assert set(before) == set(after)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert any(k.endswith("e_score_correction_bias") and before[k].abs().sum() > 0 for k in before)
    ids = torch.randint(0, 300, (2, 12))
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(ids, labels=ids).loss, loaded(ids, labels=ids).loss)


def test_saved_folder_has_the_hf_layout_vllm_reads(tmp_path):
    config = ModelConfig.preset("tiny", vocab_size=300)
    Transformer(config).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["architectures"] == ["DeepseekV3ForCausalLM"] and raw["model_type"] == "deepseek_v3"
    assert raw["topk_method"] == "noaux_tc" and raw["scoring_func"] == "sigmoid"
    assert raw["num_key_value_heads"] == raw["num_attention_heads"] and raw["tie_word_embeddings"] is False
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    L = config.num_hidden_layers
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in keys  # one key per expert
    assert "model.layers.1.mlp.gate.e_score_correction_bias" in keys
    assert not any(k.endswith("experts.gate_up_proj") for k in keys)
    assert "model.layers.0.mlp.gate_proj.weight" in keys  # dense first layer
    for name in ("enorm.weight", "hnorm.weight", "eh_proj.weight", "shared_head.norm.weight",
                 "shared_head.head.weight", "embed_tokens.weight", "self_attn.kv_b_proj.weight"):
        assert f"model.layers.{L}.{name}" in keys
    assert not any(k.startswith(f"model.layers.{L + 1}.") for k in keys)


def test_bf16_load_keeps_router_bias_and_counters_fp32(tmp_path):
    config = ModelConfig.preset("tiny", vocab_size=300)
    trained = _trained_model(config)
    trained.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path, dtype=torch.bfloat16)
    assert model.embed_tokens.weight.dtype == torch.bfloat16
    for ours, theirs in zip(model.moe_layers, trained.moe_layers):
        assert ours.gate.e_score_correction_bias.dtype == torch.float32
        assert torch.equal(ours.gate.e_score_correction_bias, theirs.gate.e_score_correction_bias)
        assert ours.tokens_per_expert.dtype == torch.float32
    ids = torch.randint(0, 300, (2, 8))
    assert model(ids, labels=ids).loss.dtype == torch.float32  # CE is taken in fp32


def test_missing_folder_and_files_each_give_one_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_pretrained(tmp_path / "nope")
    Transformer(ModelConfig.preset("tiny", vocab_size=300)).save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors: file missing"):
        load_pretrained(tmp_path)
    (tmp_path / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"config\.json: file missing"):
        load_pretrained(tmp_path)


def test_config_that_disagrees_with_weights_names_the_tensor(tmp_path):
    Transformer(ModelConfig.preset("tiny", vocab_size=300)).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["kv_lora_rank"] = 32
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"kv_a_proj_with_mqa.*shape .*config\.json"):
        load_pretrained(tmp_path)


def test_impossible_config_names_the_field(tmp_path):
    Transformer(ModelConfig.preset("tiny", vocab_size=300)).save_pretrained(tmp_path)
    raw = json.loads((tmp_path / "config.json").read_text())
    raw["n_group"] = 3  # does not divide 8 experts
    (tmp_path / "config.json").write_text(json.dumps(raw))
    with pytest.raises(CheckpointError, match=r"config\.json: field 'n_group' = 3 is invalid"):
        load_pretrained(tmp_path)


def test_checkpoint_of_another_architecture_is_rejected(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama",
                                                      "hidden_size": 64}))
    with pytest.raises(CheckpointError, match="not a DeepSeek-V3 checkpoint"):
        load_pretrained(tmp_path)


def test_folder_resaved_without_mtp_explains_the_fix(tmp_path):
    config = ModelConfig.preset("tiny", vocab_size=300)
    Transformer(config).save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file
    weights = load_file(str(tmp_path / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if not k.startswith("model.layers.4.")},
              str(tmp_path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="num_nextn_predict_layers to 0"):
        load_pretrained(tmp_path)


def test_init_model_cli_writes_checkpoint_with_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from rlpipe.tokenizer import train_tokenizer

    tok = train_tokenizer(["the quick brown fox jumps over the lazy dog 12 + 30 = 42"] * 20, 320, tmp_path / "tok")
    out = tmp_path / "ckpt"
    assert init_model_main(["--preset", "tiny", "--tokenizer", str(tmp_path / "tok"), "--out", str(out),
                            "--seed", "3", "--set", "num_hidden_layers=2"]) == 0
    model = load_pretrained(out)
    assert model.config.vocab_size == len(tok) and model.config.num_hidden_layers == 2
    assert model.config.eos_token_id == tok.eos_token_id and model.config.pad_token_id == tok.pad_token_id
    assert len(AutoTokenizer.from_pretrained(str(out))) == len(tok)
    # same seed -> same weights; another seed -> different weights
    init_model_main(["--preset", "tiny", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "b"),
                     "--seed", "3", "--set", "num_hidden_layers=2"])
    init_model_main(["--preset", "tiny", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "c"),
                     "--seed", "4", "--set", "num_hidden_layers=2"])
    a, b, c = (load_pretrained(p).lm_head.weight for p in (out, tmp_path / "b", tmp_path / "c"))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_init_model_cli_reports_bad_input(tmp_path, capsys):
    assert init_model_main(["--tokenizer", str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert "folder does not exist" in capsys.readouterr().err
