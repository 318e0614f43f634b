"""Training checkpoints: atomic, verified, pruned, and resumed exactly.

Layout of one checkpoint, `<stage>/checkpoints/step-000120/`:
    model/              the model's `save_pretrained` folder (a plain HF DeepSeek-V3 folder, LoRA merged
                        in; the reward model adds its head) + tokenizer
    trainer_state.pt    step, data position, optimizer, scheduler, expert biases, LoRA adapter
    rng/rank{r}.pt      python, numpy and torch RNG states of every process
    manifest.json       size and sha256 of every file above; written last

- Atomic: everything is written into `.tmp-step-000120/`, fsynced, then renamed; a crash leaves a
  `.tmp-*` folder (removed at the next save), never a half-written `step-*`.
- `latest_checkpoint` verifies the manifest and checksums and skips (with a warning) any corrupt or
  partial checkpoint; a checkpoint that fails verification is never loaded.
- Expert biases (`e_score_correction_bias`, a buffer that auxiliary-loss-free balancing updates
  every step) are saved explicitly: under LoRA the base weights are reloaded from the stage's input,
  so the biases must come from the checkpoint.
- Works under DDP: every rank writes its RNG state, rank 0 the rest; barriers order the steps.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch

from rlpipe.errors import CheckpointError  # re-exported: the one user-error family (rlpipe.errors)

CHECKPOINTS = "checkpoints"
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


# ---------------------------------------------------------------------------- small helpers
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync_tree(root: Path) -> None:
    """Flush every file and folder under root to disk, so the rename publishes complete data."""
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(dirpath))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def step_dir_name(step: int) -> str:
    return f"step-{step:06d}"


def rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def expert_biases(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every `e_score_correction_bias` buffer, by module path (peft prefixes stripped)."""
    return {_strip_peft(name): buf.detach().clone().cpu() for name, buf in model.named_buffers()
            if name.endswith("e_score_correction_bias")}


def _strip_peft(name: str) -> str:
    return name.replace("base_model.model.", "", 1)


# ---------------------------------------------------------------------------- save
def _barrier(accelerator) -> None:
    if accelerator is not None and accelerator.num_processes > 1:
        accelerator.wait_for_everyone()


def save_checkpoint(root: str | os.PathLike, step: int, *, model_to_save, train_model: torch.nn.Module,
                    optimizer, scheduler, data_state: dict, accelerator=None, keep_last: int = 2,
                    tokenizer=None, adapter_state: dict | None = None) -> Path:
    """Write checkpoint `step` under root atomically; every process must call it.

    model_to_save: the plain Transformer to export (LoRA already merged), read on rank 0 only.
    optimizer: None when its state is sharded (FSDP): the checkpoint is then weights-only.
    train_model: the model being trained (plain or LoRA-wrapped): its expert biases are recorded.
    adapter_state: LoRA adapter tensors when LoRA is on (the merged export cannot be trained on)."""
    root = Path(root)
    rank = accelerator.process_index if accelerator is not None else 0
    world = accelerator.num_processes if accelerator is not None else 1
    final = root / step_dir_name(step)
    tmp = root / f".tmp-{step_dir_name(step)}"
    if rank == 0:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    _barrier(accelerator)
    torch.save(rng_state(), tmp / "rng" / f"rank{rank}.pt")
    if rank == 0:
        model_to_save.save_pretrained(tmp / "model")
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "model")
        opt = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer  # accelerate's wrapper
        torch.save({"step": step, "world_size": world, "data": data_state,
                    "optimizer": opt.state_dict() if opt is not None else None,
                    "scheduler": scheduler.state_dict(), "expert_biases": expert_biases(train_model),
                    "adapter": adapter_state}, tmp / "trainer_state.pt")
    _barrier(accelerator)
    if rank == 0:
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {"step": step, "world_size": world,
                    "files": {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                              for p in files}}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
        _fsync_tree(tmp)
        if final.exists():  # the same step saved again after a resume: replace it whole
            shutil.rmtree(final)
        os.rename(tmp, final)
        _fsync_dir(root)
        prune(root, keep_last)
    _barrier(accelerator)
    return final


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest keep_last checkpoints."""
    if keep_last <= 0:
        return
    for _, path in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


# ---------------------------------------------------------------------------- find and verify
def list_checkpoints(root: str | os.PathLike) -> list[tuple[int, Path]]:
    """(step, folder) of every published checkpoint, oldest first (not verified)."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := _STEP_DIR.match(p.name))]
    return sorted(found)


