"""Optional LoRA (Hu et al. 2021) through `peft`, with merged exports so checkpoints stay plain HF folders.

- `apply_lora(model, cfg)`: freezes the base and injects rank-r adapters into the named linear
  layers (MLA projections by default). The expert-bias buffers keep being updated by
  auxiliary-loss-free balancing: they are not parameters, so LoRA does not freeze them.
- `merged_state_dict(model)`: the plain `Transformer`'s state dict (its own key names) with each
  adapter's `W + (alpha / r) B A` folded in, computed beside the live weights: merging in place and
  unmerging after would perturb the base weights by rounding, and exact resume needs them untouched.
  RL pushes it to the vLLM engine after every optimizer step; `export_model(model)` loads it into a
  fresh plain `Transformer` for `save_pretrained`.
- `adapter_state(model)`: the adapter tensors a checkpoint needs to continue LoRA training.
- `BaseReference(model)`: RL's KL reference under LoRA: the same model scored with its adapters
  switched off, i.e. the frozen starting weights, so no second copy of the model is held (as TRL
  does with peft).
"""

from __future__ import annotations

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


@torch.no_grad()
def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """State dict of the plain model with the active adapters folded in; keys as without LoRA.

    `model` is a PeftModel or the Transformer under it (peft injects its layers in place, so the RL
    step's bare Transformer holds them too); without adapters, its own state dict."""
    from peft.tuners.lora import LoraLayer

    core = base_model(model)
    deltas = {f"{name}.weight": sum(m.get_delta_weight(a) for a in m.active_adapters)
              for name, m in core.named_modules() if isinstance(m, LoraLayer) and m.active_adapters}
    state = {}
    for key, tensor in core.state_dict().items():
        if ".lora_" in key:  # lora_A / lora_B / lora_dropout / lora_embedding tensors
            continue
        key = key.replace(".base_layer.", ".")
        state[key] = tensor + deltas[key].to(tensor.dtype) if key in deltas else tensor
    return state


def export_model(model: torch.nn.Module) -> torch.nn.Module:
    """A plain Transformer with any LoRA adapter merged in, for `save_pretrained`."""
    if not is_lora(model):
        return model
    core = base_model(model)
    plain = type(core)(core.config)
    # assign: the tensors keep their dtypes (bf16 weights, the fp32 expert bias); copies, so the
    # export never aliases the live weights. Non-persistent buffers (RoPE) follow to the device.
    plain.load_state_dict({k: v.detach().clone() for k, v in merged_state_dict(model).items()}, assign=True)
    return plain.to(next(core.parameters()).device)


class BaseReference:
    """`score(...)` of `model` with every LoRA adapter off, in eval mode (the MoE layers then count no
    load), restoring both after. Adapters injected after construction count: peft injects in place."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    @torch.no_grad()
    def score(self, *args, **kwargs):
        from peft.tuners.tuners_utils import BaseTunerLayer

        layers = [m for m in self.model.modules() if isinstance(m, BaseTunerLayer)]
        was = self.model.training
        self.model.eval()
        for layer in layers:
            layer.enable_adapters(False)
        try:
            return self.model.score(*args, **kwargs)
        finally:
            for layer in layers:
                layer.enable_adapters(True)
            self.model.train(was)


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    if not is_lora(model):
        return None
    from peft import get_peft_model_state_dict

    return {k: v.detach().clone().cpu() for k, v in get_peft_model_state_dict(model).items()}
