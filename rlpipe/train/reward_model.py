"""The preference reward model of stage 4: a scalar head on the policy backbone, trained Bradley-Terry.

DeepSeek-R1's last stage pays general (non-reasoning) prompts with a learned reward model. Here:
- `RewardModel`: the policy `Transformer` (loaded from a stage checkpoint) plus a linear head on the
  final-normed hidden state of each sequence's last token (`<|eos|>`). It scores packed rows: several
  sequences per row, `segment_ids` keep their attention apart (the packing is `sft.pack`'s).
  `save_pretrained(dir)` writes the backbone's HF folder + `reward_head.pt` + `reward_model.json`
  (+ the tokenizer): the folder is still a plain DeepSeek-V3 checkpoint, and `load_reward_model(dir)`
  loads the whole reward model back with one call.
- `bradley_terry_loss`: -log sigma(r_chosen - r_rejected), the pairwise loss of InstructGPT / R1.
- `view`: what the model reads of a response, the same in training and scoring: `full` (the whole
  response) or `answer` (only the `<answer>` block, as R1 judges helpfulness on the final summary;
  a response without a well-formed block shows its final part instead, so a missing block is seen).
- `PreferenceSteps`: the loop's step contract over pairs (`SupervisedData`'s deterministic step ->
  batch map, so resume is exact); each micro-batch packs its pairs' 2P sequences into rows.
- `train_reward_model`: held-out split by prompt, training through `rlpipe.train.loop`, held-out and
  train pair accuracy per `kind` -> `rm_eval.json`; the score mean/std on the training responses go
  into `reward_model.json` so the reward can be standardised.
- `RewardModelReward`: the reward function (`f(prompts, completions, **columns)`) for
  `rewards.combine` / `ParallelReward`, optionally only for some tasks and from some step on.
- `main`: the `rlpipe train-rm` command.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from rlpipe.errors import ConfigError, DataError, RlpipeError, StageInputError
from rlpipe.model import ModelConfig, Transformer, load_pretrained
from rlpipe.train.sft import IGNORE, Example, SupervisedData, pack

VIEWS = ("full", "answer")
HEAD_FILE = "reward_head.pt"  # not *.safetensors: vLLM would try to load it with the backbone's weights
META_FILE = "reward_model.json"
PAIR_COLUMNS = ("prompt", "chosen", "rejected")


# ---------------------------------------------------------------------------- config
@dataclass
class RewardModelConfig:
    """How the stage-4 reward model is trained and paid.

    Defaults measured on the `tiny` preset from the seed-0 stage-1 checkpoint (865 training pairs,
    108 steps, 1.3 s/step on one free core beside an RL run; 3.5 min with scoring): held-out pair
    accuracy 0.71 (malformed 1.00, wrong_answer 0.69, mixed_language 0.53, wrong_language 1/4), train
    0.92. lr 1e-4 reached 0.68 (malformed 0.97, wrong_answer 0.67). Mixed-language reasoning stays at
    chance: the rule-based language reward, not the RM, is what pays language consistency. With
    view=answer (same settings) held-out accuracy is 0.41: mixed_language pairs read the same there
    (38 ties, counted wrong), wrong_answer 0.52, malformed 0.69; train 0.60."""

    init_from: str = "stage-3"  # stage folder of this run, or a path to an HF checkpoint folder
    split: str = "preferences"  # datasets folder with prompt, chosen, rejected (and kind) columns
    held_out: float = 0.15  # share of pairs held out for the accuracy report, split by prompt
    epochs: float = 2.0
    max_steps: int = 0  # optimizer steps; 0 = derive from `epochs`
    lr: float = 3e-4
    warmup_steps: int = 5
    micro_batch_pairs: int = 16  # pairs per optimizer step and process (2x as many sequences, packed)
    seq_len: int = 320  # longest prompt + response read; longer ones lose their START (the end is scored)
    view: Literal["full", "answer"] = "full"
    weight: float = 1.0  # weight of the (standardised) RM score in the stage-4 reward
    start_step: int = 0  # stage-4 optimizer step from which the RM term is paid

    def __post_init__(self) -> None:
        if self.view not in VIEWS:
            raise ConfigError(f"reward_model.view={self.view!r}: choose one of {', '.join(VIEWS)}")
        if not 0.0 <= self.held_out < 1.0:
            raise ConfigError(f"reward_model.held_out={self.held_out}: a share of the pairs, 0 <= held_out < 1")
        if self.max_steps < 0 or (self.max_steps == 0 and not self.epochs > 0):
            raise ConfigError(f"reward_model: max_steps={self.max_steps}, epochs={self.epochs}; set max_steps > 0 "
                              f"or epochs > 0")
        if not self.lr > 0:
            raise ConfigError(f"reward_model.lr={self.lr}: must be > 0")
        if self.warmup_steps < 0:
            raise ConfigError(f"reward_model.warmup_steps={self.warmup_steps}: must be >= 0")
        if self.micro_batch_pairs < 1:
            raise ConfigError(f"reward_model.micro_batch_pairs={self.micro_batch_pairs}: must be >= 1")
        if self.seq_len < 8:
            raise ConfigError(f"reward_model.seq_len={self.seq_len}: too short to hold a prompt and a response")
        if self.start_step < 0:
            raise ConfigError(f"reward_model.start_step={self.start_step}: must be >= 0 (0 pays from the start)")


# ---------------------------------------------------------------------------- what the model reads
def response_view(response: Any, view: str) -> str:
    """The part of a response the reward model reads: all of it (`full`), or (`answer`) its
    `<answer>` block, tags kept; without a well-formed block, the response's final part as it is."""
    from rewards.format import ANSWER_CLOSE, ANSWER_OPEN, answer_text, completion_text, response_region

    text = completion_text(response)
    if view == "full":
        return text
    answer = answer_text(text)
    return f"{ANSWER_OPEN}{answer}{ANSWER_CLOSE}" if answer is not None else response_region(text).strip()


