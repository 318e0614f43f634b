"""Kimi k1.5 prompt sampling for RL (stage 2): difficulty estimation, curriculum, prioritized sampling.

- Difficulty (`estimate_difficulty`, `rlpipe data difficulty`): a prompt's pass rate is the share of
  k samples at high temperature that the project's grader (`rlpipe.evaluate.grade`, the one evaluation
  and the RL reward use) marks right. A prompt is *easy to hack* when the model answers it right in
  more than half of `hack_tries` samples with an empty chain of thought forced into the prompt
  (`NO_THINKING`): the reward would then pay for a guess, not for reasoning. The result is a
  `DifficultyTable` (per row id: pass_rate, hack_rate, easy_to_hack), saved as JSON.
- Curriculum (`SamplerConfig.curriculum`): the prompts are split into ordered stages, easiest first,
  and the sampler opens one more stage every `curriculum_steps / n_stages` optimizer steps:
      open_stages(t) = min(n_stages, 1 + floor(n_stages * t / curriculum_steps))
  `level`: one stage per difficulty level present (1..4 here), so with the default
  curriculum_steps = the run's length, each quarter of the run adds a level and the last quarter
  samples from all prompts. `pass_rate`: four stages by the table's pass rate (quartiles of the
  prompts ranked easiest first, ties broken by level then row order). `none`: one stage.
  If the open stages hold fewer than the n prompts a step asks for, more stages open for that step.
- Priority: within the open stages prompt i has a weight from s_i, its tracked success rate (1 for
  every prompt when `priority` is off), never below `floor`:
      kimi          w_i = max(1 - s_i, floor)          (Kimi k1.5: the harder, the likelier)
      learnability  w_i = max(4 s_i (1 - s_i), floor)  (peaks at s = 1/2: the groups whose rewards
                                                        differ, the only ones GRPO learns from)
  s_i is an EMA of the per-prompt success observed in RL (`update`). Its start is the table's pass
  rate; without a table, `cell_prior` starts it at the mean success observed so far on the prompt's
  task x level cell (`prior_success` until the cell has an observation). Why: a run draws each of
  its 2000 prompts about once, so a per-prompt table alone knows almost nothing when the prompt is
  drawn; the cell's mean knows that level-1 arithmetic is solved after the first few steps.
- Sampling: n distinct prompts per step, drawn without replacement in proportion to the weights
  (Efraimidis-Spirakis keys u^(1/w)), from a generator seeded by (seed, step). Every process draws
  the same list and takes its slice; every process applies the same all-gathered update
  (`gather_updates`), so the tables never diverge. The state (s and the observation counts) is
  all a resumed run needs to sample what the uninterrupted run would.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence

import numpy as np

from rlpipe.errors import CheckpointError, ConfigError, DataError, RlpipeError, StageInputError
from rlpipe.tokenizer import ANSWER_OPEN, THINK_CLOSE, THINK_OPEN

# The response with its chain of thought left empty, in the exact form of the SFT traces
# (`<think>\n...\n</think> <answer>...`): appended to a prompt it asks for the answer straight away.
NO_THINKING = f"{THINK_OPEN}\n{THINK_CLOSE} {ANSWER_OPEN}"
PASS_RATE_STAGES = 4  # curriculum "pass_rate": quartiles of the prompts by estimated pass rate
SUCCESS_BINS = 5  # step_metrics: histogram of s over the kept prompts
CURRICULA = ("none", "level", "pass_rate")
WEIGHTINGS = ("kimi", "learnability")


@dataclass
class SamplerConfig:
    """The RL stage config's `sampler:` section."""

    curriculum: Literal["none", "level", "pass_rate"] = "level"  # easy -> hard by level or by table pass rate
    curriculum_steps: int = 0  # optimizer steps until all prompts are open (0 = the run's length)
    priority: bool = True  # prioritized sampling by s_i (`weighting`); false: uniform
    weighting: Literal["kimi", "learnability"] = "kimi"  # 1 - s_i, or 4 s_i (1 - s_i)
    floor: float = 0.05  # minimum weight, so solved prompts still appear now and then
    smoothing: float = 0.5  # EMA weight of a new observation in s_i
    prior_success: float = 0.5  # s_i before any observation (the table's pass rate when it has the row)
    cell_prior: bool = False  # unseen prompts without a table entry take their task x level cell's mean success
    difficulty_file: str = ""  # difficulty.json written by `rlpipe data difficulty` ("" = none)
    drop_easy_to_hack: bool = True  # drop prompts the table marks easy to hack
    drop_always_solved: bool = False  # drop prompts the table's k samples all solved

    def __post_init__(self) -> None:
        if self.curriculum not in CURRICULA:
            raise ValueError(f"sampler.curriculum={self.curriculum!r}: valid choices are {', '.join(CURRICULA)}")
        if self.curriculum_steps < 0:
            raise ValueError(f"sampler.curriculum_steps={self.curriculum_steps}: must be >= 0 (0 = the run's length)")
        if not 0.0 < self.floor <= 1.0:
            raise ValueError(f"sampler.floor={self.floor}: must be in (0, 1] (0 would never sample a solved prompt)")
        if not 0.0 < self.smoothing <= 1.0:
            raise ValueError(f"sampler.smoothing={self.smoothing}: must be in (0, 1]")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"sampler.weighting={self.weighting!r}: valid choices are {', '.join(WEIGHTINGS)}")
        if not 0.0 <= self.prior_success <= 1.0:
            raise ValueError(f"sampler.prior_success={self.prior_success}: must be in [0, 1]")


