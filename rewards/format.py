"""The R1 response format and the rewards that check it.

The policy answers as `<think> reasoning </think> <answer> final answer </answer>` (DeepSeek-R1's
template; recipes.md section 3). This module:

- `completion_text`: a completion given as a string or as chat messages -> the assistant's text.
- `split_response` / `think_text` / `answer_text` / `strip_markup`: the parts of a response, shared
  by the other rewards (language consistency reads the CoT, countdown reads the answer).
- `response_region` / `answer_blocks`: where a grader looks for the final answer -- one rule for
  the math, countdown and code graders, so no grader pays an answer the others would not see:
  the text after the last `</think>` (all of it when there is none), up to a `<think>` opened
  again. An answer only inside the reasoning is no answer; answer tags that do not pair up
  (nested, unclosed, stray) are no answer either.
- `check_format`: the strict verdict with the reason it failed, for debugging and the CLI.
- `format_reward`: 1.0 only for exactly one non-empty think block followed by exactly one
  non-empty answer block and nothing after it but whitespace or end-of-sequence tokens.
- `tag_count_reward`: a softer variant for early training (0.25 per correctly placed tag).
- `*_prefilled` variants for chat templates that already opened `<think>` in the prompt: the
  completion then starts INSIDE the think block. Checking such completions with the plain rule
  scores every one of them 0 (a trap peers fall into); checking them with a rule that merely
  tolerates a missing `<think>` lets a second `<think>` slip through. The prefilled rule puts the
  prompt's `<think>` back in front and applies the same strict check.

Every reward has the signature `f(prompts, completions, **dataset_columns) -> list[float | None]`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import regex

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
CANONICAL_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

# End-of-sequence (and padding) strings a decoder may leave after `</answer>` when special tokens are
# not skipped: this project's tokenizer first, then the common open-model ones.
EOS_TOKENS = (
    "<|eos|>",
    "<|pad|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|im_end|>",
    "</s>",
    "<｜end▁of▁sentence｜>",
)

# Any spelling a model might use for one of the four tags: case and inner spaces vary. A variant that
# is not the canonical spelling is malformed, so the strict check looks at every variant.
_TAG_RE = regex.compile(r"<\s*(/?)\s*(think|answer)\s*>", regex.IGNORECASE)
# Special tokens kept on decode: `<|eos|>`-style, DeepSeek's full-width `<｜...｜>`, and `</s>`.
_SPECIAL_TOKEN_RE = regex.compile(r"<\|[^|>\s]*\|>|<｜[^｜>]*｜>|</s>")


def strip_markup(text: str) -> str:
    """`text` with the format tags (any spelling) and special tokens such as `<|eos|>` replaced by
    spaces: what is left is what the model said, for rewards that judge content."""
    return _SPECIAL_TOKEN_RE.sub(" ", _TAG_RE.sub(" ", text))


def completion_text(completion: Any) -> str:
    """The assistant's text of one completion.

    Accepts a plain string or a chat-message list (`[{"role": "assistant", "content": ...}, ...]`,
    the conversational form TRL passes). Assistant messages are joined in order; a list without
    roles is joined whole. Content given as a list of parts keeps only the text parts.
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        completion = [completion]
    messages = list(completion)
    if any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages):
        messages = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    return "".join(_content_text(m) for m in messages)


def _content_text(message: Any) -> str:
    if isinstance(message, str):
        return message
    content = message.get("content", "") if isinstance(message, dict) else ""
    if isinstance(content, str):
        return content
    # Multimodal content: [{"type": "text", "text": ...}, ...]
    return "".join(part.get("text", "") for part in content if isinstance(part, dict))


def prompt_text(prompt: Any) -> str:
    """The text of a prompt given as a string or chat messages (all roles, in order)."""
    if prompt is None:
        return ""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, dict):
        prompt = [prompt]
    return "\n".join(_content_text(m) for m in prompt)


def _strip_trailing_eos(text: str, eos_tokens: Sequence[str]) -> str:
    """Drop trailing whitespace and end-of-sequence tokens, in any interleaving (linear time)."""
    end = len(text)
    while True:
        while end and text[end - 1].isspace():
            end -= 1
        tok = next((t for t in eos_tokens if t and text.endswith(t, 0, end)), None)
        if tok is None:
            return text[:end]
        end -= len(tok)


@dataclass(frozen=True)
class FormatVerdict:
    """The strict format check: `ok`, and when not ok, the first rule the text broke."""

    ok: bool
    reason: str
    think: str | None = None  # the reasoning text when the structure parsed
    answer: str | None = None  # the answer text when the structure parsed


def check_format(
    text: str,
    *,
    think_prefilled: bool = False,
    eos_tokens: Sequence[str] = EOS_TOKENS,
) -> FormatVerdict:
    """The strict R1 format check on one response text.

    Passes only for `ws <think>T</think> ws <answer>A</answer> (ws | EOS)*` where T and A hold no
    tag in any spelling and are non-empty after stripping whitespace. With `think_prefilled` the
    prompt already ended with `<think>`, so the text must not open it again.
    """
    if think_prefilled:
        text = THINK_OPEN + text
    body = _strip_trailing_eos(text, eos_tokens)
    tags = list(_TAG_RE.finditer(body))
    for m in tags:
        if m.group(0) not in CANONICAL_TAGS:
            return FormatVerdict(False, f"malformed tag {m.group(0)!r} at offset {m.start()}")
    names = [m.group(0) for m in tags]
    if names != list(CANONICAL_TAGS):
        counts = {t: names.count(t) for t in CANONICAL_TAGS}
        if any(c != 1 for c in counts.values()):
            detail = ", ".join(f"{t} x{c}" for t, c in counts.items() if c != 1)
            if think_prefilled and counts[THINK_OPEN] > 1:
                detail += " (the prompt already opened <think>)"
            return FormatVerdict(False, f"each tag must appear exactly once: {detail}")
        return FormatVerdict(False, f"tags out of order: {' '.join(names)}")
    t_open, t_close, a_open, a_close = tags
    if body[: t_open.start()].strip():
        return FormatVerdict(False, "text before <think>")
    think = body[t_open.end() : t_close.start()]
    between = body[t_close.end() : a_open.start()]
    answer = body[a_open.end() : a_close.start()]
    trailing = body[a_close.end() :]
    if between.strip():
        return FormatVerdict(False, "text between </think> and <answer>")
    if trailing.strip():
        return FormatVerdict(False, f"text after </answer>: {trailing.strip()[:40]!r}")
    if not think.strip():
        return FormatVerdict(False, "empty think block", think, answer)
    if not answer.strip():
        return FormatVerdict(False, "empty answer block", think, answer)
    return FormatVerdict(True, "ok", think.strip(), answer.strip())