def encode(tokenizer, prompts: Sequence[Any], responses: Sequence[Any], view: str, seq_len: int) -> list[list[int]]:
    """Token ids of `chat-template(prompt) + view(response) + <|eos|>`, at most seq_len of them.

    Too long: the start is dropped, not the end, since the score is read at the last token and the
    preferences differ mostly near the end (the answer)."""
    from rewards.format import prompt_text
    from rlpipe.tokenizer import format_prompt

    texts = [format_prompt(tokenizer, prompt_text(p)) + response_view(r, view) for p, r in zip(prompts, responses)]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    return [(list(x) + [tokenizer.eos_token_id])[-seq_len:] for x in ids]


def pack_sequences(sequences: Sequence[Sequence[int]], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Pack sequences (each <= seq_len) into rows with `sft.pack` -> the RewardModel's inputs:
    input_ids, position_ids, segment_ids (rows, seq_len) and last_index (N,), the flat position
    (row * seq_len + t) of sequence i's last token, in the order given."""
    # The label at a sequence's last token carries its index: the scored positions come out of
    # pack() itself, whatever rows it chose (its first label per segment is -100, so L >= 2).
    examples = [Example(list(s), [IGNORE] * (len(s) - 1) + [i]) for i, s in enumerate(sequences)]
    assert all(len(s) >= 2 for s in sequences), "a scored sequence holds at least a prompt token and <|eos|>"
    rows = pack(examples, seq_len, pad_id)
    flat = rows.labels.reshape(-1)
    at = np.flatnonzero(flat != IGNORE)
    last_index = np.empty(len(sequences), dtype=np.int64)
    last_index[flat[at]] = at
    return {"input_ids": torch.from_numpy(rows.input_ids), "position_ids": torch.from_numpy(rows.position_ids),
            "segment_ids": torch.from_numpy(rows.segment_ids), "last_index": torch.from_numpy(last_index)}


# ---------------------------------------------------------------------------- the model
class RewardModel(nn.Module):
    """Policy backbone + scalar head on the last token's final hidden state.

    backbone: a `Transformer` (or a ModelConfig for a fresh one, as the loop builds models to
    gather FSDP shards into). view / seq_len: how it reads responses (saved with it).
    score_mean / score_std: its scores on the training responses, for standardised rewards."""

    def __init__(self, backbone: Transformer | ModelConfig, *, view: str = "full", seq_len: int = 320,
                 seed: int = 0) -> None:
        super().__init__()
        self.backbone = backbone if isinstance(backbone, Transformer) else Transformer(backbone)
        D = self.backbone.config.hidden_size
        # No bias: Bradley-Terry sees only score differences, so a bias would never get a gradient.
        self.score_head = nn.Linear(D, 1, bias=False)
        with torch.no_grad():
            self.score_head.weight.normal_(0.0, 1.0 / math.sqrt(D + 1), generator=torch.Generator().manual_seed(seed))
        self.view, self.seq_len = view, seq_len
        self.score_mean, self.score_std = 0.0, 1.0

    @property
    def config(self) -> ModelConfig:
        return self.backbone.config

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None,
                segment_ids: torch.Tensor | None = None, last_index: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids, position_ids, segment_ids: (B, T) packed rows; last_index: (N,) flat positions
        (row * T + t) of the N scored sequences' last tokens (None: one sequence per row, ending at T-1).
        Returns (N,) fp32 scores."""
        h = self.backbone.hidden_states(input_ids, position_ids, segment_ids)[0]  # (B, T, D)
        B, T, D = h.shape
        if last_index is None:
            last_index = torch.arange(B, device=h.device) * T + (T - 1)
        h_last = h.reshape(B * T, D)[last_index]  # (N, D)
        return self.score_head(h_last).squeeze(-1).float()  # (N,)

    def metadata(self) -> dict:
        return {"view": self.view, "seq_len": self.seq_len, "score_mean": self.score_mean,
                "score_std": self.score_std}

    def save_pretrained(self, out_dir: str | Path) -> Path:
        """The backbone's HF folder + the head (`reward_head.pt`) + `reward_model.json`."""
        out = Path(out_dir)
        self.backbone.save_pretrained(out)
        torch.save({"weight": self.score_head.weight.detach().float().cpu().clone()}, out / HEAD_FILE)
        (out / META_FILE).write_text(json.dumps(self.metadata(), indent=1))
        return out

    @classmethod
    def from_pretrained(cls, model_dir: str | Path, dtype: torch.dtype | None = None) -> "RewardModel":
        """Load a folder written by `save_pretrained` (missing head or metadata: one CheckpointError)."""
        from rlpipe.errors import CheckpointError

        model_dir = Path(model_dir)
        head, meta = model_dir / HEAD_FILE, model_dir / META_FILE
        if model_dir.is_dir() and not (head.is_file() and meta.is_file()):
            raise CheckpointError(f"{model_dir}: no {HEAD_FILE} / {META_FILE}, so this is not a reward model (a policy "
                                  f"checkpoint?); train one with `rlpipe train-rm --model {model_dir} ...`")
        backbone = load_pretrained(model_dir, dtype=dtype)  # a missing folder or config: its own clear error
        info = json.loads(meta.read_text())
        model = cls(backbone, view=info["view"], seq_len=info["seq_len"])
        model.score_mean, model.score_std = float(info["score_mean"]), float(info["score_std"])
        weight = torch.load(head, map_location="cpu", weights_only=True)["weight"]
        with torch.no_grad():
            model.score_head.weight.copy_(weight.to(model.score_head.weight.dtype))
        return model


def load_reward_model(model_dir: str | Path, dtype: torch.dtype | None = None) -> RewardModel:
    """`RewardModel.from_pretrained(model_dir)`."""
    return RewardModel.from_pretrained(model_dir, dtype=dtype)


@torch.no_grad()
def score_sequences(rm: RewardModel, sequences: Sequence[Sequence[int]], pad_id: int, *,
                    batch_sequences: int = 64) -> np.ndarray:
    """(N,) scores of already encoded sequences, in eval mode (training-mode forwards would count
    routed tokens for the expert-bias update), packed `batch_sequences` at a time."""
    was_training = rm.training
    rm.eval()
    device = next(rm.parameters()).device
    out = []
    try:
        for start in range(0, len(sequences), batch_sequences):
            batch = pack_sequences(sequences[start:start + batch_sequences], rm.seq_len, pad_id)
            out.append(rm(**{k: v.to(device) for k, v in batch.items()}).cpu().numpy())
    finally:
        rm.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


# ---------------------------------------------------------------------------- loss and accuracy
def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """chosen_scores, rejected_scores: (P,) of the same pairs -> (mean -log sigma(r_c - r_r), metrics):
    `pair_accuracy` (share with r_c > r_r; ties count as wrong) and `margin` (mean r_c - r_r)."""
    diff = chosen_scores.float() - rejected_scores.float()  # (P,)
    loss = -torch.nn.functional.logsigmoid(diff).mean()
    d = diff.detach()
    return loss, {"pair_accuracy": float((d > 0).float().mean()), "margin": float(d.mean())}


def _pair_sequences(tokenizer, rows, view: str, seq_len: int) -> list[list[int]]:
    """[chosen_0, rejected_0, chosen_1, rejected_1, ...] encoded."""
    prompts = [r["prompt"] for r in rows]
    chosen = encode(tokenizer, prompts, [r["chosen"] for r in rows], view, seq_len)
    rejected = encode(tokenizer, prompts, [r["rejected"] for r in rows], view, seq_len)
    return [s for pair in zip(chosen, rejected) for s in pair]


def _pair_scores(rm: RewardModel, tokenizer, rows, view: str) -> tuple[np.ndarray, np.ndarray]:
    scores = score_sequences(rm, _pair_sequences(tokenizer, rows, view, rm.seq_len), tokenizer.pad_token_id)
    return scores[0::2], scores[1::2]


def pair_accuracy(rm: RewardModel, tokenizer, rows, view: str | None = None) -> dict:
    """Share of pairs the model orders right, overall and per `kind`, and the mean margin.

    rows: dicts (or a `datasets.Dataset`) with prompt, chosen, rejected and optionally kind."""
    rows = list(rows)
    chosen, rejected = _pair_scores(rm, tokenizer, rows, view or rm.view)
    right = chosen > rejected
    # Ties (counted as wrong) are pairs the view cannot tell apart, e.g. mixed-language reasoning
    # under the `answer` view: both responses then read the same.
    tie = chosen == rejected
    by_kind: dict[str, list[tuple[bool, bool]]] = {}
    for row, ok, t in zip(rows, right, tie):
        by_kind.setdefault(row.get("kind") or "all", []).append((bool(ok), bool(t)))
    return {"accuracy": float(right.mean()) if len(rows) else float("nan"), "n": len(rows),
            "ties": int(tie.sum()),
            "by_kind": {k: {"accuracy": sum(o for o, _ in v) / len(v), "n": len(v), "ties": sum(t for _, t in v)}
                        for k, v in sorted(by_kind.items())},
            "margin": float((chosen - rejected).mean()) if len(rows) else float("nan")}


# ---------------------------------------------------------------------------- the step contract
class PreferenceSteps(SupervisedData):
    """The loop's step contract over preference pairs: SupervisedData's stateless step -> batch map
    (epoch permutations from (seed, epoch), each process its slice: exact resume), over pairs
    instead of packed rows. Each micro-batch packs its P pairs' 2P sequences into rows of seq_len
    and its loss is the Bradley-Terry loss of their scores."""

    def __init__(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], *, seq_len: int, pad_id: int,
                 micro_batch_pairs: int, grad_accum: int = 1, world_size: int = 1, seed: int = 0,
                 max_steps: int = 0, epochs: float = 1.0) -> None:
        per_step = micro_batch_pairs * grad_accum * world_size
        if len(pairs) < per_step:
            raise DataError(f"{len(pairs)} training pairs cannot fill one step of {per_step} pairs "
                            f"(reward_model.micro_batch_pairs x processes); lower micro_batch_pairs or add pairs")
        super().__init__(list(pairs), micro_batch_size=micro_batch_pairs, grad_accum=grad_accum,
                         world_size=world_size, seed=seed, max_steps=max_steps, epochs=epochs)
        self.pairs = self.rows
        self.seq_len, self.pad_id = seq_len, pad_id

    def micro_batches(self, step: int, rank: int = 0) -> list[dict[str, torch.Tensor]]:
        """This process's micro-batches for `step`: packed rows + last_index (2P,), chosen at even indices."""
        return [pack_sequences([s for i in idx for s in self.pairs[i]], self.seq_len, self.pad_id)
                for idx in self.micro_batch_rows(step, rank)]

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        scores = model(**batch)  # (2P,)
        loss, metrics = bradley_terry_loss(scores[0::2], scores[1::2])
        return loss / self.grad_accum, {"bt_loss": float(loss.detach()), **metrics}

    def after_step(self, model: torch.nn.Module, step: int) -> dict:
        """Reads and resets the routed-token counts but keeps the expert biases FROZEN (gamma 0): the
        reward model is a short fine-tune on a narrow text distribution, and re-balancing on it would
        move every token's routing away from what the policy's experts were trained with, a shift the
        head would have to chase for no gain in the loss; the router weights still learn from it."""
        from rlpipe.train.loop import expert_load_metrics

        return expert_load_metrics(model.backbone.update_expert_bias(0.0))


