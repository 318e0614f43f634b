"""Checkpoint adapter: our `Transformer` <-> a Hugging Face DeepSeek-V3 folder that transformers and vLLM load.

- `save_pretrained(model, dir)`: `config.json` (`architectures: ["DeepseekV3ForCausalLM"]`,
  `topk_method: "noaux_tc"` -- without it vLLM never creates the bias --, `scoring_func: "sigmoid"`
  -- vLLM defaults to softmax --, `num_key_value_heads == num_attention_heads`, untied embeddings),
  `generation_config.json` and `model.safetensors`.
- Weights use HF names. Routed experts are written ONE KEY PER EXPERT
  (`mlp.experts.{e}.{gate,up,down}_proj.weight`): vLLM does not read the fused 3-D layout we (and
  transformers v5) keep in memory. The router bias is `mlp.gate.e_score_correction_bias`.
- MTP module k sits at layer index `num_hidden_layers + k` with vLLM's names: the decoder block's
  usual keys plus `enorm`, `hnorm`, `eh_proj`, `shared_head.norm`, and copies of the shared
  embedding (`embed_tokens`) and head (`shared_head.head`). transformers drops these on load; vLLM
  sets them aside unless MTP speculative decoding is asked for; we load them back.
- `load_pretrained(dir, dtype=None)`: reads such a folder (ours, or one transformers saved with
  fused experts) back into a `Transformer`; every user-caused problem (missing folder or file,
  another architecture, unsupported routing, shapes that disagree with config.json) ends in one
  `CheckpointError` naming the file, the field or key, and the fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from rlpipe.errors import CheckpointError, ConfigError

from .config import ModelConfig
from .transformer import Transformer

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
ARCHITECTURE = "DeepseekV3ForCausalLM"
MODEL_TYPE = "deepseek_v3"

# ModelConfig fields written to / read from config.json under the same name.
_HF_FIELDS = [
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "q_lora_rank",
    "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_routed_experts", "n_shared_experts",
    "num_experts_per_tok", "moe_intermediate_size", "first_k_dense_replace", "n_group", "topk_group",
    "routed_scaling_factor", "norm_topk_prob", "num_nextn_predict_layers", "max_position_embeddings",
    "rms_norm_eps", "initializer_range", "bos_token_id", "eos_token_id", "pad_token_id",
]
_REQUIRED = ["vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_lora_rank",
             "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim", "n_routed_experts", "num_experts_per_tok",
             "moe_intermediate_size", "intermediate_size", "first_k_dense_replace"]
_TRAINING_FIELDS = ["mtp_loss_weight", "balance_loss_alpha", "bias_update_speed"]
_MTP_OWN = ("enorm", "hnorm", "eh_proj", "shared_head")



# ---------------------------------------------------------------------- config.json
def hf_config_dict(config: ModelConfig, dtype: torch.dtype = torch.float32) -> dict:
    """The config.json transformers' DeepseekV3Config and vLLM's DeepseekV2/V3 model both read."""
    out = {"architectures": [ARCHITECTURE], "model_type": MODEL_TYPE}
    out.update({name: getattr(config, name) for name in _HF_FIELDS})
    out.update({
        "num_key_value_heads": config.num_attention_heads,
        "topk_method": "noaux_tc",
        "scoring_func": "sigmoid",
        "hidden_act": "silu",
        "moe_layer_freq": 1,
        "ep_size": 1,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "rope_parameters": {"rope_type": "default", "rope_theta": config.rope_theta},
        "rope_interleave": True,
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "use_cache": True,
        "torch_dtype": str(dtype).removeprefix("torch."),
        "rlpipe": {name: getattr(config, name) for name in _TRAINING_FIELDS},
    })
    return out


def config_from_hf(raw: dict, path: Path) -> ModelConfig:
    """Parse a DeepSeek-V3 config.json into a validated ModelConfig (errors name `path`)."""
    arch = raw.get("architectures") or []
    if raw.get("model_type") != MODEL_TYPE or ARCHITECTURE not in arch:
        raise CheckpointError(
            f"{path}: model_type {raw.get('model_type')!r}, architectures {arch} is not a DeepSeek-V3 checkpoint; "
            f"rlpipe loads only folders with model_type {MODEL_TYPE!r} and architectures [{ARCHITECTURE!r}] "
            f"(write one with `rlpipe init-model` or Transformer.save_pretrained)")
    for name, expected in (("topk_method", "noaux_tc"), ("scoring_func", "sigmoid")):
        if raw.get(name, expected) != expected:
            raise CheckpointError(f"{path}: field {name!r} = {raw[name]!r} is not supported; this model routes "
                                  f"with {name} = {expected!r} (DeepSeek-V3), set it in config.json")
    heads = raw.get("num_attention_heads")
    if raw.get("num_key_value_heads", heads) != heads:
        raise CheckpointError(f"{path}: field 'num_key_value_heads' = {raw['num_key_value_heads']} must equal "
                              f"num_attention_heads ({heads}): MLA has no grouped K/V heads")
    if raw.get("rope_scaling"):
        raise CheckpointError(f"{path}: field 'rope_scaling' = {raw['rope_scaling']!r} is not supported "
                              f"(no YaRN here); set it to null")
    missing = [name for name in _REQUIRED if name not in raw]
    if missing:
        raise CheckpointError(f"{path}: required field(s) {missing} missing; add them to config.json")
    values = {name: raw[name] for name in _HF_FIELDS if name in raw}
    rope = raw.get("rope_parameters") or {}
    values["rope_theta"] = float(rope.get("rope_theta", raw.get("rope_theta", 10000.0)))
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if isinstance(values.get(name), list):  # HF allows several EOS ids; we stop on the first
            values[name] = values[name][0] if values[name] else None
    values.update({k: v for k, v in (raw.get("rlpipe") or {}).items() if k in _TRAINING_FIELDS})
    try:
        return ModelConfig.from_dict(values, source=str(path))
    except (ConfigError, TypeError) as err:
        raise CheckpointError(str(err)) from None


# ---------------------------------------------------------------------- state-dict mapping
def to_hf_state_dict(model: Transformer, state: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Our parameter/buffer names -> HF DeepSeek-V3 names, experts split one key per expert.
    `state`: the model's state dict to convert when not `model.state_dict()` (LoRA merged in)."""
    config = model.config
    L = config.num_hidden_layers
    out: dict[str, torch.Tensor] = {}

    def put_block(prefix: str, state: dict[str, torch.Tensor]) -> None:
        for name, tensor in state.items():
            if name.endswith("mlp.experts.gate_up_proj"):
                base = prefix + name.removesuffix("gate_up_proj")
                gate, up = tensor.chunk(2, dim=1)
                for e in range(tensor.shape[0]):
                    out[f"{base}{e}.gate_proj.weight"] = gate[e].contiguous()
                    out[f"{base}{e}.up_proj.weight"] = up[e].contiguous()
            elif name.endswith("mlp.experts.down_proj"):
                base = prefix + name.removesuffix("down_proj")
                for e in range(tensor.shape[0]):
                    out[f"{base}{e}.down_proj.weight"] = tensor[e].contiguous()
            else:
                out[prefix + name] = tensor.contiguous()

    state = model.state_dict() if state is None else state
    out["model.embed_tokens.weight"] = state["embed_tokens.weight"].contiguous()
    out["model.norm.weight"] = state["norm.weight"].contiguous()
    out["lm_head.weight"] = state["lm_head.weight"].contiguous()
    for i in range(L):
        put_block(f"model.layers.{i}.", _sub(state, f"layers.{i}."))
    for k in range(config.num_nextn_predict_layers):
        prefix = f"model.layers.{L + k}."
        module = _sub(state, f"mtp.{k}.")
        put_block(prefix, _sub(module, "block."))
        for name, tensor in module.items():
            if name.startswith(_MTP_OWN):
                out[prefix + name] = tensor.contiguous()
        # vLLM's MTP layer owns copies of the shared embedding and head.
        out[prefix + "embed_tokens.weight"] = state["embed_tokens.weight"].clone()
        out[prefix + "shared_head.head.weight"] = state["lm_head.weight"].clone()
    return out


