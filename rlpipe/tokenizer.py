"""Tokenizer: a small byte-level BPE for the policy, saved as a `PreTrainedTokenizerFast` folder.

- Byte-level BPE trained with the `tokenizers` library on the project's own corpus, so English and
  Chinese (and any other UTF-8 text) encode with no unknown token: every byte is in the base alphabet.
- Digits are split one per token before BPE, so "472" is always `4 7 2`: the arithmetic traces work
  digit by digit and a tiny model learns column arithmetic far more easily when numbers do not
  fall into arbitrary multi-digit merges.
- Special tokens `<|bos|>`, `<|eos|>`, `<|pad|>`, `<|system|>`, `<|user|>`, `<|assistant|>` (dropped by
  `decode(..., skip_special_tokens=True)`); the R1 tags `<think>`, `</think>`, `<answer>`, `</answer>`
  are single added tokens that are NOT special, so they survive decoding and reward functions see them.
- A Jinja chat template saved with the tokenizer, so `AutoTokenizer` and vLLM format chats the same
  way the pipeline does: `<|bos|>[<|system|>S]<|user|>U<|assistant|>R<|eos|>...`.
  The template writes `<|bos|>` itself and no post-processor adds one, so a formatted prompt holds
  exactly one BOS whether or not the caller passes `add_special_tokens`.
- `format_prompt` gives the prompt text up to where the assistant's response starts; the response
  is `<think>...</think> <answer>...</answer>` followed by `<|eos|>`.
- `render_chat` renders the same template without a tokenizer (the data builder writes the pretraining
  corpus before any tokenizer exists).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
SYSTEM, USER, ASSISTANT = "<|system|>", "<|user|>", "<|assistant|>"
SPECIAL_TOKENS = [BOS, EOS, PAD, SYSTEM, USER, ASSISTANT]
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
TAG_TOKENS = [THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE]

# One template, used by transformers/vLLM (through the saved tokenizer) and by `render_chat`.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>{{ message['content'] }}{{ eos_token }}"
    "{% else %}{{ raise_exception('unknown role: ' + message['role']) }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

# Enough context for the longest task traces with headroom; the model's own limit is its config's.
MODEL_MAX_LENGTH = 2048


def _raise_exception(message: str):
    raise ValueError(message)


@functools.lru_cache(maxsize=1)
def _compiled_template():
    # Same environment options as transformers' chat-template renderer.
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(CHAT_TEMPLATE)


def render_chat(messages: list[dict], add_generation_prompt: bool = False) -> str:
    """Render `messages` with CHAT_TEMPLATE exactly as `tokenizer.apply_chat_template(tokenize=False)`."""
    return _compiled_template().render(
        messages=messages, add_generation_prompt=add_generation_prompt, bos_token=BOS, eos_token=EOS
    )


def render_prompt(prompt_text: str, system: str | None = None) -> str:
    """The chat-formatted prompt for one user turn, ending where the assistant's response starts."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt_text}
    ]
    return render_chat(messages, add_generation_prompt=True)


def format_prompt(tokenizer, prompt_text: str, system: str | None = None) -> str:
    """The tokenizer's chat template applied to one user turn, with the generation prompt appended."""
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt_text}
    ]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def prompt_ids(tokenizer, prompts: Iterable[str]) -> list[list[int]]:
    """Token ids of each prompt in the chat template, ending where the response starts: what every
    engine generates from and every trainer scores after (one tokenising rule for all of them)."""
    texts = [format_prompt(tokenizer, p) for p in prompts]
    return [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]] if texts else []


def _build_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    n_reserved = len(SPECIAL_TOKENS) + len(TAG_TOKENS)
    if vocab_size < 256 + n_reserved:
        raise ValueError(
            f"train_tokenizer: vocab_size={vocab_size} is below the byte alphabet plus the "
            f"{n_reserved} special/tag tokens ({256 + n_reserved}); pass a vocab_size of a few thousand."
        )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            # " 472" -> " 4", "7", "2": one digit per piece, the space kept with the first digit.
            pre_tokenizers.Split(Regex(r" ?\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        # Reserved tokens take ids 0..9 so the vocabulary is exactly `vocab_size`.
        special_tokens=SPECIAL_TOKENS + TAG_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # The trainer registers every reserved token as special; the R1 tags must stay visible on
    # decode, so they are re-registered as plain added tokens (same ids, matched before BPE).
    spec = json.loads(tok.to_str())
    for entry in spec["added_tokens"]:
        if entry["content"] in TAG_TOKENS:
            entry["special"] = False
    return Tokenizer.from_str(json.dumps(spec))


def _wrap(tok: Tokenizer):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=[SYSTEM, USER, ASSISTANT],
        model_max_length=MODEL_MAX_LENGTH,
        clean_up_tokenization_spaces=False,
        padding_side="left",
    )
    hf.chat_template = CHAT_TEMPLATE
    return hf


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | os.PathLike):
    """Train the byte-level BPE on `texts`, save it to `out_dir`, and return it as a
    `PreTrainedTokenizerFast` (the folder loads with `AutoTokenizer.from_pretrained(out_dir)`)."""
    tok = _build_bpe(texts, vocab_size)
    hf = _wrap(tok)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf.save_pretrained(str(out))
    return hf


def load_tokenizer(path: str | os.PathLike):
    """Load a tokenizer folder written by `train_tokenizer` (or a checkpoint folder that holds one)."""
    from transformers import AutoTokenizer

    folder = Path(path)
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"load_tokenizer: no tokenizer.json in {folder}; train one with "
            f"rlpipe.tokenizer.train_tokenizer(texts, vocab_size, '{folder}') or point to a "
            f"checkpoint folder that holds one."
        )
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    missing = [t for t in SPECIAL_TOKENS + TAG_TOKENS if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id)]
    if missing:
        raise ValueError(
            f"load_tokenizer: {folder}/tokenizer.json lacks the reserved tokens {missing}; it was not "
            f"written by rlpipe.tokenizer.train_tokenizer -- retrain it with that function."
        )
    if not tok.chat_template:
        tok.chat_template = CHAT_TEMPLATE
    return tok
