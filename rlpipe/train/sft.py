"""Supervised data for the trainer: tokenise, mask prompts, pack, and batch deterministically.

- Two kinds of examples: `text` corpora (plain next-token loss on every token, documents longer
  than a row split into row-sized pieces) and prompt/completion pairs (the chat-templated prompt's
  labels are -100, so the loss covers the completion and its `<|eos|>` only).
- Packing: examples are laid into `seq_len` rows (first fit over recent rows). Each example is one segment:
  `segment_ids` keep attention inside it and `position_ids` restart at 0, so a packed row trains
  exactly like the examples alone. The first label of every segment is -100: nothing in the segment
  predicts it, and otherwise the previous segment's last token would be trained to predict it.
- `SupervisedData`: the loop's step contract for supervised stages: a stateless map optimizer step -> micro-batches. Epoch e is a permutation of
  the rows drawn from (seed, e); step s takes the s-th global batch of its epoch and each process
  its own slice, so the data position is the step number alone and resume is exact. The global
  batch (micro_batch_size x grad_accum x world_size rows) is the same set of rows however it is
  split across processes and accumulation steps. Its loss is the model's own (next token + MTP +
  balance); after each optimizer step it applies the auxiliary-loss-free bias update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
import torch

IGNORE = -100  # label ignored by the loss (HF convention)


@dataclass
class Example:
    """One training sequence before packing: labels already -100 where no loss is wanted."""

    input_ids: list[int]
    labels: list[int]


def text_examples(tokenizer, texts: Iterable[str], seq_len: int) -> list[Example]:
    """`<|bos|> text <|eos|>` per document (added unless the text already has them), cut into pieces
    of at most seq_len tokens; every token is trained."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    examples = []
    texts = list(texts)
    for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]:
        ids = list(ids)
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos] + ids
        if ids[-1] != eos:
            ids = ids + [eos]
        for start in range(0, len(ids), seq_len):
            piece = ids[start:start + seq_len]
            if len(piece) > 1:  # a lone token has nothing to predict
                examples.append(Example(piece, list(piece)))
    return examples


def prompt_completion_examples(tokenizer, prompts: Sequence[str], completions: Sequence[str],
                               seq_len: int) -> tuple[list[Example], int]:
    """Chat-templated prompt (masked) + completion + `<|eos|>` (trained). Returns (examples, n_truncated).

    Rows longer than seq_len are cut at seq_len: the prompt stays whole so the model still sees the
    question, the completion loses its tail (counted so stages can report it)."""
    from rlpipe.tokenizer import format_prompt

    eos = tokenizer.eos_token_id
    prompt_ids = tokenizer([format_prompt(tokenizer, p) for p in prompts], add_special_tokens=False)["input_ids"]
    completion_ids = tokenizer(list(completions), add_special_tokens=False)["input_ids"]
    examples, truncated = [], 0
    for p, c in zip(prompt_ids, completion_ids):
        ids = list(p) + list(c) + [eos]
        labels = [IGNORE] * len(p) + list(c) + [eos]
        if len(ids) > seq_len:
            truncated += 1
            ids, labels = ids[:seq_len], labels[:seq_len]
        if any(l != IGNORE for l in labels[1:]):
            examples.append(Example(ids, labels))
    return examples, truncated


def dataset_examples(tokenizer, dataset, seq_len: int, *, completion_column: str = "solution",
                     max_examples: int = 0) -> tuple[list[Example], dict]:
    """Examples from a `datasets` split: `text` -> plain LM; `prompt` + completion -> masked SFT."""
    columns = set(dataset.column_names)
    if max_examples:
        dataset = dataset.select(range(min(max_examples, len(dataset))))
    if "prompt" in columns and completion_column in columns:
        examples, truncated = prompt_completion_examples(tokenizer, dataset["prompt"], dataset[completion_column],
                                                         seq_len)
        kind = "prompt_completion"
    elif "text" in columns:
        examples, truncated = text_examples(tokenizer, dataset["text"], seq_len), 0
        kind = "text"
    else:
        raise ValueError(f"dataset with columns {sorted(columns)}: need a 'text' column or 'prompt' + "
                         f"'{completion_column}' columns")
    n_tokens = sum(len(e.input_ids) for e in examples)
    n_trained = sum(sum(1 for l in e.labels if l != IGNORE) for e in examples)
    return examples, {"kind": kind, "examples": len(examples), "truncated": truncated, "tokens": n_tokens,
                      "trained_tokens": n_trained}


