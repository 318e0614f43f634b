"""`rlpipe init-model`: write a randomly initialised policy checkpoint with its tokenizer.

    rlpipe init-model --preset tiny --tokenizer DIR --out DIR --seed N [--set field=value ...]

The tokenizer folder is loaded with transformers' AutoTokenizer; `vocab_size` becomes
`len(tokenizer)` (added tokens included) and BOS/EOS/PAD ids come from it, so the checkpoint and
its tokenizer can never disagree. The output folder is an HF DeepSeek-V3 checkpoint plus the
tokenizer files: transformers and vLLM load it as it is.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

from .config import PRESETS, ConfigError, ModelConfig


def _parse_overrides(items: list[str]) -> dict:
    overrides = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected field=value, e.g. --set num_hidden_layers=6")
        try:
            overrides[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            overrides[key] = None if raw in ("null", "None") else raw
    return overrides


def init_model(preset: str, tokenizer_dir: str | Path, out_dir: str | Path, seed: int, overrides: dict | None = None):
    """Build `preset` sized to the tokenizer, initialise it with `seed`, save model + tokenizer to out_dir."""
    import torch
    from transformers import AutoTokenizer

    from .transformer import Transformer

    tokenizer_dir = Path(tokenizer_dir)
    if not tokenizer_dir.is_dir():
        raise ConfigError(f"--tokenizer {tokenizer_dir}: folder does not exist; build one with rlpipe.tokenizer")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    except Exception as err:  # transformers raises many types for a broken folder
        raise ConfigError(f"--tokenizer {tokenizer_dir}: AutoTokenizer cannot load it ({err})") from None
    fields = {"vocab_size": len(tokenizer)}
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(tokenizer, name)
        if value is not None:
            fields[name] = value
    fields.update(overrides or {})
    config = ModelConfig.preset(preset, **fields)
    model = Transformer(config)
    model.reset_parameters(torch.Generator().manual_seed(seed))  # the seed alone fixes the weights
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(str(out_dir))
    return model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlpipe init-model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--tokenizer", required=True, help="tokenizer folder (AutoTokenizer-loadable)")
    parser.add_argument("--out", required=True, help="output checkpoint folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a ModelConfig field, e.g. --set num_hidden_layers=6")
    args = parser.parse_args(argv)
    try:
        model = init_model(args.preset, args.tokenizer, args.out, args.seed, _parse_overrides(args.set))
    except ConfigError as err:
        print(f"rlpipe init-model: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.preset} model ({model.num_parameters() / 1e6:.2f}M parameters, "
          f"vocab {model.config.vocab_size}) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
