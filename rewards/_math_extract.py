r"""Private: where a response's final answer is, for `rewards.math.extract_answer` (rules there).

What this module does:
- `extract(text, broad)`: the final answer of a response, or None. Both modes look only at the
  response's final part (`rewards.format.response_region`, the one rule every grader shares), so a
  box only inside `<think>` is never an answer.
  - strict (`broad=False`, the RL reward's default): `<answer>` blocks, else the last `\boxed{}`;
    a second, different box close before it is a hedge and means no answer.
  - broad (`broad=True`, for datasets and evaluation): `<answer>` blocks; else the last run of
    boxes joined only by connectors (`\boxed{1}, \boxed{2} and \boxed{3}` is the list `1, 2, 3`);
    else the text after the last GSM8K `####`; else what follows the last "final answer" /
    "the answer is" / "Answer:"; else the last run of math spans (`$…$`, `$$…$$`, `\(…\)`,
    `\[…\]`); else the last number.
- `marked(text)`: the broad rules without the last-number fallback -- the answer a text marks
  as such, which `math_equal` may read from a side given as a sentence.

Every scan is linear in the text; the broad rules read only the last `BROAD_WINDOW` characters
of the response region (from a line start), where a final answer stands.
"""
from __future__ import annotations

import re

from rewards.format import answer_blocks, response_region
from rewards._math_parse import _match_brace

HEDGE_GAP = 40           # characters: a different box this close before the last one is a hedge
MAX_LIST_ITEMS = 64      # items of one list answer; the checker compares no longer lists anyway
BROAD_WINDOW = 20_000    # characters at the end of the response the broad rules read

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
# What may stand between the items of one answer list: `, ; and or`, `\text{ and }`, `\quad`,
# the `$` of separate math spans, spacing.
_CONNECTOR = re.compile(
    r"(?:\s|,|;|\$|&|\band\b|\bor\b|\\text\s*\{\s*(?:and|or|,)?\s*\}|\\q?quad\b|\\[,;:!])*", re.IGNORECASE)
_GSM8K_MARK = re.compile(r"####\s*([^\n]*)")
_PHRASE = re.compile(
    r"final\s+answer\s*(?:is\s*)?[:：]?|\bthe\s+(?:final\s+)?answer\s+(?:is|will\s+be|should\s+be)\s*[:：]?"
    r"|\banswer\s*[:：]", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?=\s|$)|\n")
_NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:\s*/\s*\d+)?")


class _Disowned(Exception):
    """The text names its answer only to deny it ("the answer is not 5"): no answer at all,
    rather than a number picked from the denial."""


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """All balanced \\boxed{...} contents with their spans, in order (nested boxes: outermost)."""
    spans = []
    pos = 0
    while True:
        m = _BOX.search(text, pos)
        if not m:
            return spans
        end = _match_brace(text, m.end() - 1)
        if end < 0:
            return spans            # an unclosed box (truncated output) and everything after it
        spans.append((m.start(), end + 1, text[m.end():end]))
        pos = end + 1


def math_spans(text: str) -> list[tuple[int, int, str]]:
    """`$…$`, `$$…$$`, `\\(…\\)`, `\\[…\\]` spans with their contents, in order; `\\$` is a dollar."""
    spans = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\" and i + 1 < n:
            nxt = text[i + 1]
            if nxt in "([":
                close = "\\)" if nxt == "(" else "\\]"
                end = text.find(close, i + 2)
                if end < 0:
                    return spans
                spans.append((i, end + 2, text[i + 2:end]))
                i = end + 2
            else:
                i += 2                     # an escaped character (`\$`) or a macro's backslash
            continue
        if c == "$":
            delim = "$$" if text.startswith("$$", i) else "$"
            j = i + len(delim)
            while True:
                end = text.find(delim, j)
                if end < 0:
                    return spans
                if text[end - 1] != "\\":
                    break
                j = end + 1
            spans.append((i, end + len(delim), text[i + len(delim):end]))
            i = end + len(delim)
            continue
        i += 1
    return spans


def _same(a: str, b: str) -> bool:
    return " ".join(a.split()) == " ".join(b.split())


