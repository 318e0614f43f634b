"""The run report from hand-made stage folders: targets met / not met with the measured gap, tables, plots."""

import json

from rlpipe.report import build_report, targets


def eval_json(accuracy: float, pass_at_k: float = 0.6) -> dict:
    cell = {"accuracy": accuracy, "pass_at_k": pass_at_k, "maj_at_n": accuracy, "mixed_groups": 0.5, "n": 4}
    return {"overall": {"accuracy": accuracy, "pass_at_k": pass_at_k, "k": 4, "maj_at_n": accuracy, "n_samples": 8,
                        "format_rate": 0.99, "language_consistency": 1.0, "mixing_rate": 0.0, "mean_length": 90.0,
                        "mixed_groups": 0.5, "n": 8,
                        "pass_at_k_curve": {"1": accuracy - 0.05, "2": pass_at_k - 0.05, "4": pass_at_k, "8": pass_at_k + 0.05}},
            "by_task": {"arithmetic": {"1": cell}, "countdown": {"2": cell}}}


def write_run(root, accuracies: dict, general=None, exact=(0.1, 0.2)):
    for stage, acc in accuracies.items():
        (root / stage).mkdir(parents=True)
        (root / stage / "eval.json").write_text(json.dumps(eval_json(acc)))
        (root / stage / "stage.json").write_text(json.dumps({"minutes": 1.5, "peak_rss_gb": 2.5}))
    if general is not None:
        (root / "stage-4" / "general_eval.json").write_text(json.dumps(
            {"before": {"rm_score": general[0], "exact_match": exact[0], "n": 4},
             "after": {"rm_score": general[1], "exact_match": exact[1], "n": 4}}))
    if "stage-3" not in accuracies:
        return
    (root / "stage-3" / "funnel.json").write_text(json.dumps(
        {"overall": {"sampled": 8, "correct": 4, "well_formed": 4, "clean": 3, "kept": 2},
         "by_cell": {"arithmetic/1": {"sampled": 8, "correct": 4, "well_formed": 4, "clean": 3, "kept": 2}},
         "dropped": {"wrong": 4, "repetitive": 1, "duplicate": 1}, "prompts_with_a_kept_sample": 2}))


def test_targets_say_met_or_not_with_the_gap(tmp_path):
    write_run(tmp_path, {"stage-1": 0.50, "stage-2": 0.53, "stage-3": 0.50, "stage-4": 0.49}, general=(0.3, 0.2))
    from rlpipe.report import collect

    got = {name: (ok, fig) for name, ok, fig in targets(collect(tmp_path))}
    assert got["stage 2 >= stage 1 + 0.10"] == (False, "0.500 -> 0.530 (+0.030)")
    assert got["stage 3 >= stage 2 - 0.02"] == (False, "0.530 -> 0.500 (-0.030)")
    assert got["stage 4 within 0.02 of stage 3 (reasoning)"] == (True, "0.500 -> 0.490 (-0.010)")
    assert got["stage 4 raises the RM score on general prompts"] == (False, "0.300 -> 0.200 (-0.100)")


