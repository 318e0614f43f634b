"""A combined reward computed over a batch in worker threads, with failures contained.

`ParallelReward(combine({...}), max_workers=..., timeout_s=...)(prompts, completions, **columns)`
returns a `RewardBatch`: the weighted totals, each term's values, and per term how many samples
lost that term to an exception (`n_errors`) or to the timeout (`n_timeouts`), plus the first
error message, for the trainer to log. It never raises because of a term.

- The batch is cut into chunks of whole prompt groups (`rewards.length.group_keys`: `group_ids`,
  else the dataset `id`, else the prompt text), so group-wise terms (`kimi_length`) see every
  sample of a group together. Each (term, chunk) is one call of the term's function.
- Calls run in threads, not processes: the heavy work already happens in subprocesses (the code
  sandbox, the killable sympy worker), and the trainer process holds an in-process vLLM engine and
  torch threads that must never be forked. Terms that need correctness (`kimi_length`) run after
  the correctness terms of their chunk, as in `CombinedReward`.
- Containment: a call that raises gives None for that term on the chunk's samples; a call still
  running `timeout_s` after it started is given up the same way (a thread cannot be killed: it
  finishes in the background as a daemon, its late result is dropped, and a fresh thread takes
  its place so the batch keeps its parallelism). A None term is skipped in the total, as in
  `CombinedReward`; a sample left with no term at all gets None.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rewards import CombinedReward, select_rows
from rewards.length import group_keys


@dataclass
class RewardBatch:
    """The rewards of one batch. breakdown: term name -> values (None where the term does not
    apply, raised or timed out). n_errors / n_timeouts: term name -> samples lost that way.
    errors: term name -> the first error message (absent for terms that never failed)."""

    totals: list[float | None]
    breakdown: dict[str, list[float | None]]
    n_errors: dict[str, int]
    n_timeouts: dict[str, int]
    errors: dict[str, str] = field(default_factory=dict)

    def metrics(self, prefix: str = "reward") -> dict[str, float]:
        """Flat numbers for a metrics log: each term's mean over the samples it applies to, and its
        error and timeout counts."""
        out: dict[str, float] = {}
        for name, values in self.breakdown.items():
            applied = [float(v) for v in values if v is not None]
            if applied:
                out[f"{prefix}/{name}"] = sum(applied) / len(applied)
            out[f"{prefix}/{name}/n_errors"] = self.n_errors[name]
            out[f"{prefix}/{name}/n_timeouts"] = self.n_timeouts[name]
        return out


@dataclass
class _Call:
    term: str
    rows: list[int]  # batch indices of the chunk
    fn: Callable[[], list]
    started: float | None = None
    outcome: tuple[str, Any] | None = None  # ("ok", values) | ("error", message) | ("timeout", None)


class ParallelReward:
    """`reward`'s terms over a batch in up to `max_workers` threads (default: two per CPU), each
    call given up `timeout_s` seconds after it started (see the module docstring)."""

    def __init__(self, reward: CombinedReward, *, max_workers: int | None = None, timeout_s: float = 120.0):
        if not timeout_s > 0:
            raise ValueError(f"ParallelReward: timeout_s must be > 0, got {timeout_s}")
        self.reward = reward
        self.max_workers = max_workers or 2 * len(os.sched_getaffinity(0))
        self.timeout_s = timeout_s
        self.__name__ = f"parallel({reward.__name__})"

    def __call__(self, prompts: Sequence[Any], completions: Sequence[Any], **columns: Any) -> RewardBatch:
        n = len(completions)
        if len(prompts) != n:
            raise ValueError(f"ParallelReward: {len(prompts)} prompts for {n} completions")
        names = self.reward.names
        breakdown: dict[str, list[float | None]] = {t: [None] * n for t in names}
        n_errors, n_timeouts = dict.fromkeys(names, 0), dict.fromkeys(names, 0)
        errors: dict[str, str] = {}
        chunks = self._chunks(prompts, columns, n)
        # Terms that need correctness run once the correctness terms of their chunk are in.
        first = [t for t in names if not self.reward.needs_correctness(t)]
        second = [t for t in names if self.reward.needs_correctness(t)]
        for stage in (first, second):
            calls = [self._call(t, rows, prompts, completions, columns, breakdown, n) for t in stage for rows in chunks]
            self._run(calls)
            for call in calls:
                kind, value = call.outcome
                if kind == "ok":
                    for i, v in zip(call.rows, value):
                        breakdown[call.term][i] = v
                elif kind == "timeout":
                    n_timeouts[call.term] += len(call.rows)
                    errors.setdefault(call.term, f"timed out after {self.timeout_s:g} s")
                else:
                    n_errors[call.term] += len(call.rows)
                    errors.setdefault(call.term, value)
        ordered = {t: breakdown[t] for t in self.reward.weights}
        return RewardBatch(self.reward.totals(breakdown, n), ordered, n_errors, n_timeouts, errors)

    def _chunks(self, prompts: Sequence[Any], columns: dict, n: int) -> list[list[int]]:
        """Whole prompt groups dealt round-robin into up to max_workers chunks."""
        groups: dict[Any, list[int]] = {}
        for i, key in enumerate(group_keys(prompts, group_ids=columns.get("group_ids"), row_ids=columns.get("id"))):
            groups.setdefault(key, []).append(i)
        chunks: list[list[int]] = [[] for _ in range(min(self.max_workers, len(groups)))]
        for j, rows in enumerate(groups.values()):
            chunks[j % len(chunks)].extend(rows)
        return [sorted(rows) for rows in chunks]

    def _call(self, term: str, rows: list[int], prompts, completions, columns, breakdown, n) -> _Call:
        def fn() -> list:
            sub_breakdown = {t: [values[i] for i in rows] for t, values in breakdown.items()
                             if self.reward.is_correctness(t)}
            return self.reward.call_term(term, [prompts[i] for i in rows], [completions[i] for i in rows],
                                         select_rows(columns, rows, n), sub_breakdown)
        return _Call(term, rows, fn)

    def _run(self, calls: list[_Call]) -> None:
        """Run the calls in daemon worker threads; every call ends with an outcome."""
        pending: queue.SimpleQueue[_Call] = queue.SimpleQueue()
        for call in calls:
            pending.put(call)
        events: queue.SimpleQueue[tuple[str, _Call, Any]] = queue.SimpleQueue()

        def work() -> None:
            while True:
                try:
                    call = pending.get_nowait()
                except queue.Empty:
                    return
                events.put(("start", call, time.monotonic()))
                try:
                    events.put(("done", call, ("ok", list(call.fn()))))
                except BaseException as e:  # a term's failure stays the term's
                    events.put(("done", call, ("error", f"{type(e).__name__}: {e}"[:500])))

        def start_worker() -> None:
            threading.Thread(target=work, name="reward-worker", daemon=True).start()

        for _ in range(min(self.max_workers, len(calls))):
            start_worker()
        running: dict[int, _Call] = {}  # calls started and not yet ended, by id
        left = len(calls)
        while left:
            now = time.monotonic()
            for key, c in list(running.items()):
                if c.started + self.timeout_s <= now:
                    del running[key]
                    c.outcome = ("timeout", None)
                    left -= 1
                    start_worker()  # the stuck thread is lost to this batch; keep the parallelism
            if not left:
                break
            deadlines = [c.started + self.timeout_s for c in running.values()]
            try:
                kind, call, payload = events.get(timeout=max(0.0, min(deadlines) - now) if deadlines else None)
            except queue.Empty:
                continue
            if call.outcome is not None:
                continue  # a late result of a call already given up
            if kind == "start":
                call.started = payload
                running[id(call)] = call
            else:
                running.pop(id(call), None)
                call.outcome = payload
                left -= 1
