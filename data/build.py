"""`rlpipe data build --out DIR --seed N [--size tiny|small|full]`: write every dataset the pipeline uses.

Writes `datasets.save_to_disk` folders under DIR:
- `eval`: held-out task rows, per task and difficulty, never seen in training (keys disjoint);
- `sft`: task rows with R1-format solutions (stage 1), a configured fraction language-mixed;
- `rl`: task rows for the RL stages (solutions kept as references, never mixed);
- `pretrain`: a text corpus (column `text`) for stage 0 -- whole chats (`<|bos|><|user|>prompt
  <|assistant|>solution<|eos|>`) from training problems, the basic arithmetic facts many times over
  (`arithmetic.FACT_REPEATS`), worked column arithmetic, the countdown search's comparisons
  (`countdown.COMPARISON_REPEATS`), and non-reasoning chats; every document already has its
  `<|bos|>`/`<|eos|>`;
- `nonreasoning`: short instructions answered without reasoning (stage 3);
- `preferences`: (prompt, chosen, rejected, task, language, kind) pairs (stage 4).
Also `DIR/tokenizer` (a byte-level BPE trained on the corpus, unless `--tokenizer` names one) and
`DIR/manifest.json`: the config, row counts, the measured language-mixing rate and token-length
statistics per split, measured with that tokenizer. Everything is a function of the seed.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from data import arithmetic, chat, countdown, preferences, splits
from data.problem import make_row, task_features
from rlpipe.tokenizer import BOS, EOS, render_chat

TASK_WEIGHTS = {"arithmetic": 0.2, "equations": 0.2, "countdown": 0.25, "code": 0.2, "code_io": 0.15}
# Easy levels get more rows by default: the base model must solve level 1 well, and level-4 traces
# are long. `--level-weights` changes the mix (the lever for the easy/hard accuracy spread).
LEVEL_WEIGHTS = (0.3, 0.3, 0.2, 0.2)


TOKENIZER_DOCS = 5000  # pretrain documents the builder's tokenizer is trained on


@dataclass(frozen=True)
class Size:
    sft: int  # task rows with solutions for stage 1
    rl: int  # task rows for RL
    eval_per_cell: int  # held-out rows per (task, difficulty), fewer where the space is small
    pretrain_problems: int  # solved problems in the corpus (distinct from the sft rows)
    pretrain_facts: int  # worked column sums/products in the corpus (the basic fact tables come on top)
    pretrain_chat: int  # non-reasoning chats in the corpus
    nonreasoning: int
    preferences: int


SIZES = {
    # tiny: stage 1 trains one pass over 11500 distinct sft rows, none of them in the stage-0 corpus,
    # rather than 3 passes over 4000 rows stage 0 had also seen (the same steps): the tiny model
    # memorised those (final loss 0.09) without a held-out gain.
    "tiny": Size(sft=11500, rl=2000, eval_per_cell=32, pretrain_problems=14500, pretrain_facts=700,
                 pretrain_chat=2000, nonreasoning=1500, preferences=1000),
    "small": Size(sft=15000, rl=6000, eval_per_cell=50, pretrain_problems=65000, pretrain_facts=7000,
                  pretrain_chat=8000, nonreasoning=5000, preferences=4000),
    "full": Size(sft=50000, rl=20000, eval_per_cell=100, pretrain_problems=250000, pretrain_facts=27000,
                 pretrain_chat=30000, nonreasoning=20000, preferences=15000),
}


@dataclass(frozen=True)
class BuildConfig:
    out: str
    seed: int = 0
    size: str = "tiny"
    mix_rate: float = 0.10  # fraction of sft/pretrain traces that mix languages
    zh_fraction: float = 0.4  # fraction of rows whose prompt is in Chinese
    vocab_size: int = 4096
    tokenizer: str | None = None  # measure with this tokenizer instead of training one
    level_weights: tuple[float, ...] = LEVEL_WEIGHTS  # share of task rows per difficulty 1..4


def _language(rng: random.Random, cfg: BuildConfig) -> str:
    return "zh" if rng.random() < cfg.zh_fraction else "en"


def _cells(total: int, level_weights: tuple[float, ...]) -> list[tuple[str, int, int]]:
    """(task, difficulty, rows) for every cell, rows proportional to the task and level weights."""
    norm = sum(level_weights)
    return [(task, d, round(total * tw * level_weights[d - 1] / norm))
            for task, tw in TASK_WEIGHTS.items() for d in splits.LEVELS]


def _chat_text(prompt: str, response: str) -> str:
    return render_chat([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])


def build_task_splits(cfg: BuildConfig, size: Size) -> tuple[dict[str, list[dict]], set[str]]:
    """The `eval`, `sft` and `rl` rows, and the held-out problem keys training must avoid."""
    rng = random.Random(f"{cfg.seed}-eval")
    eval_rows, excluded = [], set()
    for task in TASK_WEIGHTS:
        for d in splits.LEVELS:
            for i, p in enumerate(splits.held_out(rng, task, d, size.eval_per_cell)):
                excluded.add(p.key)
                eval_rows.append(make_row(p, _language(rng, cfg), False, rng, f"eval-{task}-{d}-{i:05d}"))
    out = {"eval": eval_rows}
    for split, total, mix in (("sft", size.sft, cfg.mix_rate), ("rl", size.rl, 0.0)):
        rng = random.Random(f"{cfg.seed}-{split}")
        rows = []
        for task, d, n in _cells(total, cfg.level_weights):
            for i, p in enumerate(splits.training(rng, task, d, n, excluded)):
                rows.append(make_row(p, _language(rng, cfg), rng.random() < mix, rng, f"{split}-{task}-{d}-{i:05d}"))
        rng.shuffle(rows)
        out[split] = rows
    return out, excluded


def build_nonreasoning(cfg: BuildConfig, n: int, tag: str) -> list[dict]:
    """`n` non-reasoning rows; `tag` names the row ids and the random stream."""
    rng = random.Random(f"{cfg.seed}-{tag}")
    rows = []
    for i in range(n):
        language = _language(rng, cfg)
        p, _ = chat.generate(rng, language)
        rows.append(make_row(p, language, False, rng, f"{tag}-{p.task}-{i:05d}"))
    return rows


def build_pretrain(cfg: BuildConfig, size: Size, excluded: set[str]) -> tuple[list[dict], int]:
    """The stage-0 corpus and how many of its solved-problem documents mix languages. Its problems
    are drawn from their own random stream, so stage 1 trains on rows stage 0 never saw."""
    rng = random.Random(f"{cfg.seed}-pretrain")
    docs, mixed = [], 0
    for task, d, n in _cells(size.pretrain_problems, cfg.level_weights):
        for p in splits.training(rng, task, d, n, excluded):
            row = make_row(p, _language(rng, cfg), rng.random() < cfg.mix_rate, rng, "")
            mixed += row["mixed_language"]
            docs.append(_chat_text(row["prompt"], row["solution"]))
    docs += [f"{BOS}{fact}{EOS}" for fact in arithmetic.facts(rng, size.pretrain_facts)]
    docs += [f"{BOS}{fact}{EOS}" for fact in countdown.comparison_facts(rng)]
    docs += [_chat_text(r["prompt"], r["solution"]) for r in build_nonreasoning(cfg, size.pretrain_chat, "pretrain-chat")]
    rng.shuffle(docs)
    return [{"text": t} for t in docs], mixed


def build_preferences(cfg: BuildConfig, n: int, excluded: set[str]) -> list[dict]:
    """`n` preference pairs: about 80 % on training task problems (kind drawn at random), 20 % non-reasoning."""
    rng = random.Random(f"{cfg.seed}-preferences")
    rows: list[dict] = []
    tasks = list(TASK_WEIGHTS)
    while len(rows) < n:
        language = _language(rng, cfg)
        if rng.random() < 0.2:
            p, other_language_answer = chat.generate(rng, language)
            other, _ = chat.generate(rng, language)
            row = preferences.chat_pair(p, other, language, other_language_answer, rng)
        else:
            task, d = rng.choice(tasks), rng.choice(splits.LEVELS)
            p, other = splits.training(rng, task, d, 2, excluded)
            row = preferences.pair(p, other, language, rng.choice(preferences.KINDS), rng)
        if row is not None:
            rows.append({"id": f"pref-{len(rows):05d}", **row})
    return rows


def _length_stats(lengths: list[int]) -> dict:
    s = sorted(lengths)
    return {"n": len(s), "mean": round(statistics.fmean(s), 1), "p50": s[len(s) // 2],
            "p95": s[min(len(s) - 1, int(0.95 * len(s)))], "max": s[-1], "total": sum(s),
            "over_256": round(sum(v > 256 for v in s) / len(s), 4), "over_384": round(sum(v > 384 for v in s) / len(s), 4)}


def token_stats(tokenizer, datasets_by_split: dict[str, list[dict]]) -> dict:
    """Token lengths per split: whole chat (prompt + response + eos) for task-like rows, the
    document for `pretrain`, prompt + chosen for `preferences`; tasks also per task and level."""
    out = {}
    for split, rows in datasets_by_split.items():
        if split == "pretrain":
            texts = [r["text"] for r in rows]
        elif split == "preferences":
            texts = [_chat_text(r["prompt"], r["chosen"]) for r in rows]
        else:
            texts = [_chat_text(r["prompt"], r["solution"]) for r in rows]
        lengths = [len(e.ids) for e in tokenizer.backend_tokenizer.encode_batch(texts, add_special_tokens=False)]
        out[split] = _length_stats(lengths)
        if split in ("sft", "eval"):
            cells: dict[str, list[int]] = {}
            for r, n in zip(rows, lengths):
                cells.setdefault(f"{r['task']}/{r['difficulty']}", []).append(n)
            out[split]["by_cell"] = {c: _length_stats(v) for c, v in sorted(cells.items())}
    return out


def build(cfg: BuildConfig) -> dict:
    """Build every split into `cfg.out` and return the manifest (also written to manifest.json)."""
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()  # the builder prints its own summary

    if cfg.size not in SIZES:
        raise ValueError(f"data build: unknown --size {cfg.size!r}; choose one of {sorted(SIZES)}")
    if not 0.0 <= cfg.mix_rate <= 1.0:
        raise ValueError(f"data build: --mix-rate {cfg.mix_rate} must be within [0, 1]")
    if len(cfg.level_weights) != len(splits.LEVELS) or min(cfg.level_weights) < 0 or not sum(cfg.level_weights):
        raise ValueError(f"data build: --level-weights {cfg.level_weights} must be {len(splits.LEVELS)} "
                         f"non-negative numbers, not all zero (e.g. 0.3,0.3,0.2,0.2)")
    started = time.time()
    size = SIZES[cfg.size]
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    tasks, excluded = build_task_splits(cfg, size)
    pretrain, pretrain_mixed = build_pretrain(cfg, size, excluded)
    nonreasoning = build_nonreasoning(cfg, size.nonreasoning, "nonreasoning")
    prefs = build_preferences(cfg, size.preferences, excluded)
    all_splits = {**tasks, "pretrain": pretrain, "nonreasoning": nonreasoning, "preferences": prefs}

    features = task_features()
    for name, rows in all_splits.items():
        ds = Dataset.from_list(rows, features=features) if name in ("eval", "sft", "rl", "nonreasoning") \
            else Dataset.from_list(rows)
        ds.save_to_disk(str(out / name))

    if cfg.tokenizer:
        from rlpipe.tokenizer import load_tokenizer
        tokenizer, tokenizer_dir = load_tokenizer(cfg.tokenizer), cfg.tokenizer
    else:
        from rlpipe.tokenizer import train_tokenizer
        tokenizer_dir = str(out / "tokenizer")
        # The corpus is templated: a few thousand documents give the same merges as all of them
        # (total pretrain tokens within 0.2%) in a fraction of the time.
        corpus = [r["text"] for r in pretrain[:TOKENIZER_DOCS]] + [r["prompt"] + r["solution"] for r in tasks["eval"]]
        tokenizer = train_tokenizer(corpus, cfg.vocab_size, tokenizer_dir)

    n_sft = len(tasks["sft"])
    manifest = {
        "config": asdict(cfg),
        "size": asdict(size),
        "rows": {k: len(v) for k, v in all_splits.items()},
        "mixing_rate": {
            "configured": cfg.mix_rate,
            "sft": round(sum(r["mixed_language"] for r in tasks["sft"]) / max(1, n_sft), 4),
            "pretrain_task_docs": round(pretrain_mixed / max(1, size.pretrain_problems), 4),
            "rl": 0.0, "eval": 0.0,
        },
        "zh_fraction": {k: round(sum(r["language"] == "zh" for r in v) / max(1, len(v)), 3)
                        for k, v in all_splits.items() if k != "pretrain"},
        "tokenizer": tokenizer_dir,
        "tokens": token_stats(tokenizer, all_splits),
        "seconds": None,
    }
    manifest["seconds"] = round(time.time() - started, 1)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    return manifest


def summary(manifest: dict) -> str:
    """A Markdown table of rows and token lengths per split."""
    lines = ["| split | rows | mean tok | p50 | p95 | max | >256 | total tok |", "|---|---|---|---|---|---|---|---|"]
    for split, s in manifest["tokens"].items():
        lines.append(f"| {split} | {s['n']} | {s['mean']} | {s['p50']} | {s['p95']} | {s['max']} | "
                     f"{s['over_256']:.1%} | {s['total']} |")
    m = manifest["mixing_rate"]
    lines.append(f"\nlanguage-mixed traces: sft {m['sft']:.1%} (configured {m['configured']:.0%}), "
                 f"pretrain task docs {m['pretrain_task_docs']:.1%}; built in {manifest['seconds']} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["build"]:  # `rlpipe data build ...` may pass the subcommand along
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="rlpipe data build", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--mix-rate", type=float, default=BuildConfig.mix_rate,
                        help="fraction of sft/pretrain traces that mix languages")
    parser.add_argument("--zh-fraction", type=float, default=BuildConfig.zh_fraction)
    parser.add_argument("--vocab-size", type=int, default=BuildConfig.vocab_size)
    parser.add_argument("--tokenizer", default=None, help="measure lengths with this tokenizer folder")
    parser.add_argument("--level-weights", default=",".join(map(str, LEVEL_WEIGHTS)),
                        help="share of task rows per difficulty 1..4, comma-separated")
    a = parser.parse_args(argv)
    try:
        level_weights = tuple(float(v) for v in a.level_weights.split(","))
    except ValueError:
        parser.error(f"--level-weights {a.level_weights!r}: give {len(splits.LEVELS)} comma-separated numbers")
    manifest = build(BuildConfig(out=a.out, seed=a.seed, size=a.size, mix_rate=a.mix_rate,
                                 zh_fraction=a.zh_fraction, vocab_size=a.vocab_size, tokenizer=a.tokenizer,
                                 level_weights=level_weights))
    print(summary(manifest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
