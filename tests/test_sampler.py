"""Kimi prompt sampler: priority weights, EMA, curriculum, determinism, resume, drops, 2-rank merge,
and the difficulty table (aggregation, a scripted engine through the real grader, the local backend, CLI)."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest

from _artefacts import small_data_and_model
from rlpipe.cli import main as rlpipe_main
from rlpipe.errors import CheckpointError, ConfigError, DataError, StageInputError
from rlpipe.evaluate import grade
from rlpipe.rollout import Rollouts
from rlpipe.sampler import (NO_THINKING, DifficultyEntry, DifficultyTable, PromptSampler, SamplerConfig,
                            difficulty_table, estimate_difficulty)

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("arithmetic", "countdown")


def make_rows(n_per_level=2, levels=(1, 2, 3, 4)):
    """Hand-made rows: ids r0.., levels in blocks, tasks alternating."""
    rows = []
    for level in levels:
        for _ in range(n_per_level):
            i = len(rows)
            rows.append({"id": f"r{i}", "task": TASKS[i % 2], "difficulty": level})
    return rows


def table_for(rows, pass_rates, hack=()):
    entries = {r["id"]: DifficultyEntry(pass_rate=p, hack_rate=1.0 if r["id"] in hack else 0.0,
                                        easy_to_hack=r["id"] in hack, task=r["task"], level=r["difficulty"])
               for r, p in zip(rows, pass_rates)}
    return DifficultyTable(entries=entries, k=10, hack_tries=8)


def set_success(sampler, values):
    """Put s exactly at `values` through the public update (smoothing 1 makes s the observation)."""
    assert sampler.cfg.smoothing == 1.0
    sampler.update(list(range(len(values))), values)


# ---------------------------------------------------------------------------- probabilities
def test_probabilities_are_one_minus_success_with_a_floor():
    rows = make_rows(n_per_level=2, levels=(1, 2))  # 4 rows
    s = PromptSampler(rows, SamplerConfig(curriculum="none", floor=0.1, smoothing=1.0), seed=0, num_steps=10)
    set_success(s, [0.0, 0.5, 0.96, 1.0])
    # weights max(1 - s, 0.1) = 1, 0.5, 0.1 (floor beats 0.04), 0.1 (floor beats 0); sum 1.7
    np.testing.assert_allclose(s.probabilities(0), [1 / 1.7, 0.5 / 1.7, 0.1 / 1.7, 0.1 / 1.7])
    # The draws follow those probabilities: first-draw frequencies over many steps.
    first = np.bincount([s.sample(step, 1)[0] for step in range(6000)], minlength=4) / 6000
    np.testing.assert_allclose(first, s.probabilities(0), atol=0.02)


def test_learnability_weighting_peaks_at_half_success():
    rows = make_rows(n_per_level=2, levels=(1, 2))
    s = PromptSampler(rows, SamplerConfig(curriculum="none", weighting="learnability", floor=0.1, smoothing=1.0),
                      seed=0, num_steps=10)
    set_success(s, [0.0, 0.5, 0.9, 1.0])
    # weights max(4 s (1 - s), 0.1) = 0.1 (never solved: no mixed group), 1, 0.36, 0.1 (always solved); sum 1.56
    np.testing.assert_allclose(s.weights(0), [0.1, 1.0, 0.36, 0.1])
    np.testing.assert_allclose(s.probabilities(0), np.array([0.1, 1.0, 0.36, 0.1]) / 1.56)


def test_unseen_prompts_take_their_cells_mean_success():
    # Cells (task x level): rows 0, 2, 4 are arithmetic level 1; 1, 3, 5 countdown level 1; 6 and 7 level 2.
    rows = [{"id": f"r{i}", "task": TASKS[i % 2], "difficulty": 1 if i < 6 else 2} for i in range(8)]
    cfg = SamplerConfig(curriculum="none", smoothing=0.5, prior_success=0.5, cell_prior=True)
    s = PromptSampler(rows, cfg, seed=0, num_steps=10)
    s.update([0, 2], [1.0, 0.5])  # arithmetic/1 observed twice: raw mean 0.75
    # The observed rows follow the EMA from the prior they had (0.5); their unseen cell-mate r4 takes
    # the raw mean; the other cells keep prior_success.
    np.testing.assert_allclose(s.success, [0.75, 0.5, 0.5, 0.5, 0.75, 0.5, 0.5, 0.5])
    s.update([1], [0.0])  # countdown/1: r3 and r5 now start at 0
    assert s.success[3] == s.success[5] == 0.0
    s.update([3], [1.0])  # r3's first observation folds into its cell prior (0): 0.5 * 0 + 0.5 * 1
    assert s.success[3] == pytest.approx(0.5) and s.success[5] == pytest.approx(0.5)  # cell mean (0 + 1) / 2
    assert s.observations.tolist() == [1, 1, 1, 1, 0, 0, 0, 0]

    # A table's pass rate beats the cell; cell_prior off keeps prior_success.
    table = table_for(rows[:1] + rows[4:5], [0.2, 0.9])
    t = PromptSampler(rows, cfg, seed=0, num_steps=10, table=table)
    t.update([2], [0.0])
    assert (t.success[0], t.success[4]) == (0.2, 0.9)
    off = PromptSampler(rows, SamplerConfig(curriculum="none", smoothing=0.5), seed=0, num_steps=10)
    off.update([0, 2], [1.0, 0.5])
    assert off.success[4] == 0.5


def test_priority_off_is_uniform_within_the_eligible_set():
    rows = make_rows(n_per_level=2, levels=(1, 2))
    s = PromptSampler(rows, SamplerConfig(curriculum="level", priority=False, smoothing=1.0), seed=0, num_steps=10)
    set_success(s, [0.0, 0.9, 0.3, 1.0])
    np.testing.assert_allclose(s.probabilities(0), [0.5, 0.5, 0.0, 0.0])  # step 0: level 1 only
    np.testing.assert_allclose(s.probabilities(9), [0.25] * 4)


def test_ema_update_by_hand():
    rows = make_rows(n_per_level=1, levels=(1, 2))
    table = table_for(rows, [0.2, 0.7])
    s = PromptSampler(rows, SamplerConfig(curriculum="none", smoothing=0.5), seed=0, num_steps=10, table=table)
    np.testing.assert_allclose(s.success, [0.2, 0.7])  # the table's pass rate is the prior
    s.update([0], [1.0])
    assert s.success[0] == pytest.approx(0.6)  # 0.5 * 0.2 + 0.5 * 1
    s.update([0, 1], [0.0, 0.5])
    np.testing.assert_allclose(s.success, [0.3, 0.6])  # 0.5 * 0.6; 0.5 * 0.7 + 0.5 * 0.5
    assert s.observations.tolist() == [2, 1]
    untouched = PromptSampler(rows, SamplerConfig(curriculum="none", prior_success=0.4, smoothing=0.25),
                              seed=0, num_steps=10)
    untouched.update([1], [0.0])
    np.testing.assert_allclose(untouched.success, [0.4, 0.3])  # no table: prior_success; 0.75 * 0.4


# ---------------------------------------------------------------------------- curriculum
def test_level_curriculum_opens_one_level_per_quarter_of_the_run():
    rows = make_rows(n_per_level=2)  # levels 1,1,2,2,3,3,4,4
    s = PromptSampler(rows, SamplerConfig(curriculum="level"), seed=0, num_steps=100)

    def max_level(step):
        return max(rows[i]["difficulty"] for i in np.flatnonzero(s.probabilities(step)))

    assert [max_level(t) for t in (0, 24, 25, 49, 50, 74, 75, 99)] == [1, 1, 2, 2, 3, 3, 4, 4]
    assert set(np.flatnonzero(s.probabilities(0))) == {0, 1}
    assert all(rows[i]["difficulty"] == 1 for t in range(5) for i in s.sample(t, 2))
    # curriculum_steps set: all open after 30 of its 40 steps, whatever the run's length.
    short = PromptSampler(rows, SamplerConfig(curriculum="level", curriculum_steps=40), seed=0, num_steps=1000)
    assert (short.open_stages(29), short.open_stages(30)) == (3, 4)


def test_curriculum_widens_when_a_step_needs_more_prompts_than_are_open():
    rows = make_rows(n_per_level=2)
    s = PromptSampler(rows, SamplerConfig(curriculum="level"), seed=0, num_steps=100)
    # Level 1 holds 2 prompts: for 3, level 2 opens for this step (and only level 2).
    assert s.open_stages(0, 3) == 2 and set(np.flatnonzero(s.probabilities(0, 3))) == {0, 1, 2, 3}
    for step in range(5):
        picked = s.sample(step, 3)
        assert len(set(picked)) == 3 and max(rows[i]["difficulty"] for i in picked) == 2
    with pytest.raises(DataError, match="asks for 9 prompts"):
        s.sample(0, 9)


def test_pass_rate_curriculum_starts_with_the_easiest_quarter():
    rows = make_rows(n_per_level=2)
    # r2 and r0 tie at 0.9: the lower level (r0) ranks first; r7 is easiest.
    table = table_for(rows, [0.9, 0.1, 0.9, 0.0, 0.5, 0.3, 0.2, 1.0])
    s = PromptSampler(rows, SamplerConfig(curriculum="pass_rate"), seed=0, num_steps=8, table=table)
    assert set(np.flatnonzero(s.probabilities(0))) == {7, 0}
    assert set(np.flatnonzero(s.probabilities(2))) == {7, 0, 2, 4}
    assert set(np.flatnonzero(s.probabilities(6))) == set(range(8))
    with pytest.raises(ConfigError, match="difficulty_file"):
        PromptSampler(rows, SamplerConfig(curriculum="pass_rate"), seed=0, num_steps=8)


def test_config_errors_name_the_field():
    for kwargs, name in [({"floor": 0.0}, "sampler.floor"), ({"smoothing": 1.5}, "sampler.smoothing"),
                         ({"curriculum": "hard"}, "sampler.curriculum"),
                         ({"prior_success": -0.1}, "sampler.prior_success"),
                         ({"curriculum_steps": -1}, "sampler.curriculum_steps"),
                         ({"weighting": "hardest"}, "sampler.weighting")]:
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            SamplerConfig(**kwargs)


# ---------------------------------------------------------------------------- determinism and resume
def test_same_seed_and_step_give_the_same_sample_and_steps_differ():
    rows = make_rows(n_per_level=10)  # 40 rows
    a = PromptSampler(rows, SamplerConfig(curriculum="none"), seed=7, num_steps=10)
    b = PromptSampler(rows, SamplerConfig(curriculum="none"), seed=7, num_steps=10)
    assert [a.sample(t, 8) for t in range(5)] == [b.sample(t, 8) for t in range(5)]
    assert all(len(set(a.sample(t, 8))) == 8 for t in range(5))
    assert len({tuple(a.sample(t, 8)) for t in range(5)}) == 5
    other_seed = PromptSampler(rows, SamplerConfig(curriculum="none"), seed=8, num_steps=10)
    assert other_seed.sample(0, 8) != a.sample(0, 8)


def _observe(indices, step):
    return [((i * 7 + step) % 5) / 4 for i in indices]


def test_restored_sampler_samples_what_the_uninterrupted_one_samples():
    rows = make_rows(n_per_level=5)  # 20 rows
    cfg = SamplerConfig(curriculum="level", floor=0.05, smoothing=0.5, cell_prior=True)
    full = PromptSampler(rows, cfg, seed=1, num_steps=10)
    samples, saved = [], None
    for step in range(10):
        if step == 5:
            saved = json.loads(json.dumps(full.state_dict()))  # plain data through a checkpoint
        picked = full.sample(step, 6)
        samples.append(picked)
        full.update(picked, _observe(picked, step))

    resumed = PromptSampler(rows, cfg, seed=999, num_steps=10)  # the saved seed wins
    resumed.load_state_dict(saved)
    fresh = PromptSampler(rows, cfg, seed=1, num_steps=10)
    assert not np.allclose(fresh.probabilities(5), resumed.probabilities(5)), "the state must matter"
    for step in range(5, 10):
        picked = resumed.sample(step, 6)
        assert picked == samples[step], step
        resumed.update(picked, _observe(picked, step))
    assert resumed.state_dict() == full.state_dict()

    with pytest.raises(CheckpointError, match="another RL split"):
        PromptSampler(rows[:-1], cfg, seed=1, num_steps=10).load_state_dict(saved)


# ---------------------------------------------------------------------------- table-driven drops
def test_easy_to_hack_and_always_solved_prompts_are_dropped_by_the_table():
    rows = make_rows(n_per_level=2, levels=(1, 2))
    table = table_for(rows, [0.5, 0.0, 1.0, 0.3], hack={"r1"})
    s = PromptSampler(rows, SamplerConfig(curriculum="none"), seed=0, num_steps=10, table=table)
    assert s.probabilities(0)[1] == 0.0 and s.dropped == {"easy_to_hack": 1, "always_solved": 0}
    # r2 (always solved) stays, at the floor weight: max(1 - 1.0, 0.05).
    np.testing.assert_allclose(s.probabilities(0), np.array([0.5, 0, 0.05, 0.7]) / 1.25)
    assert all(1 not in s.sample(t, 3) for t in range(50))

    both = PromptSampler(rows, SamplerConfig(curriculum="none", drop_always_solved=True), seed=0,
                         num_steps=10, table=table)
    assert set(np.flatnonzero(both.probabilities(0))) == {0, 3}
    keep = PromptSampler(rows, SamplerConfig(curriculum="none", drop_easy_to_hack=False), seed=0,
                         num_steps=10, table=table)
    assert keep.probabilities(0)[1] > 0


def test_table_from_difficulty_file(tmp_path):
    rows = make_rows(n_per_level=2, levels=(1, 2))
    table_for(rows, [0.5, 0.0, 1.0, 0.3], hack={"r1"}).save(tmp_path / "difficulty.json")
    s = PromptSampler(rows, SamplerConfig(difficulty_file=str(tmp_path / "difficulty.json")), seed=0, num_steps=4)
    np.testing.assert_allclose(s.success, [0.5, 0.0, 1.0, 0.3])
    assert s.probabilities(3)[1] == 0.0
    with pytest.raises(StageInputError, match="rlpipe data difficulty"):
        PromptSampler(rows, SamplerConfig(difficulty_file=str(tmp_path / "missing.json")), seed=0, num_steps=4)


def test_step_metrics_by_hand():
    rows = make_rows(n_per_level=2, levels=(1, 2))  # tasks arithmetic, countdown, arithmetic, countdown
    s = PromptSampler(rows, SamplerConfig(curriculum="level", smoothing=1.0), seed=0, num_steps=10)
    set_success(s, [0.0, 0.1, 0.5, 1.0])
    m = s.step_metrics([0, 1, 2], step=0)
    assert m["sampler/level_1"] == pytest.approx(2 / 3) and m["sampler/level_2"] == pytest.approx(1 / 3)
    assert m["sampler/task_arithmetic"] == pytest.approx(2 / 3)
    assert m["sampler/sampled_success"] == pytest.approx(0.2)
    assert [m[f"sampler/success_{lo}"] for lo in ("0.0-0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", "0.8-1.0")] == \
        [0.5, 0.0, 0.25, 0.0, 0.25]
    assert m["sampler/mean_success"] == pytest.approx(0.4)
    assert m["sampler/eligible"] == pytest.approx(1.0)  # 3 prompts asked: level 2 opened too


# ---------------------------------------------------------------------------- two processes
RANK_SCRIPT = r"""
import json, sys
import torch
import torch.distributed as dist
torch.set_num_threads(1)
from rlpipe.sampler import PromptSampler, SamplerConfig
rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = json.loads(sys.argv[4])
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
s = PromptSampler(rows, SamplerConfig(curriculum="none"), seed=3, num_steps=3)
samples = []
for step in range(3):
    picked = s.sample(step, 8)
    mine = picked[rank::2]
    local = [((i * 7 + step + 3 * rank) % 5) / 4 for i in mine]  # each rank observes its own prompts
    s.update(*s.gather_updates(mine, local))
    samples.append(picked)