@dataclass
class PackedRows:
    """Fixed-length rows: input_ids/labels/position_ids/segment_ids, each (N, seq_len) int64."""

    input_ids: np.ndarray
    labels: np.ndarray
    position_ids: np.ndarray
    segment_ids: np.ndarray

    def __len__(self) -> int:
        return self.input_ids.shape[0]


def assign_rows(lengths: Sequence[int], seq_len: int, *, packing: bool = True, window: int = 64) -> list[list[int]]:
    """Which sequences go into which row of seq_len (indices per row, in order); one per row if not packing.

    First fit over the `window` most recently opened rows that still have room: close to the fill of
    sorting by length, while keeping the (shuffled) order, so no row collects only long or only
    short examples. Shared by supervised packing and RL rollout packing."""
    rows: list[list[int]] = []  # indices of examples per row
    room: list[int] = []  # free positions per row
    open_rows: list[int] = []  # rows that may still take an example, oldest first
    for i, L in enumerate(lengths):
        assert 0 < L <= seq_len, "sequences are cut to seq_len before packing"
        target = None
        if packing:
            target = next((r for r in open_rows[-window:] if room[r] >= L), None)
        if target is None:
            rows.append([])
            room.append(seq_len)
            target = len(rows) - 1
            if packing:
                open_rows.append(target)
        rows[target].append(i)
        room[target] -= L
        if packing and room[target] < 2:  # nothing trainable fits in fewer than 2 positions
            open_rows.remove(target)
    return rows


def pack(examples: Sequence[Example], seq_len: int, pad_id: int, *, packing: bool = True,
         window: int = 64) -> PackedRows:
    """Lay examples into rows of seq_len (`assign_rows`). Segment ids count from 1 within a row;
    padding is segment 0 with label -100, so no real token attends to it and it adds no loss."""
    rows = assign_rows([len(ex.input_ids) for ex in examples], seq_len, packing=packing, window=window)
    n = len(rows)
    input_ids = np.full((n, seq_len), pad_id, dtype=np.int64)
    labels = np.full((n, seq_len), IGNORE, dtype=np.int64)
    position_ids = np.zeros((n, seq_len), dtype=np.int64)
    segment_ids = np.zeros((n, seq_len), dtype=np.int64)
    for r, members in enumerate(rows):
        at = 0
        for seg, i in enumerate(members, start=1):
            ex = examples[i]
            L = len(ex.input_ids)
            input_ids[r, at:at + L] = ex.input_ids
            labels[r, at:at + L] = ex.labels
            labels[r, at] = IGNORE  # nothing inside the segment predicts its first token
            position_ids[r, at:at + L] = np.arange(L)
            segment_ids[r, at:at + L] = seg
            at += L
        # padding keeps counting positions so position ids stay inside the RoPE table
        position_ids[r, at:] = np.arange(seq_len - at)
    return PackedRows(input_ids, labels, position_ids, segment_ids)