def verify_checkpoint(path: str | os.PathLike) -> dict:
    """Return the manifest if every listed file exists with its size and sha256; else CheckpointError."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.exists():
        raise CheckpointError(f"{path}: no {MANIFEST} (the save did not finish)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise CheckpointError(f"{manifest_path}: unreadable manifest ({err})") from None
    for required in ("trainer_state.pt", "model/config.json"):
        if required not in files:
            raise CheckpointError(f"{path}: manifest lists no {required}")
    for rel, meta in files.items():
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"{f}: missing")
        if f.stat().st_size != meta["bytes"]:
            raise CheckpointError(f"{f}: {f.stat().st_size} bytes, manifest says {meta['bytes']}")
        if _sha256(f) != meta["sha256"]:
            raise CheckpointError(f"{f}: checksum does not match the manifest")
    return manifest


def latest_checkpoint(root: str | os.PathLike) -> Path | None:
    """The newest checkpoint that passes verification; corrupt or partial ones are skipped with a warning."""
    root = Path(root)
    if root.is_dir():
        for partial in root.glob(".tmp-*"):
            warnings.warn(f"{partial}: partial checkpoint (a save was interrupted); ignored", stacklevel=2)
    for _, path in reversed(list_checkpoints(root)):
        try:
            verify_checkpoint(path)
        except CheckpointError as err:
            warnings.warn(f"skipping corrupt checkpoint: {err}", stacklevel=2)
            continue
        return path
    return None


# ---------------------------------------------------------------------------- resume
def load_checkpoint(path: str | os.PathLike, *, train_model: torch.nn.Module, optimizer, scheduler,
                    accelerator=None, lora: bool = False) -> dict:
    """Restore a verified checkpoint into the live objects; returns its trainer state (step, data, ...).

    Without LoRA the weights come from model/ (the HF folder). With LoRA the frozen base is already
    in train_model (loaded from the stage input) and only the adapter and expert biases are restored."""
    from rlpipe.model import load_pretrained

    path = Path(path)
    verify_checkpoint(path)  # re-checked here: never load unverified bytes
    rank = accelerator.process_index if accelerator is not None else 0
    state = torch.load(path / "trainer_state.pt", map_location="cpu", weights_only=False)
    if state.get("optimizer") is None:
        raise CheckpointError(f"{path}: written without optimizer state (an FSDP run), so it cannot be resumed "
                              f"exactly; start from its model/ folder with resume=false")
    if lora:
        from peft import set_peft_model_state_dict

        if state.get("adapter") is None:
            raise CheckpointError(f"{path}: saved without LoRA but lora.enabled is true; set lora.enabled=false "
                                  f"or resume=false")
        set_peft_model_state_dict(train_model, state["adapter"])
    else:
        if state.get("adapter") is not None:
            raise CheckpointError(f"{path}: saved with LoRA but lora.enabled is false; set lora.enabled=true "
                                  f"or resume=false")
        # A model class with its own folder format (the reward model: backbone + head) loads it itself.
        loader = getattr(type(train_model), "from_pretrained", load_pretrained)
        weights = loader(path / "model", dtype=torch.float32).state_dict()
        try:
            train_model.load_state_dict(weights)
        except RuntimeError as err:
            raise CheckpointError(f"{path}: made for a different model than this run builds ({str(err)[:200]}...); "
                                  f"start a new run (run=<name>) or set resume=false") from None
    buffers = dict(train_model.named_buffers())
    by_plain = {_strip_peft(n): n for n in buffers}
    for name, value in state["expert_biases"].items():
        buffers[by_plain[name]].copy_(value)
    opt = optimizer.optimizer if hasattr(optimizer, "optimizer") else optimizer
    opt.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    rng_file = path / "rng" / f"rank{rank}.pt"
    if rng_file.exists():
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    else:
        warnings.warn(f"{rng_file}: saved with {state['world_size']} processes, resumed with more; this rank's "
                      f"random state starts fresh", stacklevel=2)
    return state