def _last_run(text: str, items: list[tuple[int, int, str]]) -> str | None:
    """The last item together with the items before it that only connectors separate, joined as
    one list answer (`1, 2, 3`); repeated items count once."""
    if not items:
        return None
    run = [items[-1]]                     # built backwards, from the last item
    for prev in reversed(items[:-1]):
        if len(run) >= MAX_LIST_ITEMS or not _CONNECTOR.fullmatch(text, prev[1], run[-1][0]):
            break
        run.append(prev)
    parts: list[str] = []
    seen: set[str] = set()
    for _, _, content in reversed(run):
        key = " ".join(content.split())
        if key and key not in seen:
            seen.add(key)
            parts.append(content.strip())
    return ", ".join(parts) or None


def _strict_box(boxes: list[tuple[int, int, str]]) -> str | None:
    last = boxes[-1]
    for prev in reversed(boxes[:-1]):
        if last[0] - prev[1] > HEDGE_GAP:
            break
        if not _same(prev[2], last[2]):
            return None          # \boxed{3} or \boxed{4}: a hedge earns nothing
    return last[2].strip() or None


def _after_phrase(region: str) -> str | None:
    """What follows the last "final answer" / "the answer is" / "Answer:": its math spans when
    it starts with one, else the text up to the end of the sentence. Raises _Disowned for
    "... is not 5"."""
    matches = list(_PHRASE.finditer(region))
    if not matches:
        return None
    rest = region[matches[-1].end():].lstrip(" \t*")
    if re.match(r"not\b", rest, re.IGNORECASE):
        raise _Disowned()
    spans = math_spans(rest)
    if spans and not rest[:spans[0][0]].strip():
        end_of_line = rest.find("\n", spans[0][1])
        line_spans = [s for s in spans if end_of_line < 0 or s[1] <= end_of_line]
        first_run = [line_spans[0]]
        for span in line_spans[1:]:
            if not _CONNECTOR.fullmatch(rest, first_run[-1][1], span[0]):
                break
            first_run.append(span)
        return _last_run(rest, first_run)
    if not rest.strip():
        return None
    stop = _SENTENCE_END.search(rest)
    answer = (rest[:stop.start()] if stop else rest).strip()
    return answer or None


def _tail(region: str) -> str:
    """The last BROAD_WINDOW characters, from a line start (a cut inside `$…$` would pair every
    later dollar wrongly): a final answer stands at the end, and megabyte texts stay cheap."""
    if len(region) <= BROAD_WINDOW:
        return region
    start = len(region) - BROAD_WINDOW
    newline = region.find("\n", start)
    return region[newline + 1:] if newline >= 0 else region[start:]


def marked(region: str) -> str | None:
    """The broad rules up to the math spans (no last-number fallback), on a response region."""
    try:
        return _marked(_tail(region))
    except _Disowned:
        return None


def _marked(region: str) -> str | None:
    boxes = boxed_spans(region)
    if boxes:
        return _last_run(region, boxes)
    marks = list(_GSM8K_MARK.finditer(region))
    if marks and marks[-1].group(1).strip():
        return marks[-1].group(1).strip()
    answer = _after_phrase(region)
    if answer is not None:
        return answer
    return _last_run(region, math_spans(region))


def extract(text: str, broad: bool = False) -> str | None:
    """The final answer of a response (module docstring), or None."""
    blocks = answer_blocks(text)
    if blocks is None:
        return None          # nested, unclosed or stray tags: not one well-formed answer
    if blocks:
        answers = []
        for block in blocks:
            boxes = boxed_spans(block)
            answers.extend(b[2] for b in boxes) if boxes else answers.append(block)
        answers = [a.strip() for a in answers]
        if any(not a for a in answers) or any(not _same(a, answers[0]) for a in answers):
            return None
        return answers[0]
    region = response_region(text)
    if not broad:
        boxes = boxed_spans(region)
        return _strict_box(boxes) if boxes else None
    region = _tail(region)
    try:
        answer = _marked(region)
    except _Disowned:
        return None
    if answer is not None:
        return answer
    numbers = _NUMBER.findall(region)
    return numbers[-1].strip() if numbers else None