json.dump({"samples": samples, "state": s.state_dict()}, open(out, "w"))
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_ranks_hold_identical_tables_after_gathered_updates(tmp_path):
    rows = make_rows(n_per_level=5)
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", RANK_SCRIPT, str(rank), str(port), str(tmp_path / f"{rank}.json"),
                               json.dumps(rows)], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for rank in range(2)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err[-3000:]
    r0, r1 = (json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(2))
    assert r0 == r1
    # Both applied the GLOBAL update: what one process computes from both ranks' observations.
    ref = PromptSampler(rows, SamplerConfig(curriculum="none"), seed=3, num_steps=3)
    for step in range(3):
        picked = ref.sample(step, 8)
        assert picked == r0["samples"][step]
        idx = picked[0::2] + picked[1::2]
        ref.update(idx, [((i * 7 + step + 3 * (k >= 4)) % 5) / 4 for k, i in enumerate(idx)])
    assert r0["state"] == ref.state_dict()
    assert sum(r0["state"]["observations"]) == 24


# ---------------------------------------------------------------------------- difficulty table
def test_difficulty_table_aggregates_hand_made_verdicts(tmp_path):
    rows = [{"id": "a", "task": "arithmetic", "difficulty": 1}, {"id": "b", "task": "arithmetic", "difficulty": 1},
            {"id": "c", "task": "countdown", "difficulty": 3}]
    correct = [1, 1, 1, 1] + [0, 0, 0, 0] + [1, 0, 1, 0]
    hack = [1, 1, 1, 0] + [1, 1, 0, 0] + [0, 0, 0, 0]  # a: 3 of 4 = easy; b: exactly half = not easy
    t = difficulty_table(rows, [bool(v) for v in correct], [bool(v) for v in hack], k=4, hack_tries=4)
    assert {rid: (e.pass_rate, e.hack_rate, e.easy_to_hack) for rid, e in t.entries.items()} == \
        {"a": (1.0, 0.75, True), "b": (0.0, 0.5, False), "c": (0.5, 0.0, False)}
    s = t.summary()
    assert (s["n"], s["never_solved"], s["always_solved"], s["easy_to_hack"]) == (3, 1, 1, 1)
    assert s["by_task"] == {"arithmetic": {"1": {"mean_pass_rate": 0.5, "easy_to_hack": 1, "n": 2}},
                            "countdown": {"3": {"mean_pass_rate": 0.5, "easy_to_hack": 0, "n": 1}}}
    t.save(tmp_path / "d.json")
    assert DifficultyTable.load(tmp_path / "d.json") == t
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DataError, match="not a difficulty table"):
        DifficultyTable.load(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory):
    """Real built data and a random tiny checkpoint. The data is the real builder at a small size
    (a few hundred task rows): `--size tiny` takes 15-50 s on the shared cores, this about 5 s."""
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sampler")
    small_data_and_model(root / "data", root / "model", sft=300, rl=200, pretrain_problems=300, pretrain_facts=50,
                         pretrain_chat=50, nonreasoning=20, preferences=20)
    return root