# ---------------------------------------------------------------------------- difficulty table
@dataclass
class DifficultyEntry:
    """One prompt's estimate: pass rate over k samples, hack rate over the no-thinking tries."""

    pass_rate: float
    hack_rate: float
    easy_to_hack: bool
    task: str
    level: int


@dataclass
class DifficultyTable:
    """Per row id difficulty estimates of one checkpoint on one split (`rlpipe data difficulty`)."""

    entries: dict[str, DifficultyEntry]
    k: int
    hack_tries: int
    meta: dict[str, Any] = field(default_factory=dict)  # model, split, temperature, ...

    def summary(self) -> dict[str, Any]:
        """Counts (never solved, always solved, easy to hack) and the mean pass rate per task x level."""
        cells: dict[str, dict[str, list[DifficultyEntry]]] = {}
        for e in self.entries.values():
            cells.setdefault(e.task, {}).setdefault(str(e.level), []).append(e)
        values = list(self.entries.values())
        return {
            "n": len(values),
            "never_solved": sum(e.pass_rate == 0.0 for e in values),
            "always_solved": sum(e.pass_rate == 1.0 for e in values),
            "easy_to_hack": sum(e.easy_to_hack for e in values),
            "mean_pass_rate": sum(e.pass_rate for e in values) / max(len(values), 1),
            "by_task": {task: {level: {"mean_pass_rate": sum(e.pass_rate for e in es) / len(es),
                                       "easy_to_hack": sum(e.easy_to_hack for e in es), "n": len(es)}
                               for level, es in sorted(levels.items(), key=lambda kv: int(kv[0]))}
                        for task, levels in sorted(cells.items())},
        }

    def markdown(self) -> str:
        """The summary as text: the counts, then mean pass rate (easy-to-hack count) per task x level."""
        s = self.summary()
        lines = [f"{s['n']} prompts, pass rate over k={self.k} samples, hack test over {self.hack_tries} "
                 f"no-thinking tries: never solved {s['never_solved']}, always solved {s['always_solved']}, "
                 f"easy to hack {s['easy_to_hack']}, mean pass rate {s['mean_pass_rate']:.3f}", ""]
        levels = sorted({lv for t in s["by_task"].values() for lv in t}, key=int)
        lines.append("| task | " + " | ".join(f"level {lv}" for lv in levels) + " |")
        lines.append("|---|" + "---|" * len(levels))
        for task, cells in s["by_task"].items():
            row = [f"{c['mean_pass_rate']:.2f} (hack {c['easy_to_hack']}, n={c['n']})" if (c := cells.get(lv)) else "-"
                   for lv in levels]
            lines.append(f"| {task} | " + " | ".join(row) + " |")
        return "\n".join(lines) + "\n"

    def save(self, path: str | Path) -> None:
        """Write the table as JSON (atomically: a crash never leaves half a file)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"k": self.k, "hack_tries": self.hack_tries, "meta": self.meta, "summary": self.summary(),
               "entries": {rid: asdict(e) for rid, e in self.entries.items()}}
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "DifficultyTable":
        path = Path(path)
        if not path.is_file():
            raise StageInputError(f"{path}: no difficulty table; write one with `rlpipe data difficulty "
                                  f"--model CHECKPOINT --data DATA_DIR --out {path.parent}`")
        try:
            doc = json.loads(path.read_text())
            entries = {rid: DifficultyEntry(**e) for rid, e in doc["entries"].items()}
            return cls(entries=entries, k=int(doc["k"]), hack_tries=int(doc["hack_tries"]), meta=doc.get("meta", {}))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise DataError(f"{path}: not a difficulty table ({err!r}); "
                            "rewrite it with `rlpipe data difficulty`") from None


def difficulty_table(rows: Sequence[Mapping[str, Any]], correct: Sequence[bool], hack_correct: Sequence[bool], *,
                     k: int, hack_tries: int, meta: Mapping[str, Any] | None = None) -> DifficultyTable:
    """Aggregate verdicts into a table. `correct`: k verdicts per row, prompt-major (row i's sample j
    at i*k + j); `hack_correct`: hack_tries per row, same layout. Easy to hack: right in MORE than
    half of the tries."""
    assert len(correct) == len(rows) * k and len(hack_correct) == len(rows) * hack_tries
    entries = {}
    for i, row in enumerate(rows):
        c = sum(correct[i * k:(i + 1) * k])
        h = sum(hack_correct[i * hack_tries:(i + 1) * hack_tries])
        entries[str(row["id"])] = DifficultyEntry(pass_rate=c / k, hack_rate=h / hack_tries if hack_tries else 0.0,
                                                  easy_to_hack=2 * h > hack_tries, task=str(row["task"]),
                                                  level=int(row["difficulty"]))
    return DifficultyTable(entries=entries, k=k, hack_tries=hack_tries, meta=dict(meta or {}))


def estimate_difficulty(engine, tokenizer, rows: Sequence[Mapping[str, Any]], *, k: int = 10,
                        temperature: float = 1.0, max_new_tokens: int = 256, hack_tries: int = 8,
                        seed: int = 0) -> DifficultyTable:
    """Kimi's difficulty estimate of `rows` under the policy `engine` serves (a `rlpipe.rollout`
    engine): k samples per prompt graded by `rlpipe.evaluate.grade`, plus `hack_tries` samples
    with `NO_THINKING` appended to the prompt. The forced prefix is put back in front of each
    no-thinking completion before grading, so the grader sees a whole response."""
    from rlpipe.evaluate import grade
    from rlpipe.rollout import Sampling
    from rlpipe.tokenizer import format_prompt

    if k < 1 or hack_tries < 0:
        raise ValueError(f"estimate_difficulty: k={k}, hack_tries={hack_tries}: need k >= 1 and hack_tries >= 0")
    rows = [dict(r) for r in rows]
    prompts = [format_prompt(tokenizer, r["prompt"]) for r in rows]
    sampling = Sampling(temperature=temperature, max_new_tokens=max_new_tokens)

    def encode(texts: list[str]) -> list[list[int]]:
        return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]

    rollouts = engine.generate(encode(prompts), k, sampling, seed=seed)
    correct = grade([r for r in rows for _ in range(k)], rollouts.text)
    hack_correct: list[bool] = []
    if hack_tries:
        # A different seed from the pass-rate samples: the two estimates should not share draws.
        hacks = engine.generate(encode([p + NO_THINKING for p in prompts]), hack_tries, sampling, seed=seed + 1)
        hack_correct = grade([r for r in rows for _ in range(hack_tries)], [NO_THINKING + t for t in hacks.text])
    meta = {"temperature": temperature, "max_new_tokens": max_new_tokens, "seed": seed}
    return difficulty_table(rows, correct, hack_correct, k=k, hack_tries=hack_tries, meta=meta)


# ---------------------------------------------------------------------------- sampler
class PromptSampler:
    """Which prompts each RL optimizer step trains on (see the module docstring).

    rows: the RL split's rows (a `datasets.Dataset` or dicts) with `id`, `task`, `difficulty`.
    num_steps: the run's optimizer steps (the curriculum length when `cfg.curriculum_steps` is 0).
    table: a `DifficultyTable`; loaded from `cfg.difficulty_file` when not given.
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], cfg: SamplerConfig, *, seed: int, num_steps: int,
                 table: DifficultyTable | None = None) -> None:
        if num_steps < 1:
            raise ValueError(f"PromptSampler: num_steps={num_steps}: the run needs at least one optimizer step")
        if table is None and cfg.difficulty_file:
            table = DifficultyTable.load(cfg.difficulty_file)
        if cfg.curriculum == "pass_rate" and table is None:
            raise ConfigError("sampler.curriculum='pass_rate' needs a difficulty table: set sampler.difficulty_file "
                              "to the difficulty.json written by `rlpipe data difficulty`")
        self.cfg, self.seed, self.table = cfg, seed, table
        self.curriculum_steps = cfg.curriculum_steps or num_steps
        try:
            columns = [(str(r["id"]), str(r["task"]), int(r["difficulty"])) for r in rows]
        except KeyError as err:
            raise DataError(f"RL rows need the column {err}: rebuild the split with `rlpipe data build`") from None
        self.ids = [c[0] for c in columns]
        self.tasks = [c[1] for c in columns]
        self.levels = np.array([c[2] for c in columns], dtype=np.int64)  # (rows,)
        n = len(self.ids)
        entries = [table.entries.get(rid) if table is not None else None for rid in self.ids]
        self.table_pass_rate = np.array([e.pass_rate if e else np.nan for e in entries])  # (rows,), nan = no entry
        self.success = np.where(np.isnan(self.table_pass_rate), cfg.prior_success, self.table_pass_rate)  # s_i
        self.observations = np.zeros(n, dtype=np.int64)
        self.observed_sum = np.zeros(n, dtype=np.float64)  # sum of the raw observations (cell priors)
        # task x level cell of every row: (rows,) ids into the cells
        _, self.cell = np.unique([f"{t}/{lv}" for t, lv in zip(self.tasks, self.levels)], return_inverse=True)

        hack = np.array([bool(e and e.easy_to_hack) for e in entries], dtype=bool)
        solved = self.table_pass_rate == 1.0
        self.dropped = {"easy_to_hack": int(hack.sum()) if cfg.drop_easy_to_hack else 0,
                        "always_solved": int(solved.sum()) if cfg.drop_always_solved else 0}
        self.kept = ~((hack & cfg.drop_easy_to_hack) | (solved & cfg.drop_always_solved))  # (rows,)
        if not self.kept.any():
            raise DataError(f"the sampler dropped all {n} prompts ({self.dropped}); set sampler.drop_easy_to_hack "
                            "or sampler.drop_always_solved to false")
        self.stage, self.n_stages = self._stages()

    def _stages(self) -> tuple[np.ndarray, int]:
        """Curriculum stage of every row (0 = easiest; -1 for dropped rows) and the number of stages."""
        stage = np.full(len(self.ids), -1, dtype=np.int64)
        kept = np.flatnonzero(self.kept)
        if self.cfg.curriculum == "none":
            stage[kept] = 0
            return stage, 1
        if self.cfg.curriculum == "level":
            levels = np.unique(self.levels[kept])
            stage[kept] = np.searchsorted(levels, self.levels[kept])
            return stage, len(levels)
        # pass_rate: rank easiest first; rows the table lacks count at prior_success.
        rate = np.where(np.isnan(self.table_pass_rate), self.cfg.prior_success, self.table_pass_rate)[kept]
        order = np.lexsort((kept, self.levels[kept], -rate))  # last key is primary: rate desc, level, row
        n_stages = min(PASS_RATE_STAGES, len(kept))
        stage[kept[order]] = np.arange(len(kept)) * n_stages // len(kept)
        return stage, n_stages

    def open_stages(self, step: int, n: int = 1) -> int:
        """Stages open at `step`: 1 + floor(n_stages * step / curriculum_steps), capped at n_stages,
        then widened until they hold at least n prompts."""
        opened = min(self.n_stages, 1 + self.n_stages * max(step, 0) // self.curriculum_steps)
        while opened < self.n_stages and int((self.stage[self.kept] < opened).sum()) < n:
            opened += 1
        return opened

    def eligible(self, step: int, n: int = 1) -> np.ndarray:
        """Boolean mask over rows: kept and in an open curriculum stage at `step`."""
        return self.kept & (self.stage < self.open_stages(step, n))

    def weights(self, step: int, n: int = 1) -> np.ndarray:
        """Unnormalised sampling weights over rows: the `weighting` of s_i with the floor (or 1) inside
        the eligible set, else 0."""
        s = self.success
        if not self.cfg.priority:
            w = np.ones(len(self.ids))
        elif self.cfg.weighting == "learnability":
            w = np.maximum(4.0 * s * (1.0 - s), self.cfg.floor)
        else:
            w = np.maximum(1.0 - s, self.cfg.floor)
        return np.where(self.eligible(step, n), w, 0.0)

    def probabilities(self, step: int, n: int = 1) -> np.ndarray:
        """Probability of each row being the first draw of `sample(step, n)` (the later draws follow
        the same weights over the rows not yet drawn)."""
        w = self.weights(step, n)
        return w / w.sum()

    def sample(self, step: int, n: int) -> list[int]:
        """n distinct row indices for optimizer step `step`; identical on every process that holds the
        same success table. Each process takes its own slice of the list."""
        n_kept = int(self.kept.sum())
        if not 0 < n <= n_kept:
            raise DataError(f"a step asks for {n} prompts but the sampler keeps {n_kept} of {len(self.ids)} "
                            f"(dropped: {self.dropped}); lower the prompts per step or keep more prompts")
        w = self.weights(step, n)
        rng = np.random.default_rng([self.seed, step])
        u = rng.random(len(w))
        # Efraimidis-Spirakis: the n largest u^(1/w) are a weighted draw without replacement;
        # log(1 - u)/w orders the same way and never takes log(0) (u < 1). Zero weight never wins.
        keys = np.where(w > 0, np.log1p(-u) / np.where(w > 0, w, 1.0), -np.inf)
        return [int(i) for i in np.argsort(-keys, kind="stable")[:n]]

    def update(self, indices: Sequence[int], success: Sequence[float]) -> None:
        """Fold this step's observed per-prompt success (mean correctness of each prompt's group) into
        s: s_i <- (1 - smoothing) * s_i + smoothing * x. Call on every process with the same GLOBAL
        lists (`gather_updates`), so every process keeps the same table."""
        if len(indices) != len(success):
            raise ValueError(f"update: {len(indices)} indices but {len(success)} success values")
        a = self.cfg.smoothing
        for i, x in zip(indices, success):
            assert 0.0 <= x <= 1.0, f"success of row {i} is {x}, outside [0, 1]"
            self.success[i] = (1.0 - a) * self.success[i] + a * float(x)
            self.observations[i] += 1
            self.observed_sum[i] += float(x)
        self._refresh_priors()

    def _refresh_priors(self) -> None:
        """With `cell_prior`: s_i of every unseen prompt without a table entry <- the mean of all raw
        observations in its task x level cell (unchanged while the cell has none)."""
        if not self.cfg.cell_prior:
            return
        counts = np.bincount(self.cell, weights=self.observations)  # (cells,)
        sums = np.bincount(self.cell, weights=self.observed_sum)
        cell_mean = np.divide(sums, counts, out=np.full_like(sums, self.cfg.prior_success), where=counts > 0)
        unseen = (self.observations == 0) & np.isnan(self.table_pass_rate)
        self.success[unseen] = cell_mean[self.cell[unseen]]

    @staticmethod
    def gather_updates(indices: Sequence[int], success: Sequence[float]) -> tuple[list[int], list[float]]:
        """All-gather every process's (indices, success) in rank order; the local lists unchanged when
        there is no process group. With NCCL, call after `torch.cuda.set_device`."""
        indices, success = [int(i) for i in indices], [float(x) for x in success]
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return indices, success
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, (indices, success))
        return [i for idx, _ in gathered for i in idx], [x for _, xs in gathered for x in xs]

    def step_metrics(self, indices: Sequence[int], step: int | None = None) -> dict[str, float]:
        """What a step sampled: share per level and per task, mean s of the sampled prompts; the
        histogram of s over all kept prompts and its mean; with `step`, the open stages and the
        eligible share of the kept prompts."""
        idx = np.asarray(indices, dtype=np.int64)
        n = max(len(idx), 1)
        metrics: dict[str, float] = {}
        for level in np.unique(self.levels):
            metrics[f"sampler/level_{level}"] = float((self.levels[idx] == level).sum() / n)
        tasks = np.asarray(self.tasks)
        for task in sorted(set(self.tasks)):
            metrics[f"sampler/task_{task}"] = float((tasks[idx] == task).sum() / n)
        metrics["sampler/sampled_success"] = float(self.success[idx].mean()) if len(idx) else 0.0
        kept = self.success[self.kept]
        counts, edges = np.histogram(kept, bins=SUCCESS_BINS, range=(0.0, 1.0))
        for c, lo, hi in zip(counts, edges[:-1], edges[1:]):
            metrics[f"sampler/success_{lo:.1f}-{hi:.1f}"] = float(c / len(kept))
        metrics["sampler/mean_success"] = float(kept.mean())
        if step is not None:
            metrics["sampler/open_stages"] = float(self.open_stages(step, len(idx)))
            metrics["sampler/eligible"] = float(self.eligible(step, len(idx)).sum() / self.kept.sum())
        return metrics

    def _fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.ids).encode()).hexdigest()[:16]

    def state_dict(self) -> dict[str, Any]:
        """Everything sampling depends on besides the rows and config: s, observation counts, seed.
        Plain lists (exact float64 values), so `torch.load(weights_only=True)` and JSON both take it."""
        return {"success": self.success.tolist(), "observations": self.observations.tolist(),
                "observed_sum": self.observed_sum.tolist(), "seed": self.seed, "rows": self._fingerprint()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore `state_dict()`; the saved seed wins, as the checkpoint's RNG states do."""
        if state["rows"] != self._fingerprint() or len(state["success"]) != len(self.ids):
            raise CheckpointError(f"sampler state was saved for another RL split ({len(state['success'])} rows); "
                                  "resume with the data folder the run started with, or start a fresh run")
        self.success = np.asarray(state["success"], dtype=np.float64)
        self.observations = np.asarray(state["observations"], dtype=np.int64)
        # States saved before cell priors lack the sums: their cells restart at prior_success.
        self.observed_sum = np.asarray(state.get("observed_sum", np.zeros(len(self.ids))), dtype=np.float64)
        self.seed = int(state["seed"])


# ---------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    """`rlpipe data difficulty`: estimate a checkpoint's pass rate and hackability on a split."""
    parser = argparse.ArgumentParser(prog="rlpipe data difficulty",
                                     description="Kimi-style difficulty table: pass rate over k samples and "
                                                 "the no-thinking hack test, per prompt -> OUT/difficulty.json")
    parser.add_argument("--model", required=True,
                        help="checkpoint folder (HF format + tokenizer), e.g. runs/tiny/stage-1")
    parser.add_argument("--data", required=True, help="data folder written by `rlpipe data build`")
    parser.add_argument("--out", required=True, help="folder for difficulty.json")
    parser.add_argument("--split", default="rl")
    parser.add_argument("--k", type=int, default=10, help="samples per prompt for the pass rate")
    parser.add_argument("--hack-tries", type=int, default=8, help="no-thinking samples per prompt")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--limit", type=int, default=0, help="only the first N rows (0 = all)")
    parser.add_argument("--backend", choices=("vllm", "local"), default="vllm")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        table = _run(args)
    except RlpipeError as err:
        print(f"rlpipe data difficulty: {err}", file=sys.stderr)
        return 2
    print(table.markdown())
    print(f"wrote {Path(args.out) / 'difficulty.json'}")
    return 0


def _run(args: argparse.Namespace) -> DifficultyTable:
    import datasets

    from rlpipe.rollout import make_engine
    from rlpipe.tokenizer import load_tokenizer

    model_dir, split_dir = Path(args.model), Path(args.data) / args.split
    if not (model_dir / "config.json").is_file():
        raise StageInputError(f"{model_dir}: not a checkpoint folder (no config.json); pass --model a stage "
                              "folder such as runs/<run>/stage-1 (written by `make stage-1`)")
    if not split_dir.is_dir():
        raise StageInputError(f"{split_dir}: no such split; build it with `rlpipe data build --out {args.data}`")
    ds = datasets.load_from_disk(str(split_dir))
    if args.limit:
        ds = ds.select(range(min(args.limit, len(ds))))
    rows = [dict(r) for r in ds]
    tokenizer = load_tokenizer(model_dir)
    t0 = time.perf_counter()
    engine = make_engine(args.backend, model_dir, seed=args.seed)
    try:
        table = estimate_difficulty(engine, tokenizer, rows, k=args.k, temperature=args.temperature,
                                    max_new_tokens=args.max_new_tokens, hack_tries=args.hack_tries, seed=args.seed)
    finally:
        engine.close()
    table.meta.update(model=str(model_dir), data=str(args.data), split=args.split, backend=args.backend,
                      seconds=round(time.perf_counter() - t0, 1))
    table.save(Path(args.out) / "difficulty.json")
    return table


__all__ = ["NO_THINKING", "DifficultyEntry", "DifficultyTable", "PromptSampler", "SamplerConfig",
           "difficulty_table", "estimate_difficulty", "main"]
