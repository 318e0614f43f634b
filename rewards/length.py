"""Length and shaping rewards: Kimi k1.5 length penalty, DAPO overlong punishment, n-gram repetition.

- `kimi_length_reward` (Kimi k1.5, recipes.md section 4). Over the k samples of ONE prompt:
  `lambda_i = 0.5 - (len_i - min_len) / (max_len - min_len)`; the reward is `lambda_i` for a correct
  sample and `min(0, lambda_i)` for a wrong one; all 0 when every sample has the same length.
  Short correct answers gain, long ones lose; wrong answers are only ever pushed shorter. Kimi adds
  it with a weight after a warm-up (the trainer's schedule, not this function's).
  It needs two things a plain reward does not see, passed as keyword columns:
    * group structure: `group_ids` (one hashable per sample; samples with the same id are one
      prompt's group). Without it, samples are grouped by the dataset `id` column, else by
      identical prompt text -- how GRPO batches repeat each prompt G times.
    * correctness: `correct` (one per sample: bool, or a reward where >= 1.0 means correct, or
      None for "not applicable": that sample gets None but its length still counts in the group's
      min/max). `rewards.combine` fills `correct` from the correctness rewards (task_accuracy,
      code, countdown, accuracy) of the same combination when the caller does not pass it.
- `overlong_reward` (DAPO soft overlong punishment, recipes.md section 2), with `L_max` =
  `max_length` and cache `C` = `cache_length`: 0 for `L <= L_max - C`, `((L_max - C) - L) / C`
  inside the cache window, -1 beyond `L_max`. Lengths are in tokens.
- `repetition_reward`: `max_penalty * (1 - distinct n-grams / n-grams)` over the completion's words
  (Chinese per Han character; format tags and special tokens are not words); 0 for no repetition, `max_penalty` (default -1) in the limit of one
  n-gram repeated forever. Catches the degenerate loops long-CoT RL drifts into.

Lengths: `completion_ids` (token id lists, what TRL passes) or `completion_lengths` (token counts)
when given; otherwise the Kimi penalty falls back to characters (it only compares lengths within a
group, so any unit proportional to tokens works) and the DAPO punishment, whose thresholds are in
tokens, refuses with an error naming the missing column.
"""

from __future__ import annotations

from typing import Any, Hashable, Sequence

import regex

from rewards.format import completion_text, prompt_text, strip_markup


def completion_lengths_of(
    completions: Sequence[Any],
    *,
    completion_ids: Sequence[Sequence[int]] | None = None,
    completion_lengths: Sequence[int] | None = None,
    require_tokens: bool = False,
    reward_name: str = "length reward",
) -> list[int]:
    """Per-sample length: token ids or counts when given, else characters of the text."""
    if completion_lengths is not None:
        lengths = [int(n) for n in completion_lengths]
    elif completion_ids is not None:
        lengths = [len(ids) for ids in completion_ids]
    elif require_tokens:
        raise ValueError(
            f"{reward_name} measures length in tokens: pass completion_ids (token id lists) or "
            "completion_lengths (token counts) to the reward function"
        )
    else:
        lengths = [len(completion_text(c)) for c in completions]
    if len(lengths) != len(completions):
        raise ValueError(
            f"{reward_name}: got {len(lengths)} lengths for {len(completions)} completions"
        )
    return lengths


def group_keys(
    prompts: Sequence[Any],
    *,
    group_ids: Sequence[Hashable] | None = None,
    row_ids: Sequence[Hashable] | None = None,
) -> list[Hashable]:
    """The group of each sample: `group_ids`, else the dataset `id` column (`row_ids`), else the
    prompt text."""
    if group_ids is not None:
        return list(group_ids)
    if row_ids is not None:
        return list(row_ids)
    return [prompt_text(p) for p in prompts]