def one_per_task(artefacts):
    picked = {}
    for r in datasets.load_from_disk(str(artefacts / "data" / "rl")):
        picked.setdefault(r["task"], dict(r))
    return list(picked.values())


def answer_part(solution):
    """What follows `<answer>` in a reference trace: the answer and `</answer>`."""
    return solution.split("<answer>", 1)[1]


def test_no_thinking_prefix_matches_the_trace_format(artefacts):
    sft = datasets.load_from_disk(str(artefacts / "data" / "sft"))
    traces = [r["solution"] for r in sft if r["solution"]]
    assert traces and all(t.startswith("<think>\n") and t.count("</think> <answer>") == 1 for t in traces)
    rows = one_per_task(artefacts)
    # A whole no-thinking response (the forced prefix + the gold answer) grades right; a wrong one not.
    assert grade(rows, [NO_THINKING + answer_part(r["solution"]) for r in rows]) == [True] * len(rows)
    assert not any(grade(rows, [NO_THINKING + "wrong</answer>"] * len(rows)))


class ScriptedEngine:
    """A rollout engine that answers from a script: `plan[id] = (right of k, right of hack_tries)`.
    It accepts only the exact token ids estimate_difficulty should send (with and without NO_THINKING)."""

    def __init__(self, tokenizer, rows, plan):
        from rlpipe.tokenizer import format_prompt

        def encode(text):
            return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])

        self.prompts = {}
        for r in rows:
            self.prompts[encode(format_prompt(tokenizer, r["prompt"]))] = (r, False)
            self.prompts[encode(format_prompt(tokenizer, r["prompt"]) + NO_THINKING)] = (r, True)
        self.plan, self.calls, self.closed = plan, [], False

    def generate(self, prompt_ids, n, sampling, *, seed=None):
        self.calls.append((n, sampling, seed))
        text = []
        for ids in prompt_ids:
            row, hack = self.prompts[tuple(ids)]
            right = self.plan[row["id"]][1 if hack else 0]
            good = answer_part(row["solution"]) if hack else row["solution"]
            bad = "wrong</answer>" if hack else NO_THINKING + "wrong</answer>"
            text += [good if j < right else bad for j in range(n)]
        return Rollouts(n=n, prompt_ids=[list(p) for p in prompt_ids], token_ids=[[] for _ in text],
                        logprobs=[[] for _ in text], text=text, finish_reason=["stop"] * len(text))

    def close(self):
        self.closed = True


