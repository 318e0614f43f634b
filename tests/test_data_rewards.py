"""The data and the project's rule-based rewards agree: every reference solution is graded correct,
well formatted and in its prompt's language; language-mixed traces are caught by the language reward;
wrong and malformed preference responses are graded as such."""

import pytest

from data import build as builder
from data.build import BuildConfig, Size

rewards = pytest.importorskip("rewards")

SMALL = Size(sft=300, rl=10, eval_per_cell=3, pretrain_problems=10, pretrain_facts=10, pretrain_chat=10,
             nonreasoning=60, preferences=150)
COLUMNS = ("answer", "tests", "entry_point", "numbers", "target", "language", "task")


@pytest.fixture(scope="module")
def task_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("d")
    splits, excluded = builder.build_task_splits(BuildConfig(out=str(out), seed=5), SMALL)
    return splits, excluded


def grade(name, rows, completions=None):
    columns = {c: [r[c] for r in rows] for c in COLUMNS if c in rows[0]}
    completions = [r["solution"] for r in rows] if completions is None else completions
    return rewards.REGISTRY[name]([r["prompt"] for r in rows], completions, **columns)


def test_reference_solutions_are_graded_correct_and_well_formatted(task_rows):
    rows = task_rows[0]["eval"]
    assert {r["task"] for r in rows} == set(builder.TASK_WEIGHTS)
    assert grade("task_accuracy", rows) == [1.0] * len(rows)
    assert grade("format", rows) == [1.0] * len(rows)
    unmixed = grade("language", rows)
    assert min(v for v in unmixed if v is not None) >= 0.75 and sum(unmixed) / len(unmixed) > 0.97


def test_mixed_traces_score_lower_on_language_consistency(task_rows):
    sft = task_rows[0]["sft"]
    mixed = [r for r in sft if r["mixed_language"]]
    clean = [r for r in sft if not r["mixed_language"]]
    assert mixed
    mixed_scores = grade("language", mixed)
    clean_scores = [v for v in grade("language", clean) if v is not None]
    assert sum(mixed_scores) / len(mixed_scores) < sum(clean_scores) / len(clean_scores) - 0.2


def test_nonreasoning_replies_are_graded_correct_and_well_formatted(tmp_path):
    rows = builder.build_nonreasoning(BuildConfig(out=str(tmp_path), seed=2), 80, "nr")
    assert grade("format", rows) == [1.0] * len(rows)
    assert grade("accuracy", rows) == [1.0] * len(rows)


def test_rejected_preferences_lose_on_the_rule_rewards(task_rows, tmp_path):
    prefs = builder.build_preferences(BuildConfig(out=str(tmp_path), seed=3), 150, task_rows[1])
    prompts = [p["prompt"] for p in prefs]
    fmt_chosen = rewards.REGISTRY["format"](prompts, [p["chosen"] for p in prefs])
    fmt_rejected = rewards.REGISTRY["format"](prompts, [p["rejected"] for p in prefs])
    assert fmt_chosen == [1.0] * len(prefs)
    for p, f in zip(prefs, fmt_rejected):
        assert (f == 0.0) == (p["kind"] == "malformed"), p
    kinds = {p["kind"] for p in prefs}
    assert {"wrong_answer", "malformed", "mixed_language"} <= kinds
