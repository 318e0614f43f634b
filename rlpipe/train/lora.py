"""Optional LoRA (Hu et al. 2021) through `peft`, with merged exports so checkpoints stay plain HF folders.

- `apply_lora(model, cfg)`: freezes the base and injects rank-r adapters into the named linear
  layers (MLA projections by default). The expert-bias buffers keep being updated by
  auxiliary-loss-free balancing: they are not parameters, so LoRA does not freeze them.
- `export_model(model)`: the plain `Transformer` to save. With LoRA, a deep copy with
  `W + (alpha / r) B A` folded in: merging in place and unmerging after the save would perturb the
  base weights by rounding, and exact resume needs them untouched.
- `adapter_state(model)`: the adapter tensors a checkpoint needs to continue LoRA training.
"""

from __future__ import annotations

import copy

import torch


def is_lora(model: torch.nn.Module) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def apply_lora(model: torch.nn.Module, cfg) -> torch.nn.Module:
    """Wrap `model` with LoRA adapters per `cfg` (a LoraConfig); target modules absent from the model are an error."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    targets = [t for t in cfg.target_modules if t in names]
    if not targets:
        raise ValueError(f"lora.target_modules={cfg.target_modules}: none of these linear layers exist in the "
                         f"model; valid choices: {', '.join(sorted(names))}")
    peft_cfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=targets,
                              bias="none")
    return get_peft_model(model, peft_cfg)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The plain Transformer under a LoRA wrapper (the model itself otherwise)."""
    return model.get_base_model() if is_lora(model) else model


def export_model(model: torch.nn.Module) -> torch.nn.Module:
    """A plain Transformer with any LoRA adapter merged in, for `save_pretrained`."""
    if not is_lora(model):
        return model
    return copy.deepcopy(model).merge_and_unload()


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    if not is_lora(model):
        return None
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone().cpu() for k, v in get_peft_model_state_dict(model).items()}