# ---------------------------------------------------------------------------- training
def held_out_by_prompt(prompt: str, share: float) -> bool:
    """Whether a pair is held out: a fixed hash of its prompt, so every pair of a prompt lands on the
    same side and the split does not depend on the row order or the data seed."""
    h = int.from_bytes(hashlib.sha256(prompt.encode("utf-8")).digest()[:8], "big")
    return h / 2.0 ** 64 < share


def check_backbone_dir(path: Path) -> Path:
    if not (path / "config.json").is_file() or not (path / "tokenizer.json").is_file():
        raise StageInputError(f"{path}/: the reward model's backbone checkpoint (config.json + tokenizer.json) is "
                              f"missing; point reward_model.init_from / --model at a finished stage folder")
    return path


def load_preferences(data_dir: str | Path, split: str) -> list[dict]:
    """The rows of the preference split, checked for the columns Bradley-Terry training reads."""
    import datasets

    path = Path(data_dir) / split
    if not path.exists():
        raise StageInputError(f"{path}: the '{split}' split is missing; build the data with `rlpipe data build "
                              f"--out {data_dir}` (it writes `preferences`) or set reward_model.split")
    try:
        ds = datasets.load_from_disk(str(path))
    except Exception as err:  # datasets raises several types for a folder it cannot read
        raise DataError(f"{path}: not a `datasets` folder ({err}); rebuild it with `rlpipe data build`") from None
    missing = [c for c in PAIR_COLUMNS if c not in ds.column_names]
    if missing:
        raise DataError(f"{path}: column(s) {missing} missing (has {sorted(ds.column_names)}); a preference split "
                        f"needs prompt, chosen, rejected (kind optional); rebuild it with `rlpipe data build`")
    if len(ds) == 0:
        raise DataError(f"{path}: the '{split}' split has no rows")
    return ds.to_list()


