"""Stage 1 (DeepSeek-R1 cold start): SFT of the stage-0 model on readable R1-format chains of thought.

1. Load `runs/<run>/stage-0/` (checkpoint + tokenizer); a missing stage 0 is one error naming
   `make stage-0 RUN=<run>`.
2. SFT on the `sft` split: chat-templated prompt (masked: no loss) + `<think> ... </think>
   <answer> ... </answer><|eos|>` (trained), packed, several epochs with a cosine schedule.
3. Write `runs/<run>/stage-1/` (HF checkpoint + tokenizer, metrics, plots), then evaluate it on the
   held-out split (`rlpipe.evaluate.evaluate_checkpoint` -> eval.json) and put the table in report.md.
"""

from __future__ import annotations

import torch

from rlpipe.config import ConfigError
from rlpipe.pipeline.common import (ensure_data, leave_process_group, load_split, require_stage, run_supervised,
                                    training_section, write_report)


def _evaluator():
    """The evaluation entry points; checked before training so a broken install fails in seconds, not after it."""
    try:
        from rlpipe.evaluate import close_engines, evaluate_checkpoint, markdown_table
    except ImportError as err:
        raise RuntimeError(f"stage-1 ends with the held-out evaluation but rlpipe.evaluate cannot be imported "
                           f"({err}); fix that module before running the stage") from err
    return evaluate_checkpoint, markdown_table, close_engines


def run(cfg) -> None:
    from rlpipe.model import load_pretrained
    from rlpipe.plots import plot_stage
    from rlpipe.tokenizer import load_tokenizer
    from rlpipe.train import make_accelerator

    evaluate_checkpoint, markdown_table, close_engines = _evaluator()
    init_dir = require_stage(cfg, cfg.init_from)
    acc = make_accelerator(cfg.train)
    data_dir = ensure_data(cfg, acc, build_if_missing=False)
    sft = load_split(cfg, cfg.split)
    tokenizer = load_tokenizer(init_dir)
    model = load_pretrained(init_dir, dtype=torch.float32)
    if model.config.max_position_embeddings < cfg.train.seq_len:
        raise ConfigError(f"train.seq_len={cfg.train.seq_len} exceeds {init_dir}'s max_position_embeddings="
                         f"{model.config.max_position_embeddings}; lower train.seq_len")

    outcome = run_supervised(model, tokenizer, sft, cfg, acc)
    leave_process_group()
    if not acc.is_main_process:
        return
    out = cfg.out_dir
    sections = [("Input", f"- initialised from `{init_dir}`"), ("Cold-start SFT", training_section(outcome, cfg))]
    if cfg.eval.enabled:
        try:
            result = evaluate_checkpoint(out, data_dir, out / "eval.json", cfg.eval)
        finally:
            close_engines()
        if cfg.logging.plots:
            plot_stage(out)  # again, now with eval.json
        sections.append((f"Held-out evaluation ({cfg.eval.split}, {result['overall']['n']} prompts, "
                         f"{result.get('seconds', 0):.0f} s)", markdown_table(result)))
        print(markdown_table(result))
    write_report(cfg, "Stage 1: cold-start SFT", sections)
    print(f"stage-1 written to {out}")