class SupervisedData:
    """Deterministic step -> micro-batches map over packed rows (see module docstring)."""

    def __init__(self, rows: PackedRows, *, micro_batch_size: int, grad_accum: int, world_size: int = 1,
                 seed: int = 0, max_steps: int = 0, epochs: float = 1.0,
                 expert_bias_gamma: float | None = None) -> None:
        self.rows = rows
        self.expert_bias_gamma = expert_bias_gamma  # None: the model's bias_update_speed
        self.micro_batch_size = micro_batch_size
        self.grad_accum = grad_accum
        self.world_size = world_size
        self.seed = seed
        self.rows_per_step = micro_batch_size * grad_accum * world_size
        self.steps_per_epoch = len(rows) // self.rows_per_step
        if self.steps_per_epoch < 1:
            raise ValueError(f"{len(rows)} packed rows cannot fill one global batch of {self.rows_per_step} rows "
                             f"(train.micro_batch_size x train.grad_accum x processes); lower them or add data")
        self.num_steps = max_steps if max_steps > 0 else max(1, math.floor(epochs * self.steps_per_epoch))
        self._perm_epoch = -1
        self._perm: np.ndarray | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.rows))
            self._perm_epoch = epoch
        return self._perm

    def epoch_of(self, step: int) -> float:
        return step / self.steps_per_epoch

    def global_rows(self, step: int) -> np.ndarray:
        """Row indices of the global batch of optimizer step `step` (0-based)."""
        epoch, index = divmod(step, self.steps_per_epoch)
        perm = self._permutation(epoch)
        return perm[index * self.rows_per_step:(index + 1) * self.rows_per_step]

    def micro_batch_rows(self, step: int, rank: int = 0) -> list[np.ndarray]:
        """Row indices of this process's grad_accum micro-batches for `step`."""
        rows = self.global_rows(step)
        per_rank = self.micro_batch_size * self.grad_accum
        mine = rows[rank * per_rank:(rank + 1) * per_rank]
        return [mine[a * self.micro_batch_size:(a + 1) * self.micro_batch_size] for a in range(self.grad_accum)]

    def micro_batches(self, step: int, rank: int = 0) -> list[dict[str, torch.Tensor]]:
        """This process's grad_accum micro-batches for `step`: dicts of (micro_batch_size, seq_len) tensors."""
        out = []
        for idx in self.micro_batch_rows(step, rank):
            out.append({
                "input_ids": torch.from_numpy(self.rows.input_ids[idx]),
                "labels": torch.from_numpy(self.rows.labels[idx]),
                "position_ids": torch.from_numpy(self.rows.position_ids[idx]),
                "segment_ids": torch.from_numpy(self.rows.segment_ids[idx]),
            })
        return out

    def fingerprint(self) -> dict:
        """What fixes the order of rows: a resumed run must match it to continue the same run."""
        return {"seed": self.seed, "rows": len(self.rows), "rows_per_step": self.rows_per_step}

    def state_dict(self, step: int) -> dict:
        """The data position a checkpoint records (the step determines the rest)."""
        return {"step": step, "epoch": self.epoch_of(step), **self.fingerprint()}

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict]:
        """Next-token + MTP + balance loss as the model composes it; this micro-batch's share of the step."""
        out = model(**batch)
        mtp = out.mtp_losses or []
        metrics = {"main_loss": out.main_loss.detach(),
                   "mtp_loss": sum(float(m.detach()) for m in mtp) / max(1, len(mtp)),
                   "balance_loss": out.balance_loss.detach() if out.balance_loss is not None else 0.0,
                   "trained_tokens": float((batch["labels"] != IGNORE).sum())}
        return out.loss / self.grad_accum, {k: float(v) for k, v in metrics.items()}

    def after_step(self, model: torch.nn.Module, step: int) -> dict:
        """Auxiliary-loss-free balancing once per optimizer step (the loads of the whole accumulated step)."""
        from rlpipe.train.loop import expert_load_metrics

        return expert_load_metrics(model.update_expert_bias(self.expert_bias_gamma))

    def load_state_dict(self, state: dict) -> None:
        self.check_resume(state)

    def check_resume(self, state: dict) -> None:
        for key, value in self.fingerprint().items():
            if state.get(key, value) != value:
                raise ValueError(f"checkpoint data position was made with {key}={state[key]}, this run has "
                                 f"{value}: the data or the batch layout changed, so resuming would not continue "
                                 f"the same run. Start a new run (run=<name>) or set resume=false")