def train_reward_model(cfg, *, init_dir: str | Path, data_dir: str | Path, out_dir: str | Path,
                       accelerator=None) -> dict:
    """Train the Bradley-Terry reward model per `cfg.reward_model` and write out_dir.

    cfg: a stage config with `.reward_model` and the loop's sections (train, optim, lora, logging,
    resume, run, stage); the RM's own fields replace the batch, length, step and lr settings.
    out_dir gets the RM folder (load_reward_model), checkpoints/, metrics.jsonl and rm_eval.json
    (held-out and train pair accuracy, overall and per kind). Returns that eval dict."""
    from transformers import AutoTokenizer

    from rlpipe.train.loop import make_accelerator, train

    rm_cfg: RewardModelConfig = cfg.reward_model
    init_dir, out_dir = check_backbone_dir(Path(init_dir)), Path(out_dir)
    if cfg.lora.enabled:
        raise ConfigError("lora.enabled: the reward model trains its whole backbone (a LoRA wrapper would freeze "
                          "the score head); set lora.enabled=false for it")
    rows = load_preferences(data_dir, rm_cfg.split)
    train_rows = [r for r in rows if not held_out_by_prompt(r["prompt"], rm_cfg.held_out)]
    eval_rows = [r for r in rows if held_out_by_prompt(r["prompt"], rm_cfg.held_out)]
    loop_cfg = dataclasses.replace(
        cfg, stage="reward-model",
        train=dataclasses.replace(cfg.train, max_steps=rm_cfg.max_steps, epochs=rm_cfg.epochs, seq_len=rm_cfg.seq_len,
                                  micro_batch_size=rm_cfg.micro_batch_pairs, grad_accum=1),
        optim=dataclasses.replace(cfg.optim, lr=rm_cfg.lr, warmup_steps=rm_cfg.warmup_steps, weight_decay=0.0))
    acc = accelerator or make_accelerator(loop_cfg.train)
    t0 = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(init_dir))
    rm = RewardModel(load_pretrained(init_dir, dtype=torch.float32), view=rm_cfg.view, seq_len=rm_cfg.seq_len,
                     seed=loop_cfg.train.seed)
    seqs = _pair_sequences(tokenizer, train_rows, rm_cfg.view, rm_cfg.seq_len)
    steps = PreferenceSteps(list(zip(seqs[0::2], seqs[1::2])), seq_len=rm_cfg.seq_len, pad_id=tokenizer.pad_token_id,
                            micro_batch_pairs=rm_cfg.micro_batch_pairs, world_size=acc.num_processes,
                            seed=loop_cfg.train.seed, max_steps=rm_cfg.max_steps, epochs=rm_cfg.epochs)
    acc.print(f"reward model: {len(train_rows)} training pairs, {len(eval_rows)} held out (by prompt), "
              f"view={rm_cfg.view}, {steps.num_steps} steps of {rm_cfg.micro_batch_pairs} pairs")
    result = train(rm, steps, loop_cfg, out_dir=out_dir, tokenizer=tokenizer, accelerator=acc)
    report: dict = {}
    if acc.is_main_process:
        rm = result.model
        # Train accuracy and the score statistics on at most 512 training pairs: scoring is a
        # forward pass per response, and more pairs do not change either number much.
        sample = train_rows[:512]
        acc.print(f"reward model: scoring {len(sample)} training and {len(eval_rows)} held-out pairs")
        chosen, rejected = _pair_scores(rm, tokenizer, sample, rm_cfg.view)
        both = np.concatenate([chosen, rejected])
        rm.score_mean, rm.score_std = float(both.mean()), float(max(both.std(), 1e-6))
        report = {"view": rm_cfg.view, "steps": result.step, "resumed_from": result.resumed_from,
                  "held_out": pair_accuracy(rm, tokenizer, eval_rows) if eval_rows else None,
                  "train": {"accuracy": float((chosen > rejected).mean()), "n": len(sample),
                            "margin": float((chosen - rejected).mean())},
                  "score_mean": rm.score_mean, "score_std": rm.score_std,
                  "seconds": time.perf_counter() - t0, "train_seconds": result.seconds}
        rm.save_pretrained(out_dir)
        tokenizer.save_pretrained(str(out_dir))
        (out_dir / "rm_eval.json").write_text(json.dumps(report, indent=1))
        acc.print(accuracy_table(report))
    acc.wait_for_everyone()
    return report


