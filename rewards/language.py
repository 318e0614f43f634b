"""DeepSeek-R1's language-consistency reward, and the language-mixing check used by evaluation.

R1 stage 2 adds `Num(target-language words in the CoT) / Num(words in the CoT)` to the accuracy
reward so the chain of thought stays in the prompt's language (recipes.md section 3). This module:

- Splits the CoT (the `<think>` block) into words and gives each word a side: TARGET, FOREIGN or
  NEUTRAL. Neutral words count on neither side: numbers, math (LaTeX commands, `$...$`, single
  letters used as variables, function names such as `sin`), code (fenced or inline code, tokens
  shaped like identifiers: `snake_case`, `camelCase`, `x1`, `f(`), and same-script words no word
  list knows (names, rare words, typos: there is nothing to tell which language they belong to).
- Script first (the `regex` module's Unicode script classes): a word whose script the target
  language does not use is FOREIGN. Chinese is counted per Han character (each character is one
  word), so a Chinese phrase weighs by its length in characters, not by one token.
- Same script, several languages (English, French, German... all Latin): `wordfreq`'s word lists
  (shipped offline in the package, cached per language) decide. A word is TARGET when the target's
  list knows it and no rival language uses it more than `SAME_SCRIPT_MARGIN` zipf (10x) more often;
  FOREIGN when a rival does; NEUTRAL when no list knows it. Word-level decisions are noisy for words
  shared across languages (English "die" reads as German); on whole sentences the share separates
  cleanly (English text ~0.98 English, French/German/Spanish text <= 0.2 English).
- The target is the dataset column `language` ('en', 'zh', 'fr', ...), or when absent, detected
  from the prompt's question (`detect_language`).

`language_reward` returns the share in [0, 1], None for a CoT with no countable word.
`is_language_mixed(text, language)` flags a response whose share falls below a threshold.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Sequence

import regex

from rewards.format import completion_text, prompt_text, strip_markup, think_text

# Which script each supported language writes in. Languages are wordfreq's codes.
LATIN_LANGUAGES = (
    "en", "fr", "de", "es", "it", "pt", "nl", "ca", "cs", "da", "fi", "fil", "hu", "id", "is",
    "lt", "lv", "ms", "nb", "pl", "ro", "sh", "sk", "sl", "sv", "tr", "vi",
)  # fmt: skip
_SCRIPT_LANGUAGES: dict[str, tuple[str, ...]] = {
    "Latin": LATIN_LANGUAGES,
    "Han": ("zh", "ja"),  # kanji are Japanese too; zh and ja are not told apart by Han characters
    "Kana": ("ja",),
    "Hangul": ("ko",),
    "Cyrillic": ("ru", "uk", "bg", "mk"),
    "Greek": ("el",),
    "Arabic": ("ar", "fa", "ur"),
    "Hebrew": ("he",),
    "Devanagari": ("hi",),
    "Bengali": ("bn",),
    "Tamil": ("ta",),
}
SUPPORTED_LANGUAGES = tuple(sorted({lang for langs in _SCRIPT_LANGUAGES.values() for lang in langs}))

# Same-script rivals compared against the target with word lists. The common European languages
# only: each list costs a few MB and ~5 ms to load, and these are the realistic mix-ins.
SAME_SCRIPT_RIVALS: dict[str, tuple[str, ...]] = {
    "Latin": ("en", "fr", "de", "es", "it", "pt", "nl"),
    "Cyrillic": ("ru", "uk", "bg", "mk"),
    "Arabic": ("ar", "fa", "ur"),
}
# A rival must use a word this many zipf units (log10 frequency) more often than the target to
# claim it: 1.0 = ten times more often. Measured on parallel en/fr/de/es sentences, 0.5-1.0 separate
# best; larger margins let common words of one language count for the other.
SAME_SCRIPT_MARGIN = 1.0

# Written math that looks like words but is not language.
MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log ln lg exp lim max min sup inf "
    "gcd lcm mod det deg dim ker arg sgn sqrt frac dfrac tfrac cdot times div pm mp le ge ne leq geq "
    "neq approx infty pi mathrm mathbf text boxed left right".split()
)

TARGET, FOREIGN, NEUTRAL = "target", "foreign", "neutral"

# Spans that are code or typeset math as a whole, removed before counting (neutral):
# opener -> (closer, may the span cross a newline?). Longest openers first.
_NEUTRAL_SPANS = {"```": ("```", True), "$$": ("$$", True), "\\[": ("\\]", True),
                  "\\(": ("\\)", True), "`": ("`", False), "$": ("$", False)}
_SPAN_OPENER = regex.compile("|".join(regex.escape(o) for o in _NEUTRAL_SPANS))
_LATEX_COMMAND = regex.compile(r"\\[A-Za-z]+")
# One token at a time, first matching alternative wins. Code- and number-shaped tokens come first so
# that `x1`, `snake_case`, `np.array`, `sqrt(` never reach the word lists. Han characters are one
# word each. ASCII-only code shapes keep Chinese text with digits in it ("值为3") countable.
_TOKEN = regex.compile(
    r"""
    (?P<code>
        [A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+
      | [A-Za-z_][A-Za-z0-9_]*(?=\()
      | [A-Za-z0-9_]*[0-9_][A-Za-z0-9_]*
      | [A-Za-z]*[a-z][A-Z][A-Za-z]*
    )
    | (?P<number>\p{N}+)
    | (?P<Han>\p{Han})
    | (?P<Kana>[\p{Hiragana}\p{Katakana}ー]+)
    | (?P<Hangul>\p{Hangul}+)
    | (?P<Latin>[\p{Latin}\p{M}]+(?:'[\p{Latin}\p{M}]+)*)
    | (?P<Cyrillic>[\p{Cyrillic}\p{M}]+)
    | (?P<Greek>[\p{Greek}\p{M}]+)
    | (?P<Arabic>[\p{Arabic}\p{M}]+)
    | (?P<Hebrew>[\p{Hebrew}\p{M}]+)
    | (?P<Devanagari>[\p{Devanagari}\p{M}]+)
    | (?P<Bengali>[\p{Bengali}\p{M}]+)
    | (?P<Tamil>[\p{Tamil}\p{M}]+)
    | (?P<Other>\p{L}[\p{L}\p{M}]*)
    """,
    regex.VERBOSE,
)


def _drop_neutral_spans(text: str) -> str:
    """`text` without code and typeset-math spans, in linear time.

    A lazy regex such as `\\[.*?\\]` rescans to the end for every unclosed opener: quadratic on
    hostile text (100k `\\[` took 15 s). Here an opener whose closer is missing anywhere later is
    remembered, so each closer is searched past a position at most once.
    """
    out: list[str] = []
    pos = 0
    unclosed: set[str] = set()  # closers known to be absent after the current position
    while True:
        m = _SPAN_OPENER.search(text, pos)
        if m is None:
            out.append(text[pos:])
            return " ".join(out)
        opener = m.group(0)
        closer, multiline = _NEUTRAL_SPANS[opener]
        out.append(text[pos : m.start()])
        if opener == "```":
            end = text.find(closer, m.end())
            pos = len(text) if end < 0 else end + len(closer)  # an unclosed fence runs to the end
            continue
        end = -1 if closer in unclosed and multiline else text.find(closer, m.end())
        if end < 0 and multiline:
            unclosed.add(closer)
        if end < 0 or (not multiline and text.find("\n", m.end(), end) >= 0):
            out.append(opener)  # not a span: keep the character, move on
            pos = m.end()
            continue
        pos = end + len(closer)


def normalize_language(language: Any) -> str:
    """'en', 'EN', 'en-US', 'zh_Hans' -> 'en' / 'zh'. Raises ValueError for an unsupported code."""
    code = str(language).strip().lower().replace("_", "-").split("-")[0]
    if code not in SUPPORTED_LANGUAGES:
        raise ValueError(
            f"language {language!r} is not supported by the language-consistency reward; "
            f"set the dataset column 'language' to one of {', '.join(SUPPORTED_LANGUAGES)}"
        )
    return code


@functools.lru_cache(maxsize=None)
def _zipf_table(language: str) -> dict[str, float]:
    """word -> zipf frequency from wordfreq's 'small' list (words down to zipf 3, ~30k a language).

    Built once per language per process; the 'small' lists keep memory and load time low
    (about 5 ms each) while covering the words that carry a language signal.
    """
    import wordfreq  # deferred: only same-script decisions need it

    table: dict[str, float] = {}
    for bucket, words in enumerate(wordfreq.get_frequency_list(language, wordlist="small")):
        zipf = wordfreq.cB_to_zipf(-bucket)
        for word in words:
            table.setdefault(word, zipf)
    return table


def _rivals(script: str, target: str) -> tuple[str, ...]:
    rivals = SAME_SCRIPT_RIVALS.get(script, _SCRIPT_LANGUAGES[script])
    return tuple(dict.fromkeys((target, *rivals)))


def _same_script_side(word: str, script: str, target: str) -> str:
    """TARGET / FOREIGN / NEUTRAL for a word in a script the target shares with other languages."""
    candidates = _rivals(script, target)
    if "'" in word and not any(word in _zipf_table(lang) for lang in candidates):
        # Elisions the lists split ("l'équation" -> "équation"): judge by the longest part.
        word = max(word.split("'"), key=len)
    if len(word) < 2:
        return NEUTRAL
    z_target = _zipf_table(target).get(word, 0.0)
    z_rival = max((_zipf_table(lang).get(word, 0.0) for lang in candidates if lang != target), default=0.0)
    if z_target == 0.0 and z_rival == 0.0:
        return NEUTRAL
    if z_target > 0.0 and z_target >= z_rival - SAME_SCRIPT_MARGIN:
        return TARGET
    return FOREIGN


@dataclass
class LanguageCount:
    """Word counts of one text against one target language."""

    language: str
    target: int = 0
    foreign: int = 0
    neutral: int = 0
    foreign_words: list[str] = field(default_factory=list)

    @property
    def words(self) -> int:
        return self.target + self.foreign

    @property
    def share(self) -> float | None:
        """R1's consistency: target words / counted words; None when nothing was countable."""
        return self.target / self.words if self.words else None


def iter_words(text: str):
    """(word, script) for every token of `text`; neutral tokens come with script None.

    Han characters come one at a time. Code, typeset math, numbers, identifier-shaped tokens,
    single letters (variables) and math function names come with script None.
    """
    text = unicodedata.normalize("NFC", text).replace("’", "'")
    text = strip_markup(text)
    text = _drop_neutral_spans(text)
    text = _LATEX_COMMAND.sub(" ", text)
    for match in _TOKEN.finditer(text):
        script = match.lastgroup
        word = match.group(0)
        if script in ("code", "number"):
            yield word, None
        elif script in ("Latin", "Greek", "Cyrillic") and len(word) == 1:
            yield word, None  # a single letter is a variable (x, α), not a word
        elif script == "Latin" and word.lower() in MATH_WORDS:
            yield word, None
        else:
            yield word, script


def count_language(text: str, language: str) -> LanguageCount:
    """Count TARGET / FOREIGN / NEUTRAL words of `text` for the target `language`."""
    target = normalize_language(language)
    count = LanguageCount(target)
    for word, script in iter_words(text):
        if script is None:
            count.neutral += 1
            continue
        langs = _SCRIPT_LANGUAGES.get(script, ())
        if target not in langs:
            side = FOREIGN
        elif script in SAME_SCRIPT_RIVALS:
            side = _same_script_side(word.lower(), script, target)
        else:
            side = TARGET
        if side == TARGET:
            count.target += 1
        elif side == FOREIGN:
            count.foreign += 1
            count.foreign_words.append(word)
        else:
            count.neutral += 1
    return count


def language_consistency(text: str, language: str) -> float | None:
    """Share of words of `text` (taken as a CoT as-is) in `language`; None when it has no word."""
    return count_language(text, language).share


def _question_text(prompt: Any) -> str:
    """The user's question inside a prompt: template text around it is English even for a Chinese
    question, so detecting on the whole prompt would always say 'en'."""
    if isinstance(prompt, (list, tuple)) and prompt and isinstance(prompt[0], dict):
        users = [m for m in prompt if m.get("role") == "user"]
        return prompt_text(users[-1:] or prompt)
    text = prompt_text(prompt)
    for start, end in (("<|user|>", "<|assistant|>"), ("User:", "Assistant:")):
        if start in text:
            text = text[text.rindex(start) + len(start) :]
            return text.split(end)[0]
    return text


def detect_language(text: str, default: str = "en") -> str:
    """The most likely language of `text`, offline: votes per word, by script, then by word list.

    Han characters vote zh (ja when kana are present too); a Latin, Cyrillic or Arabic word votes
    for every rival whose word list uses it within `SAME_SCRIPT_MARGIN` of the most frequent one.
    Ties go to `default`; `default` also when no word votes.
    """
    votes: dict[str, int] = {}
    has_kana = False
    for word, script in iter_words(text):
        if script is None or script == "Other":
            continue
        if script == "Kana":
            has_kana = True
        if script in SAME_SCRIPT_RIVALS:
            # A word shared by several languages ("we": English and Dutch) votes for each of them
            # that uses it within the margin of the most frequent one.
            lower = word.lower()
            scored = {lang: _zipf_table(lang).get(lower, 0.0) for lang in SAME_SCRIPT_RIVALS[script]}
            best = max(scored.values())
            for lang, zipf in scored.items():
                if best > 0.0 and zipf >= best - SAME_SCRIPT_MARGIN:
                    votes[lang] = votes.get(lang, 0) + 1
        else:
            lang = _SCRIPT_LANGUAGES[script][0]
            votes[lang] = votes.get(lang, 0) + 1
    if has_kana and "zh" in votes:
        votes["ja"] = votes.get("ja", 0) + votes.pop("zh")
    return max(votes, key=lambda lang: (votes[lang], lang == default)) if votes else default


def language_reward(
    prompts: Sequence[Any],
    completions: Sequence[Any],
    *,
    language: Sequence[Any] | None = None,
    **dataset_columns: Any,
) -> list[float | None]:
    """R1 language consistency of each completion's CoT: share of words in the target language.

    Target: the `language` column (one code per row), else detected from the prompt's question.
    None for a CoT without countable words.
    """
    if isinstance(language, str):  # one language for the whole batch
        language = [language] * len(completions)
    rewards: list[float | None] = []
    for i, completion in enumerate(completions):
        row_language = language[i] if language is not None else None
        if row_language in (None, ""):
            row_language = detect_language(_question_text(prompts[i]))
        rewards.append(language_consistency(think_text(completion_text(completion)), row_language))
    return rewards


def is_language_mixed(text: str, language: str | None = None, threshold: float = 0.9) -> bool:
    """True when the CoT of `text` (its think block; the text before `<answer>` without one) has
    less than `threshold` of its words in `language` (detected from the text when None).

    The default 0.9 tolerates the word-level noise of same-script languages (~2% on clean English)
    while a single Chinese clause in an English CoT, or an English sentence in a Chinese one, trips it.
    A CoT with no countable word is not mixed.
    """
    cot = think_text(text)
    share = language_consistency(cot, language or detect_language(cot))
    return share is not None and share < threshold
