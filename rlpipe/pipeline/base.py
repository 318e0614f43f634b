"""Stage 0: make the base model the rest of the pipeline post-trains (no weights can be downloaded).

1. Build the run's task data (`data.build`) unless `runs/<run>/data` exists.
2. The byte-level BPE tokenizer trained on the pretraining corpus: the one `data.build` trained
   (`tokenizer.reuse_data_tokenizer`), else one trained here with `tokenizer.vocab_size`. It is
   kept in the stage folder, so a resumed run keeps the same ids.
3. Initialise the model from a preset (`model.preset` + `model.overrides`), vocabulary and special
   token ids taken from the tokenizer.
4. Pretrain on the `pretrain` split (`text`): next-token + MTP loss with expert-bias balancing.
Writes `runs/<run>/stage-0/`: HF checkpoint + tokenizer, metrics.jsonl, plots, report.md.
"""

from __future__ import annotations

import torch

from rlpipe.config import ConfigError
from rlpipe.pipeline.common import ensure_data, load_split, run_supervised, training_section, write_report


def run(cfg) -> None:
    from rlpipe.model import ModelConfig, Transformer
    from rlpipe.tokenizer import load_tokenizer, train_tokenizer
    from rlpipe.train import make_accelerator, seed_everything

    # A bad preset or override fails now, not after the data build and the tokenizer.
    ModelConfig.preset(cfg.model.preset, **cfg.model.overrides)
    acc = make_accelerator(cfg.train)
    out = cfg.out_dir
    ensure_data(cfg, acc)
    corpus = load_split(cfg, cfg.split)
    if "text" not in corpus.column_names:
        raise ConfigError(f"{cfg.data_path / cfg.split}: stage 0 pretrains on a 'text' column; this split has "
                         f"{corpus.column_names} (set split=<a text split>)")

    if acc.is_main_process and not (out / "tokenizer.json").exists():
        built = cfg.data_path / "tokenizer"
        if cfg.tokenizer.reuse_data_tokenizer and (built / "tokenizer.json").exists():
            load_tokenizer(built).save_pretrained(out)
        else:
            texts = list(corpus["text"])
            train_tokenizer(texts[: cfg.tokenizer.max_texts or None], cfg.tokenizer.vocab_size, out)
    acc.wait_for_everyone()
    tokenizer = load_tokenizer(out)

    overrides = dict(cfg.model.overrides)
    # The embedding and head are sized by the tokenizer, whatever the preset says.
    overrides.update(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                     eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    model_config = ModelConfig.preset(cfg.model.preset, **overrides)
    if model_config.max_position_embeddings < cfg.train.seq_len:
        raise ConfigError(f"train.seq_len={cfg.train.seq_len} exceeds the model's max_position_embeddings="
                         f"{model_config.max_position_embeddings}; lower train.seq_len or raise "
                         f"model.overrides.max_position_embeddings")
    seed_everything(cfg.model.seed)  # identical initial weights on every process
    model = Transformer(model_config).to(torch.float32)

    outcome = run_supervised(model, tokenizer, corpus, cfg, acc)
    if acc.is_main_process:
        sections = [
            ("Model", f"- preset `{cfg.model.preset}` with overrides {cfg.model.overrides or '{}'}; "
                      f"vocab {len(tokenizer)} (byte-level BPE trained on the pretraining corpus)"),
            ("Pretraining", training_section(outcome, cfg)),
        ]
        write_report(cfg, "Stage 0: base model", sections)
        print(f"stage-0 written to {out}")