def accuracy_table(report: dict) -> str:
    """Markdown table of held-out pair accuracy per kind (plus train accuracy)."""
    lines = ["| kind | held-out accuracy | n | ties |", "|---|---|---|---|"]
    held = report.get("held_out")
    if held:
        # .get: rm_eval.json files written before ties were counted
        lines += [f"| {k} | {v['accuracy']:.3f} | {v['n']} | {v.get('ties', '-')} |"
                  for k, v in held["by_kind"].items()]
        lines.append(f"| **all** | **{held['accuracy']:.3f}** | {held['n']} | {held.get('ties', '-')} |")
    t = report["train"]
    lines.append(f"\ntrain pair accuracy {t['accuracy']:.3f} (n={t['n']}); held-out margin "
                 f"{held['margin']:.3f}" if held else f"\ntrain pair accuracy {t['accuracy']:.3f} (n={t['n']})")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- as a reward
class RewardModelReward:
    """The reward model as a reward function `f(prompts, completions, **columns) -> list[float | None]`.

    source: a folder written by `train_reward_model` (or a RewardModel, with `tokenizer`).
    view: None = the one it was trained with. tasks: pay only rows whose `task` column is one of
    these (None elsewhere). start_step: None for rows whose `training_step` column (per row or one
    value) is below it. normalize: (score - mean) / std of its training responses, so `weight`
    compares with rule rewards in [0, 1]. Calls are serialised with a lock (ParallelReward runs
    terms in threads; one model is not run twice at once)."""

    def __init__(self, source: str | Path | RewardModel, tokenizer=None, *, view: str | None = None,
                 tasks: Iterable[str] | None = None, start_step: int = 0, normalize: bool = True,
                 batch_sequences: int = 64, device: str | torch.device | None = None) -> None:
        if isinstance(source, RewardModel):
            if tokenizer is None:
                raise ValueError("RewardModelReward: pass the tokenizer along with a RewardModel")
            self.model = source
        else:
            from transformers import AutoTokenizer

            self.model = load_reward_model(source, dtype=torch.float32)
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(source))
        if device is not None:
            self.model.to(device)
        self.model.eval()
        self.tokenizer = tokenizer
        self.view = view or self.model.view
        if self.view not in VIEWS:
            raise ConfigError(f"RewardModelReward: view={self.view!r}; choose one of {', '.join(VIEWS)}")
        self.tasks = None if tasks is None else frozenset(tasks)
        self.start_step = start_step
        self.normalize = normalize
        self.batch_sequences = batch_sequences
        self._lock = threading.Lock()
        self.__name__ = "reward_model"  # the term's name in rewards.combine and in logs

    def applies(self, n: int, columns: dict) -> list[bool]:
        """Which of the n rows the reward model pays."""
        keep = [True] * n
        if self.tasks is not None:
            if "task" not in columns:
                raise ValueError("reward_model: a tasks filter is set but no `task` column was passed")
            keep = [k and t in self.tasks for k, t in zip(keep, columns["task"])]
        if self.start_step > 0:
            if "training_step" not in columns:
                raise ValueError(f"reward_model: start_step={self.start_step} needs a `training_step` column")
            steps = columns["training_step"]
            steps = steps if isinstance(steps, (list, tuple)) else [steps] * n
            keep = [k and int(s) >= self.start_step for k, s in zip(keep, steps)]
        return keep

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> list[float | None]:
        keep = self.applies(len(completions), columns)
        idx = [i for i, k in enumerate(keep) if k]
        out: list[float | None] = [None] * len(completions)
        if not idx:
            return out
        with self._lock:  # the fast tokenizer is not safe to call from two threads at once either
            seqs = encode(self.tokenizer, [prompts[i] for i in idx], [completions[i] for i in idx], self.view,
                          self.model.seq_len)
            scores = score_sequences(self.model, seqs, self.tokenizer.pad_token_id,
                                     batch_sequences=self.batch_sequences)
        if self.normalize:
            scores = (scores - self.model.score_mean) / self.model.score_std
        for i, s in zip(idx, scores):
            out[i] = float(s)
        return out