def test_estimate_difficulty_through_the_real_grader(artefacts):
    from rlpipe.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(artefacts / "model")
    rows = one_per_task(artefacts)
    by_task = {r["task"]: r["id"] for r in rows}
    plan = {by_task["countdown"]: (4, 0), by_task["equations"]: (0, 3), by_task["code_io"]: (2, 2),
            by_task["code"]: (1, 0), by_task["arithmetic"]: (0, 4)}
    engine = ScriptedEngine(tokenizer, rows, plan)
    table = estimate_difficulty(engine, tokenizer, rows, k=4, hack_tries=4, temperature=0.9, max_new_tokens=64, seed=5)
    got = {rid: (e.pass_rate, e.hack_rate, e.easy_to_hack) for rid, e in table.entries.items()}
    assert got == {by_task["countdown"]: (1.0, 0.0, False), by_task["equations"]: (0.0, 0.75, True),
                   by_task["code_io"]: (0.5, 0.5, False), by_task["code"]: (0.25, 0.0, False),
                   by_task["arithmetic"]: (0.0, 1.0, True)}
    s = table.summary()
    assert (s["never_solved"], s["always_solved"], s["easy_to_hack"]) == (2, 1, 2)
    (n1, sampling, seed1), (n2, _, seed2) = engine.calls
    assert (n1, n2, sampling.temperature, sampling.max_new_tokens) == (4, 4, 0.9, 64) and seed1 != seed2