def test_report_page_and_plots(tmp_path):
    write_run(tmp_path, {"stage-1": 0.40, "stage-2": 0.55, "stage-3": 0.54, "stage-4": 0.56}, general=(0.1, 0.4))
    page = build_report(tmp_path).read_text()
    assert "Reward-hacking sign" not in page  # the RM score and exact match both rose
    assert "| stage 2 >= stage 1 + 0.10 | yes | 0.400 -> 0.550 (+0.150) |" in page
    assert "| stage-3 (rejection SFT) | 0.540 | 0.600 | 0.540 | 0.990 | 1.000 | 0.000 | 90.0 | - | 1.5 | 2.5 |" in page
    assert "| arithmetic 1 | 0.40 / 0.60 | 0.55 / 0.60 | 0.54 / 0.60 | 0.56 / 0.60 |" in page
    assert "Stages not run yet: stage-0 (base)." in page and "| all | 8 | 4 | 4 | 3 | 2 | 0.25 |" in page
    assert "![pass@k](pass_at_k.png)" in page
    for png in ("stages_accuracy.png", "stages_overall.png", "funnel.png", "pass_at_k.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_stages_are_lines_not_errors(tmp_path):
    (tmp_path / "stage-1").mkdir()
    page = build_report(tmp_path).read_text()
    assert "| stage 2 >= stage 1 + 0.10 | - | needs stage-2 and stage-1 evaluated |" in page


def test_runs_side_by_side_page(tmp_path):
    """Three seeds of one recipe: per-stage accuracy, each change's mean and spread, targets met on k of n."""
    from rlpipe.report import main

    write_run(tmp_path / "s0", {"stage-1": 0.50, "stage-2": 0.62, "stage-3": 0.61, "stage-4": 0.62}, general=(0.1, 0.3),
              exact=(0.2, 0.1))
    write_run(tmp_path / "s1", {"stage-1": 0.40, "stage-2": 0.44, "stage-3": 0.45}, general=None)
    write_run(tmp_path / "s2", {"stage-1": 0.30, "stage-2": 0.38})
    assert main(["--run", str(tmp_path / "s0"), "--run", str(tmp_path / "s1"), "--run", str(tmp_path / "s2")]) == 0
    page = (tmp_path / "runs_report.md").read_text()
    assert "| s1 | 0.400 | 0.440 | 0.450 | - |" in page
    # stage-1 -> stage-2: +0.12, +0.04, +0.08: mean +0.080, sample sd 0.040.
    assert "| stage-1 -> stage-2 | +0.120 | +0.040 | +0.080 | +0.080 | 0.040 |" in page
    assert "| stage-3 -> stage-4 | +0.010 | - | - | +0.010 | - |" in page
    assert ("| stage 2 >= stage 1 + 0.10 | yes: 0.500 -> 0.620 (+0.120) | NO: 0.400 -> 0.440 (+0.040) | "
            "NO: 0.300 -> 0.380 (+0.080) | 1 of 3 measured |") in page
    assert "| stage 4 raises the RM score on general prompts | yes: 0.100 -> 0.300 (+0.200) | stage 4 not evaluated" in page
    # s0's exact match fell (0.2 -> 0.1) while its RM score rose: its own page says so.
    assert "Reward-hacking sign" in (tmp_path / "s0" / "report.md").read_text()
    # n = 8 prompts in these hand-made evals: at p = 0.5 the standard error is sqrt(0.25 / 8) = 0.177.
    assert "standard error of at most 0.177" in page
    assert (tmp_path / "runs_report_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "s2" / "report.md").is_file()  # each run's own page is (re)built too


def test_base_loss_is_shown_per_run(tmp_path):
    for run, loss in (("s0", 0.066), ("s1", 0.347)):
        write_run(tmp_path / run, {"stage-1": 0.5})
        (tmp_path / run / "stage-0").mkdir()
        (tmp_path / run / "stage-0" / "heldout_loss.json").write_text(json.dumps({"loss": loss, "by_task": {}}))
    from rlpipe.report import build_runs_report

    assert "held-out solution loss 0.066 nats per token" in build_report(tmp_path / "s0").read_text()
    page = build_runs_report([tmp_path / "s0", tmp_path / "s1"], tmp_path / "runs_report.md").read_text()
    assert "(lower is stronger): s0 0.066, s1 0.347." in page


def test_stage_table_shows_the_slip_rate_where_the_eval_has_it():
    from rlpipe.report import overall_table

    with_slips = eval_json(0.5)
    with_slips["overall"]["slip_rate"] = 0.25
    table = overall_table({"stage-1": eval_json(0.4), "stage-2": with_slips}, {"stage-2": 3.0}, {})
    assert "| stage-2 (reasoning RL) | 0.500 | 0.600 | 0.500 | 0.990 | 1.000 | 0.000 | 90.0 | 0.250 | 3.0 | - |" in table
    assert "| 90.0 | - | - | - |" in table  # stage 1's eval.json predates the slip rate


def test_stage_comparison_lists_pass_at_k_per_k_only_for_the_same_n(tmp_path):
    from rlpipe.pipeline.reasoning_rl import comparison_table
    from rlpipe.plots import plot_pass_at_k

    before, after = eval_json(0.40, 0.50), eval_json(0.45, 0.52)
    table = comparison_table(before, after, "stage-1")
    assert "| pass@1 | 0.350 | 0.400 | +0.050 |" in table and "| pass@8 | 0.550 | 0.570 | +0.020 |" in table
    after["overall"]["n_samples"] = 32  # pass@k estimated from a different n: not comparable row by row
    assert "| pass@1 |" not in comparison_table(before, after, "stage-1")
    assert plot_pass_at_k({"stage-1": before, "stage-2": after}, tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    del before["overall"]["pass_at_k_curve"], after["overall"]["pass_at_k_curve"]  # eval.json from before the curve
    assert plot_pass_at_k({"stage-1": before, "stage-2": after}, tmp_path / "q.png") is None
    assert not (tmp_path / "q.png").exists()