# ---------------------------------------------------------------------------- command line
def _stage_config(rm_cfg: RewardModelConfig, out: Path, *, seed: int, resume: bool):
    """A stage config for the command line. The command is an entry point like `rlpipe run`, so it
    takes the loop's sections (and their defaults) from rlpipe.config; the library above never does."""
    from rlpipe.config import StageConfig

    @dataclass
    class RewardModelRun(StageConfig):
        reward_model: RewardModelConfig = dataclasses.field(default_factory=RewardModelConfig)

    cfg = RewardModelRun(stage="reward-model", run=out.name, runs_dir=str(out.parent), resume=resume,
                         reward_model=rm_cfg)
    cfg.train.seed, cfg.train.log_every, cfg.logging.plots = seed, 5, False
    return cfg


def main(argv: list[str] | None = None) -> int:
    """`rlpipe train-rm --model DIR --data DIR --out DIR [...]`: train, print the held-out table."""
    parser = argparse.ArgumentParser(prog="rlpipe train-rm",
                                     description="train the Bradley-Terry preference reward model")
    parser.add_argument("--model", required=True, help="backbone checkpoint folder (HF format + tokenizer)")
    parser.add_argument("--data", required=True, help="data folder written by `rlpipe data build`")
    parser.add_argument("--out", required=True, help="output folder (reward model, metrics, rm_eval.json)")
    defaults = RewardModelConfig()
    for name in ("split", "held_out", "epochs", "max_steps", "lr", "warmup_steps", "micro_batch_pairs", "seq_len"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(getattr(defaults, name)),
                            default=getattr(defaults, name))
    parser.add_argument("--view", choices=VIEWS, default=defaults.view)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-resume", action="store_true", help="start over even if out has checkpoints")
    args = parser.parse_args(argv)
    try:
        rm_cfg = RewardModelConfig(init_from=args.model, split=args.split, held_out=args.held_out,
                                   epochs=args.epochs, max_steps=args.max_steps, lr=args.lr,
                                   warmup_steps=args.warmup_steps, micro_batch_pairs=args.micro_batch_pairs,
                                   seq_len=args.seq_len, view=args.view)
        out = Path(args.out)
        cfg = _stage_config(rm_cfg, out, seed=args.seed, resume=not args.no_resume)
        train_reward_model(cfg, init_dir=args.model, data_dir=args.data, out_dir=out)
    except RlpipeError as err:
        print(f"rlpipe train-rm: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