def test_estimate_difficulty_on_a_random_checkpoint_solves_nothing(artefacts):
    from rlpipe.rollout import make_engine
    from rlpipe.tokenizer import load_tokenizer

    rows = one_per_task(artefacts)
    engine = make_engine("local", artefacts / "model", seed=0)
    try:
        table = estimate_difficulty(engine, load_tokenizer(artefacts / "model"), rows, k=2, hack_tries=2,
                                    max_new_tokens=8)
    finally:
        engine.close()
    assert list(table.entries) == [r["id"] for r in rows]
    assert all(e.pass_rate == 0.0 and e.hack_rate == 0.0 and not e.easy_to_hack for e in table.entries.values())
    s = table.summary()
    assert (s["n"], s["never_solved"], s["always_solved"], s["easy_to_hack"]) == (5, 5, 0, 0)
    assert set(s["by_task"]) == {"arithmetic", "equations", "countdown", "code", "code_io"}


def test_cli_writes_the_table_and_prints_the_summary(artefacts, tmp_path, capsys):
    out = tmp_path / "difficulty"
    assert rlpipe_main(["data", "difficulty", "--model", str(artefacts / "model"), "--data", str(artefacts / "data"),
                        "--out", str(out), "--backend", "local", "--limit", "3", "--k", "2", "--hack-tries", "2",
                        "--max-new-tokens", "6"]) == 0
    printed = capsys.readouterr().out
    assert "never solved 3" in printed and "easy to hack 0" in printed and "| task |" in printed
    table = DifficultyTable.load(out / "difficulty.json")
    first3 = [r["id"] for r in datasets.load_from_disk(str(artefacts / "data" / "rl")).select(range(3))]
    assert list(table.entries) == first3
    assert (table.k, table.hack_tries, table.meta["split"], table.meta["backend"]) == (2, 2, "rl", "local")
    # The sampler takes the table the CLI wrote.
    rows = [dict(r) for r in datasets.load_from_disk(str(artefacts / "data" / "rl")).select(range(3))]
    s = PromptSampler(rows, SamplerConfig(curriculum="pass_rate", difficulty_file=str(out / "difficulty.json")),
                      seed=0, num_steps=4)
    np.testing.assert_allclose(s.success, [0.0, 0.0, 0.0])


def test_cli_missing_inputs_are_one_clear_error(artefacts, tmp_path, capsys):
    assert rlpipe_main(["data", "difficulty", "--model", str(tmp_path / "nope"), "--data", str(artefacts / "data"),
                        "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nope") in err and "make stage-1" in err
    assert rlpipe_main(["data", "difficulty", "--model", str(artefacts / "model"), "--data", str(tmp_path / "nodata"),
                        "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "nodata" / "rl") in err and "rlpipe data build" in err
    assert rlpipe_main(["data", "explode"]) == 2
    assert "rlpipe data difficulty" in capsys.readouterr().err
