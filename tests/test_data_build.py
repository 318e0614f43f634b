"""`rlpipe data build`: the saved splits, their schema, no eval/training overlap, seed determinism,
the configured language-mixing rate, Chinese prompts, and the manifest's token statistics."""

import json
import re
import time

import pytest
from datasets import load_from_disk

from data import build as builder
from data.build import SIZES, BuildConfig, Size, build, main

MICRO = Size(sft=1000, rl=200, eval_per_cell=6, pretrain_problems=300, pretrain_facts=150,
             pretrain_chat=100, nonreasoning=200, preferences=200)
TASK_SPLITS = ("sft", "rl", "eval")
SPLITS = ("pretrain", "sft", "rl", "eval", "nonreasoning", "preferences")
CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def micro(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setitem(SIZES, "micro", MICRO)
    out = tmp_path_factory.mktemp("data")
    manifest = build(BuildConfig(out=str(out), seed=0, size="micro", vocab_size=1024))
    yield out, manifest
    mp.undo()


def load(out, split):
    return load_from_disk(str(out / split))


def test_all_splits_written_with_the_contract_schema(micro):
    out, manifest = micro
    for split in SPLITS:
        assert (out / split).is_dir(), split
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    expected = {"id", "prompt", "answer", "task", "difficulty", "language", "tests", "entry_point",
                "numbers", "target", "solution", "mixed_language"}
    for split in TASK_SPLITS + ("nonreasoning",):
        ds = load(out, split)
        assert expected <= set(ds.column_names), split
        assert ds.features["difficulty"].dtype == "int64" and ds.features["target"].dtype == "int64"
        assert len(set(ds["id"])) == len(ds)
        for row in ds.select(range(min(200, len(ds)))):
            assert row["language"] in ("en", "zh")
            assert (row["target"] is not None) == (row["task"] == "countdown") == bool(row["numbers"])
            assert bool(row["entry_point"]) == (row["task"] == "code")
            assert bool(row["tests"]) == row["task"].startswith("code")
    assert load(out, "pretrain").column_names == ["text"]
    assert {"prompt", "chosen", "rejected"} <= set(load(out, "preferences").column_names)
    assert manifest["rows"]["sft"] == len(load(out, "sft"))


def test_eval_covers_every_task_and_level_in_both_languages(micro):
    ev = load(micro[0], "eval")
    cells = {(r["task"], r["difficulty"]) for r in ev}
    assert cells == {(t, d) for t in builder.TASK_WEIGHTS for d in (1, 2, 3, 4)}
    assert {"en", "zh"} == set(ev["language"])
    assert not any(ev["mixed_language"])


def test_no_eval_prompt_or_problem_appears_in_training(micro):
    out, _ = micro
    ev = load(out, "eval")
    eval_prompts, eval_keys = set(ev["prompt"]), set(ev["key"])
    for split in ("sft", "rl"):
        ds = load(out, split)
        assert not eval_prompts & set(ds["prompt"]), split
        assert not eval_keys & set(ds["key"]), split
    assert not eval_prompts & set(load(out, "preferences")["prompt"])
    corpus = "\n".join(load(out, "pretrain")["text"])
    leaked = [p for p in eval_prompts if f"<|user|>{p}<|assistant|>" in corpus]
    assert not leaked


def test_mixing_rate_is_the_configured_rate(micro):
    out, manifest = micro
    sft = load(out, "sft")
    rate = sum(sft["mixed_language"]) / len(sft)
    assert abs(rate - 0.10) < 0.035 and manifest["mixing_rate"]["sft"] == round(rate, 4)
    for row in sft:
        think = row["solution"].split("</think>")[0]
        if row["mixed_language"] and row["language"] == "en":
            assert CJK.search(think)
    assert not any(load(out, "rl")["mixed_language"])


def test_mix_rate_zero_gives_no_mixed_traces(tmp_path, monkeypatch):
    monkeypatch.setitem(SIZES, "micro", MICRO)
    tasks, _ = builder.build_task_splits(BuildConfig(out=str(tmp_path), size="micro", mix_rate=0.0), MICRO)
    assert not any(r["mixed_language"] for r in tasks["sft"])


def test_chinese_prompts_present_in_every_split(micro):
    out, manifest = micro
    for split in TASK_SPLITS + ("nonreasoning", "preferences"):
        prompts = load(out, split)["prompt"]
        share = sum(bool(CJK.search(p)) for p in prompts) / len(prompts)
        assert 0.25 < share < 0.55, (split, share)  # configured 0.4
    assert any(CJK.search(t) for t in load(out, "pretrain")["text"])


def test_same_seed_same_data_other_seed_other_data(micro, tmp_path, monkeypatch):
    monkeypatch.setitem(SIZES, "micro", MICRO)
    out, _ = micro
    again, excluded = builder.build_task_splits(BuildConfig(out=str(tmp_path), seed=0, size="micro"), MICRO)
    assert again["sft"] == load(out, "sft").to_list()
    assert again["eval"] == load(out, "eval").to_list()
    other, _ = builder.build_task_splits(BuildConfig(out=str(tmp_path), seed=1, size="micro"), MICRO)
    assert other["eval"] != again["eval"]
    pretrain_again, _ = builder.build_pretrain(BuildConfig(out=str(tmp_path), seed=0, size="micro"), MICRO, excluded)
    assert pretrain_again == load(out, "pretrain").to_list()


def test_manifest_reports_token_lengths_per_split(micro):
    out, manifest = micro
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["tokens"].keys() == set(SPLITS)
    for split, s in on_disk["tokens"].items():
        assert 0 < s["mean"] <= s["max"] and s["total"] > 0, split
    # Short sequences for a tiny model: most rows fit in 256 tokens, none near 384 (with this
    # micro build's small tokenizer; the tiny build's longest row is ~290, within stage 1's 320).
    assert on_disk["tokens"]["sft"]["over_256"] < 0.1 and on_disk["tokens"]["sft"]["over_384"] == 0
    assert on_disk["tokens"]["sft"]["by_cell"]["arithmetic/1"]["max"] < 64


def test_cli_main_accepts_the_build_subcommand(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(SIZES, "micro", Size(sft=100, rl=20, eval_per_cell=2, pretrain_problems=40,
                                             pretrain_facts=20, pretrain_chat=20, nonreasoning=20, preferences=20))
    assert main(["build", "--out", str(tmp_path / "d"), "--seed", "3", "--size", "micro", "--vocab-size", "600"]) == 0
    assert "| sft |" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "e"), "--size", "huge"])


@pytest.mark.slow
def test_tiny_preset_builds_in_under_30_seconds(tmp_path):
    started = time.time()
    manifest = build(BuildConfig(out=str(tmp_path), seed=0, size="tiny"))
    assert time.time() - started < 30
    assert manifest["tokens"]["pretrain"]["total"] > 1_000_000


def test_level_weights_set_the_difficulty_mix(tmp_path):
    cfg = BuildConfig(out=str(tmp_path), size="micro", level_weights=(3.0, 1.0, 0.0, 0.0))
    tasks, _ = builder.build_task_splits(cfg, MICRO)
    levels = [r["difficulty"] for r in tasks["sft"]]
    assert set(levels) == {1, 2} and abs(levels.count(1) / len(levels) - 0.75) < 0.02
    assert {r["difficulty"] for r in tasks["eval"]} == {1, 2, 3, 4}  # eval keeps every level
    with pytest.raises(ValueError, match="level-weights"):
        build(BuildConfig(out=str(tmp_path / "x"), size="tiny", level_weights=(1.0, 1.0)))