def from_hf_state_dict(config: ModelConfig, hf: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """HF names -> our names; per-expert keys (or transformers' fused 3-D ones) joined into 3-D tensors."""
    L = config.num_hidden_layers
    E = config.n_routed_experts
    ours: dict[str, torch.Tensor] = {}
    expert_parts: dict[str, dict[int, torch.Tensor]] = {}
    for name, tensor in hf.items():
        if name == "model.embed_tokens.weight":
            ours["embed_tokens.weight"] = tensor
        elif name == "model.norm.weight":
            ours["norm.weight"] = tensor
        elif name == "lm_head.weight":
            ours["lm_head.weight"] = tensor
        elif (m := re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)):
            idx, rest = int(m.group(1)), m.group(2)
            if idx < L:
                prefix = f"layers.{idx}."
            elif idx < L + config.num_nextn_predict_layers:
                if rest.startswith(("embed_tokens.", "shared_head.head.")):
                    continue  # copies of the shared embedding / head
                prefix = f"mtp.{idx - L}." + ("" if rest.startswith(_MTP_OWN) else "block.")
            else:
                continue  # MTP layers beyond num_nextn_predict_layers: unused, as in transformers
            if (e := re.fullmatch(r"mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight", rest)):
                expert_parts.setdefault(prefix + "mlp.experts." + e.group(2), {})[int(e.group(1))] = tensor
            else:
                ours[prefix + rest] = tensor
        elif name.endswith("rotary_emb.inv_freq"):
            continue
        else:
            raise CheckpointError(f"{source}: unexpected tensor {name!r}; it is not part of a DeepSeek-V3 "
                                  f"checkpoint with this config.json")
    for key, parts in expert_parts.items():
        if sorted(parts) != list(range(E)):
            found = sorted(parts)
            raise CheckpointError(f"{source}: {key} has {len(found)} expert tensors (indices {found[0]}..{found[-1]}) "
                                  f"but config.json says n_routed_experts = {E}; fix the field or the weights")
        ours[key] = torch.stack([parts[e] for e in range(E)])
    for key in [k for k in ours if k.endswith("mlp.experts.gate_proj")]:
        base = key.removesuffix("gate_proj")
        if base + "up_proj" not in ours:
            continue  # reported as missing by the caller
        ours[base + "gate_up_proj"] = torch.cat([ours.pop(key), ours.pop(base + "up_proj")], dim=1)
    return ours


