"""Task data for the pipeline, generated from a seed (no downloads).

- `arithmetic`, `equations`, `countdown`, `code_tasks`: verifiable task families, four difficulty
  levels each, prompts in English and Chinese, solutions correct by construction.
- `traces`: the R1-format chain-of-thought writer, with controlled language mixing.
- `problem`: the task-row record and its `datasets` schema.
- `chat`: non-reasoning instructions answered directly; `preferences`: (chosen, rejected) pairs.
- `splits`: held-out evaluation problems with no overlap with training.
- `build`: `rlpipe data build --out DIR --seed N [--size tiny|small|full]` writes every split.
"""