def tag_count_score(text: str, *, think_prefilled: bool = False) -> float:
    """The soft tag score of one response: 0.25 for each of the four tags placed correctly.

    A tag is placed correctly when it appears exactly once (canonical spelling) and sits in the
    right order relative to every other tag that also appears exactly once. This gives a
    partial-credit gradient early in training, when a model emits some tags but not all.
    It ignores emptiness and trailing text; a completion that passes `check_format` scores 1.0 here.
    """
    if think_prefilled:
        text = THINK_OPEN + text
    positions: dict[int, int] = {}
    for k, tag in enumerate(CANONICAL_TAGS):
        if text.count(tag) == 1:
            positions[k] = text.index(tag)
    score = 0.0
    for k, pos in positions.items():
        if all((j < k) == (other < pos) for j, other in positions.items() if j != k):
            score += 0.25
    return score


def format_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    think_prefilled: bool = False,
    **dataset_columns: Any,
) -> list[float | None]:
    """R1 format reward: 1.0 when `check_format` passes, else 0.0 (never None)."""
    return [
        1.0 if check_format(completion_text(c), think_prefilled=think_prefilled).ok else 0.0
        for c in completions
    ]


def tag_count_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    think_prefilled: bool = False,
    **dataset_columns: Any,
) -> list[float | None]:
    """Soft format reward for early training: 0.25 per correctly placed tag (see `tag_count_score`)."""
    return [tag_count_score(completion_text(c), think_prefilled=think_prefilled) for c in completions]


def format_prefilled_reward(
    prompts: Sequence[Any], completions: Sequence[Any], **dataset_columns: Any
) -> list[float | None]:
    """`format_reward` for templates whose prompt already opened `<think>`."""
    return format_reward(prompts, completions, think_prefilled=True)


def tag_count_prefilled_reward(
    prompts: Sequence[Any], completions: Sequence[Any], **dataset_columns: Any
) -> list[float | None]:
    """`tag_count_reward` for templates whose prompt already opened `<think>`."""
    return tag_count_reward(prompts, completions, think_prefilled=True)


def response_region(text: str) -> str:
    """The part of a response that may hold its final answer: the text after the last `</think>`
    (the whole text when there is none), cut where a `<think>` opens again. The reasoning may quote
    tags, box intermediate results or draft code; none of that is the answer."""
    close = text.rfind(THINK_CLOSE)
    region = text[close + len(THINK_CLOSE):] if close >= 0 else text
    reopen = region.find(THINK_OPEN)
    return region if reopen < 0 else region[:reopen]


def answer_blocks(text: str) -> list[str] | None:
    """The contents of the `<answer>...</answer>` blocks in `response_region(text)`, in order ([]
    when there is no answer tag); None when the tags there do not pair up (nested, unclosed or
    stray): no well-formed answer. A str.find scan, linear in the text: a regex with a lazy `.*?`
    would be quadratic on a megabyte of unclosed `<answer>` tags."""
    region = response_region(text)
    blocks = []
    pos = 0
    while True:
        start = region.find(ANSWER_OPEN, pos)
        if start < 0:
            break
        end = region.find(ANSWER_CLOSE, start + len(ANSWER_OPEN))
        if end < 0:
            return None
        blocks.append(region[start + len(ANSWER_OPEN):end])
        pos = end + len(ANSWER_CLOSE)
    opened, closed = region.count(ANSWER_OPEN), region.count(ANSWER_CLOSE)
    return blocks if opened == closed == len(blocks) else None


def split_response(text: str) -> tuple[str | None, str | None]:
    """(think, answer) of a response, leniently, for rewards that read one part.

    think: the first `<think>...</think>` block; else, when only `</think>` is present (the prompt
    opened the block), the text before it; else None. answer: `answer_text(text)`.
    """
    think: str | None = None
    close = text.find(THINK_CLOSE)
    if close >= 0:
        open_ = text.rfind(THINK_OPEN, 0, close)
        think = text[open_ + len(THINK_OPEN) : close] if open_ >= 0 else text[:close]
    return think, answer_text(text)


def think_text(text: str) -> str:
    """The chain of thought of a response: the think block, or when there is none, the text before
    `<answer>` (the whole text when no answer tag either), so that an unformatted response is still
    judged on its reasoning rather than skipped."""
    think, _ = split_response(text)
    if think is not None:
        return think
    cut = text.find(ANSWER_OPEN)
    return text if cut < 0 else text[:cut]


def answer_text(text: str) -> str | None:
    """The content of the single `<answer>` block of the response's final part (`answer_blocks`),
    or None: missing, repeated (a hedge must not win), malformed, or only inside the reasoning."""
    blocks = answer_blocks(text)
    return blocks[0] if blocks is not None and len(blocks) == 1 else None