def is_correct(value: Any) -> bool | None:
    """A correctness flag from a bool or a reward value (1.0 is correct: partial credit such as 2 of
    3 tests passed is not); None stays None."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    return float(value) >= 1.0 - 1e-9


def kimi_length_penalty(lengths: Sequence[int], correct: Sequence[bool | None]) -> list[float | None]:
    """Kimi k1.5 length reward for ONE prompt's group (see the module docstring)."""
    min_len, max_len = min(lengths), max(lengths)
    out: list[float | None] = []
    for length, ok in zip(lengths, correct):
        if ok is None:
            out.append(None)
            continue
        if max_len == min_len:
            out.append(0.0)
            continue
        lam = 0.5 - (length - min_len) / (max_len - min_len)
        out.append(lam if ok else min(0.0, lam))
    return out


def kimi_length_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    correct: Sequence[Any] | None = None,
    group_ids: Sequence[Hashable] | None = None,
    completion_ids: Sequence[Sequence[int]] | None = None,
    completion_lengths: Sequence[int] | None = None,
    **dataset_columns: Any,
) -> list[float | None]:
    """Kimi k1.5 length penalty, computed per prompt group. Needs `correct` (see module docstring)."""
    if correct is None:
        raise ValueError(
            "kimi_length needs per-sample correctness: pass correct=[...] (bools or rewards), or "
            "combine it with a correctness reward (task_accuracy, code, countdown or accuracy) in "
            "rewards.combine"
        )
    if len(correct) != len(completions):
        raise ValueError(f"kimi_length: got {len(correct)} correct flags for {len(completions)} completions")
    lengths = completion_lengths_of(
        completions,
        completion_ids=completion_ids,
        completion_lengths=completion_lengths,
        reward_name="kimi_length",
    )
    keys = group_keys(prompts, group_ids=group_ids, row_ids=dataset_columns.get("id"))
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    out: list[float | None] = [None] * len(completions)
    for idx in members.values():
        group = kimi_length_penalty([lengths[i] for i in idx], [is_correct(correct[i]) for i in idx])
        for i, value in zip(idx, group):
            out[i] = value
    return out


def overlong_penalty(length: int, max_length: int, cache_length: int) -> float:
    """DAPO soft overlong punishment of one response of `length` tokens."""
    if not 0 < cache_length <= max_length:
        raise ValueError(
            f"overlong punishment needs 0 < cache_length <= max_length, got cache_length="
            f"{cache_length}, max_length={max_length}"
        )
    threshold = max_length - cache_length
    if length <= threshold:
        return 0.0
    if length <= max_length:
        return (threshold - length) / cache_length
    return -1.0


def overlong_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    max_length: int,
    cache_length: int,
    completion_ids: Sequence[Sequence[int]] | None = None,
    completion_lengths: Sequence[int] | None = None,
    **dataset_columns: Any,
) -> list[float | None]:
    """DAPO overlong punishment per sample; lengths in tokens (`completion_ids`/`completion_lengths`)."""
    lengths = completion_lengths_of(
        completions,
        completion_ids=completion_ids,
        completion_lengths=completion_lengths,
        require_tokens=True,
        reward_name="overlong",
    )
    return [overlong_penalty(n, max_length, cache_length) for n in lengths]


# Words for repetition: a Han character is a word (Chinese has no spaces); other letters and
# digits group into words; punctuation is dropped.
_REPETITION_WORD = regex.compile(r"\p{Han}|[\p{L}\p{M}\p{N}_']+")


def repetition_penalty(text: str, ngram_size: int = 3, max_penalty: float = -1.0) -> float:
    """`max_penalty * (1 - distinct / total)` over the word n-grams of `text`; 0 when too short."""
    if ngram_size < 1:
        raise ValueError(f"repetition penalty needs ngram_size >= 1, got {ngram_size}")
    words = [w.lower() for w in _REPETITION_WORD.findall(strip_markup(text))]
    total = len(words) - ngram_size + 1
    if total <= 0:
        return 0.0
    distinct = len({tuple(words[i : i + ngram_size]) for i in range(total)})
    return max_penalty * (1.0 - distinct / total)


def repetition_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    ngram_size: int = 3,
    max_penalty: float = -1.0,
    **dataset_columns: Any,
) -> list[float | None]:
    """N-gram repetition penalty of each whole completion, in [max_penalty, 0]."""
    return [repetition_penalty(completion_text(c), ngram_size, max_penalty) for c in completions]