def _sub(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


# ---------------------------------------------------------------------- save / load
def save_pretrained(model: Transformer, out_dir: str | Path) -> Path:
    """Write config.json, generation_config.json and model.safetensors into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = model.config
    dtype = model.embed_tokens.weight.dtype
    (out_dir / "config.json").write_text(json.dumps(hf_config_dict(config, dtype), indent=2) + "\n")
    generation = {"bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
                  "pad_token_id": config.pad_token_id}
    (out_dir / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
    tensors = {k: v.detach().cpu() for k, v in to_hf_state_dict(model).items()}
    save_file(tensors, str(out_dir / WEIGHTS_NAME), metadata={"format": "pt"})
    return out_dir


def read_config(model_dir: str | Path) -> ModelConfig:
    """The validated ModelConfig of a checkpoint folder."""
    path = Path(model_dir) / "config.json"
    if not Path(model_dir).is_dir():
        raise CheckpointError(f"{model_dir}: checkpoint folder does not exist; pass a folder written by "
                              f"`rlpipe init-model` or Transformer.save_pretrained")
    if not path.is_file():
        raise CheckpointError(f"{path}: file missing; a checkpoint folder needs config.json beside its weights")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}); rewrite the file") from None
    return config_from_hf(raw, path)


def _weight_files(model_dir: Path) -> list[Path]:
    single, index = model_dir / WEIGHTS_NAME, model_dir / INDEX_NAME
    if single.is_file():
        return [single]
    if index.is_file():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        files = [model_dir / n for n in names]
        absent = [str(f) for f in files if not f.is_file()]
        if absent:
            raise CheckpointError(f"{index}: lists shard(s) {absent} that do not exist; copy them into {model_dir}")
        return files
    raise CheckpointError(f"{single}: file missing (no {INDEX_NAME} either); the folder has a config.json but "
                          f"no weights -- save the model again")


def load_pretrained(model_dir: str | Path, dtype: torch.dtype | None = None) -> Transformer:
    """Load a DeepSeek-V3 folder into a Transformer (MTP and router bias included), optionally cast to dtype."""
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    hf: dict[str, torch.Tensor] = {}
    for file in _weight_files(model_dir):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                hf[key] = f.get_tensor(key)
    state = from_hf_state_dict(config, hf, str(model_dir / WEIGHTS_NAME))
    with torch.device("meta"):
        model = Transformer(config)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if missing:
        hint = ""
        if any(k.startswith("mtp.") for k in missing) and not any(k.startswith("layers.") for k in missing):
            hint = (f" (the MTP module at model.layers.{config.num_hidden_layers} is absent, e.g. the folder was "
                    f"re-saved by transformers; set num_nextn_predict_layers to 0 in config.json to load without MTP)")
        raise CheckpointError(f"{model_dir / WEIGHTS_NAME}: {len(missing)} tensor(s) missing, e.g. "
                              f"{hf_name(missing[0], config)!r}{hint}")
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{model_dir / WEIGHTS_NAME}: tensor {hf_name(key, config)!r} has shape {tuple(state[key].shape)} "
                f"but config.json implies {tuple(tensor.shape)}; config.json and the weights disagree")
    unexpected = [k for k in state if k not in expected]
    if unexpected:
        raise CheckpointError(f"{model_dir / WEIGHTS_NAME}: unexpected tensor(s) e.g. {unexpected[0]!r} for this "
                              f"config.json (check q_lora_rank / n_shared_experts / first_k_dense_replace)")
    model.to_empty(device="cpu")
    model.load_state_dict(state, strict=True)
    # to_empty left the non-persistent buffers (RoPE table, routing counters) uninitialised.
    model.rotary = type(model.rotary)(config.qk_rope_head_dim, config.rope_theta)
    for moe in model.moe_layers:
        moe.tokens_per_expert.zero_()
    if dtype is not None:
        model.to(dtype)
    return model


def hf_name(key: str, config: ModelConfig) -> str:
    """The checkpoint key(s) holding our tensor `key` (experts: `*` stands for every expert index)."""
    if key in ("embed_tokens.weight", "norm.weight"):
        return "model." + key
    if (m := re.fullmatch(r"layers\.(\d+)\.(.+)", key)):
        name = f"model.layers.{m.group(1)}.{m.group(2)}"
    elif (m := re.fullmatch(r"mtp\.(\d+)\.(?:block\.)?(.+)", key)):
        name = f"model.layers.{config.num_hidden_layers + int(m.group(1))}.{m.group(2)}"
    else:
        return key
    if name.endswith("mlp.experts.gate_up_proj"):
        return name.removesuffix("gate_up_proj") + "*.gate_proj.weight / up_proj.weight"
    if name.endswith("mlp.experts.down_proj"):
        return name.removesuffix("down_proj") + "*.down_proj.weight"
    return name
