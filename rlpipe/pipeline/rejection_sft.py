"""Stage 3 (DeepSeek-R1): rejection sampling from the RL model, then SFT on the verified traces.

1. Load the checkpoint to sample from (`sample_from`, default `runs/<run>/stage-2/`) and the
   prompts (`rejection.split`, the RL prompts); a missing stage names the make target.
2. Sample `n_samples` completions per prompt through the rollout interface (vLLM), in chunks with
   a progress bar, seeded per chunk. Keep what `rlpipe.rejection` accepts (right, well formed,
   one language, not repetitive, not cut), at most `keep_per_prompt` diverse ones per prompt, and
   add the non-reasoning split at `nonreasoning_share`. Written as a `datasets` folder
   `sft_data/` with provenance columns, `rejection.jsonl` (every sample with its verdict) and
   `funnel.json`; a rerun after an interruption reuses them.
3. SFT from `init_from` (the RL model by default; R1 fine-tunes the base model, stage 0; stage 1 is
   the third choice) with the supervised trainer, then the held-out evaluation, compared with the
   sampled checkpoint's.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from rlpipe.errors import DataError
from rlpipe.pipeline.common import (ensure_data, leave_process_group, load_split, require_stage, run_supervised,
                                    training_section, write_report)

SFT_DATA = "sft_data"


def sample(cfg, source_dir, rows: list[dict], acc) -> tuple[list, list, list]:
    """n_samples completions of every row (texts, lengths, cut flags per prompt), on every process.

    Each process samples its share of the prompts (rows rank::world) with its own engine, seeded by
    (seed, rank, chunk), built after the process group as in stage 2 (platform notes); the shares
    are gathered back into row order."""
    from rlpipe.logging import progress
    from rlpipe.rollout import Sampling, make_engine
    from rlpipe.tokenizer import load_tokenizer, prompt_ids

    r, rank, world = cfg.rejection, acc.process_index, acc.num_processes
    mine = list(range(rank, len(rows), world))
    ids = prompt_ids(load_tokenizer(source_dir), [rows[i]["prompt"] for i in mine])
    sampling = Sampling(temperature=r.temperature, top_p=r.top_p, max_new_tokens=r.max_new_tokens)
    engine = make_engine(r.backend, source_dir, seed=r.seed + rank)
    texts, lengths, truncated = [], [], []
    chunk = 128
    try:
        bar = progress(total=len(mine), desc=f"{cfg.stage} sampling", unit="prompt", disable=not acc.is_main_process)
        for c, at in enumerate(range(0, len(mine), chunk)):
            seed = int(np.random.SeedSequence([r.seed, rank, c]).generate_state(1)[0] & 0x7FFFFFFF)
            rollouts = engine.generate(ids[at:at + chunk], r.n_samples, sampling, seed=seed)
            L, T = rollouts.lengths, rollouts.truncated
            texts += rollouts.texts_by_prompt()
            lengths += [[L[k] for k in g] for g in rollouts.groups()]
            truncated += [[T[k] for k in g] for g in rollouts.groups()]
            bar.update(len(rollouts.prompt_ids))
        bar.close()
    finally:
        engine.close()
    shares = [(mine, texts, lengths, truncated)]
    if world > 1:
        shares = [None] * world
        torch.distributed.all_gather_object(shares, (mine, texts, lengths, truncated))
    merged: list = [None] * len(rows)
    for indices, *parts in shares:
        for k, i in enumerate(indices):
            merged[i] = tuple(p[k] for p in parts)
    return [m[0] for m in merged], [m[1] for m in merged], [m[2] for m in merged]


def sample_and_filter(cfg, source_dir, data_dir, acc) -> None:
    """Steps 1-2: the filtered SFT dataset and the funnel in the stage folder (kept there: a rerun
    after an interruption reuses them). Sampling is shared by the processes, filtering is rank 0's;
    a filter that keeps nothing is one error on every process."""
    out, r = cfg.out_dir, cfg.rejection
    if (out / SFT_DATA).exists() and (out / "funnel.json").exists():
        acc.print(f"{cfg.stage}: reusing the rejection-sampled data in {out / SFT_DATA}")
        return
    rows = [dict(x) for x in load_split(cfg, r.split)]
    if not rows or "prompt" not in rows[0]:
        raise DataError(f"{cfg.data_path / r.split}: rejection sampling needs rows with a `prompt` column; "
                        f"rebuild the data with `rlpipe data build`")
    order = np.random.default_rng([r.seed, 2]).permutation(len(rows))
    if r.max_prompts:
        order = order[:r.max_prompts]
    rows = [rows[i] for i in sorted(order.tolist())]
    texts, lengths, truncated = sample(cfg, source_dir, rows, acc)
    error = [None]
    if acc.is_main_process:
        error[0] = _filter_and_write(cfg, rows, texts, lengths, truncated, source_dir, data_dir)
    if acc.num_processes > 1:
        torch.distributed.broadcast_object_list(error, src=0)
    if error[0]:
        raise DataError(error[0])


def _filter_and_write(cfg, rows, texts, lengths, truncated, source_dir, data_dir) -> str | None:
    """The filter, the non-reasoning share and the files; an error message when nothing was kept."""
    import datasets

    from rlpipe.rejection import funnel, nonreasoning_rows, rejection_rows, select

    out, r = cfg.out_dir, cfg.rejection
    verdicts = select(rows, texts, lengths, truncated, r)
    counts = funnel(rows, verdicts)
    kept = rejection_rows(rows, verdicts, source=str(source_dir))
    if not kept:
        return (f"{cfg.stage}: no sample of {source_dir} passed the filter ({counts['dropped']}); "
                f"the checkpoint cannot solve the {r.split} prompts: check its eval.json")
    general = nonreasoning_rows([dict(x) for x in load_split(cfg, r.nonreasoning_split)], len(kept),
                                r.nonreasoning_share, r.seed, source=str(data_dir / r.nonreasoning_split))
    counts["sft_rows"] = {"rejection_sampling": len(kept), "nonreasoning": len(general)}
    dataset = datasets.Dataset.from_list(kept + general)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "rejection.jsonl").open("w") as f:
        for v in verdicts:
            f.write(json.dumps({"id": rows[v.row].get("id"), "task": rows[v.row].get("task"),
                                "difficulty": rows[v.row].get("difficulty"), "sample": v.sample,
                                "stage": v.stage, "reason": v.reason, "length": v.length, "correct": v.correct,
                                "format": v.format, "language": v.language, "repetition": v.repetition,
                                "completion": v.text}, ensure_ascii=False) + "\n")
    dataset.save_to_disk(str(out / SFT_DATA))
    (out / "funnel.json").write_text(json.dumps(counts, indent=2))
    return None


def run(cfg) -> None:
    import datasets

    from rlpipe.model import load_pretrained
    from rlpipe.plots import plot_stage
    from rlpipe.pipeline.reasoning_rl import comparison_table
    from rlpipe.rejection import funnel_table
    from rlpipe.tokenizer import load_tokenizer
    from rlpipe.train import make_accelerator

    source_dir = require_stage(cfg, cfg.sample_from)
    init_dir = require_stage(cfg, cfg.init_from)
    acc = make_accelerator(cfg.train)
    data_dir = ensure_data(cfg, acc, build_if_missing=False)
    out = cfg.out_dir
    sample_and_filter(cfg, source_dir, data_dir, acc)
    acc.wait_for_everyone()
    dataset = datasets.load_from_disk(str(out / SFT_DATA))
    counts = json.loads((out / "funnel.json").read_text())
    tokenizer = load_tokenizer(init_dir)
    model = load_pretrained(init_dir, dtype=torch.float32)
    outcome = run_supervised(model, tokenizer, dataset, cfg, acc)
    leave_process_group()
    if not acc.is_main_process:
        return
    rows = counts["sft_rows"]
    sections = [
        ("Input", f"- sampled from `{source_dir}`: {cfg.rejection.n_samples} completions per prompt of "
                  f"`{cfg.data_path / cfg.rejection.split}` at temperature {cfg.rejection.temperature}\n"
                  f"- fine-tuned from `{init_dir}`\n- SFT rows: {rows['rejection_sampling']} verified traces + "
                  f"{rows['nonreasoning']} non-reasoning rows (`{SFT_DATA}/`, provenance columns)"),
        ("Rejection-sampling funnel", f"{counts['prompts_with_a_kept_sample']} prompts kept at least one "
                                      f"sample.\n\n" + funnel_table(counts)),
        ("SFT", training_section(outcome, cfg)),
    ]
    if cfg.eval.enabled:
        from rlpipe.evaluate import close_engines, evaluate_checkpoint

        try:
            after = evaluate_checkpoint(out, data_dir, out / "eval.json", cfg.eval)
        finally:
            close_engines()
        before = json.loads((source_dir / "eval.json").read_text()) if (source_dir / "eval.json").is_file() else None
        sections.append((f"Held-out evaluation ({cfg.eval.split}, {after['overall']['n']} prompts)",
                         comparison_table(before, after, cfg.sample_from, cfg.stage)))
    if cfg.logging.plots:
        plot_stage(out)
    write_report(cfg, "Stage 3: rejection sampling + SFT", sections)
    print((out / "report.md").read_text())
    print(f"{cfg.stage} written to {out}")


__all__ = ["SFT_DATA", "run", "sample", "sample_and_filter"]
