"""The byte-level BPE tokenizer: round trips, reserved tokens, chat template, loading offline."""

import random

import pytest

from data import arithmetic, countdown, equations
from data.problem import make_row
from rlpipe.tokenizer import (
    ANSWER_CLOSE, ANSWER_OPEN, BOS, EOS, PAD, SPECIAL_TOKENS, TAG_TOKENS, THINK_CLOSE, THINK_OPEN,
    format_prompt, load_tokenizer, render_chat, render_prompt, train_tokenizer,
)

VOCAB = 700


def _corpus() -> list[str]:
    rng = random.Random(0)
    texts = []
    for gen in (arithmetic.generate, equations.generate, countdown.generate):
        for d in (1, 2, 3, 4):
            for lang in ("en", "zh"):
                for _ in range(15):
                    row = make_row(gen(rng, d), lang, False, rng, "")
                    texts.append(render_chat([{"role": "user", "content": row["prompt"]},
                                              {"role": "assistant", "content": row["solution"]}]))
    return texts


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    train_tokenizer(_corpus(), VOCAB, out)
    return out


@pytest.fixture(scope="module")
def tok(tok_dir):
    return load_tokenizer(tok_dir)


TEXTS = [
    "Compute 23 + 4 * 17 - 15. The answer is 76.",
    "计算 23 + 4 * 17 - 15，答案是 76。",
    "龘靐齉 unseen characters, emoji 🙂, tabs\tand  double  spaces\nnew lines, ümlaut.",
    "def f(x):\n    return x + 1\n",
]


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip_without_unknowns(tok, text):
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.decode(ids) == text
    assert tok.unk_token_id is None or tok.unk_token_id not in ids
    assert max(ids) < len(tok)


def test_vocabulary_size_and_reserved_ids(tok):
    assert len(tok) == VOCAB
    ids = [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS + TAG_TOKENS]
    assert ids == list(range(10))
    assert (tok.bos_token, tok.eos_token, tok.pad_token) == (BOS, EOS, PAD)


def test_tags_are_single_tokens_kept_on_decode(tok):
    response = f"{THINK_OPEN}\n3 + 5 = 8.\n{THINK_CLOSE} {ANSWER_OPEN}8{ANSWER_CLOSE}{EOS}"
    ids = tok(response, add_special_tokens=False).input_ids
    for tag in TAG_TOKENS:
        assert tok.convert_tokens_to_ids(tag) in ids
        assert len(tok(tag, add_special_tokens=False).input_ids) == 1
    decoded = tok.decode(ids, skip_special_tokens=True)
    assert decoded == response[: -len(EOS)]  # tags stay, <|eos|> goes


def test_digits_are_split_one_per_token(tok):
    pieces = tok.convert_ids_to_tokens(tok(" 12345", add_special_tokens=False).input_ids)
    assert len(pieces) == 5  # " 1" keeps its space; the other digits stand alone


def test_chat_template_matches_render_and_has_one_bos(tok):
    prompt = "解方程：2x + 3 = 11"
    text = format_prompt(tok, prompt)
    assert text == render_prompt(prompt) == f"{BOS}<|user|>{prompt}<|assistant|>"
    for add in (True, False):
        ids = tok(text, add_special_tokens=add).input_ids
        assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert format_prompt(tok, "hi", system="Be brief.").startswith(f"{BOS}<|system|>Be brief.<|user|>hi")
    full = tok.apply_chat_template([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}],
                                   tokenize=False)
    assert full.endswith(f"<|assistant|>yo{EOS}")


def test_autotokenizer_loads_offline(tok_dir, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from transformers import AutoTokenizer

    auto = AutoTokenizer.from_pretrained(str(tok_dir))
    assert auto.chat_template and auto.eos_token == EOS
    assert auto("计算 7 + 5。").input_ids == load_tokenizer(tok_dir)("计算 7 + 5。").input_ids


def test_bad_inputs_give_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        load_tokenizer(tmp_path)
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["abc"], 100, tmp_path / "t")
