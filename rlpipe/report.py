"""The run report: one page showing the whole R1 recipe working, `runs/<run>/report.md` + PNGs.

Read from the stage folders (whatever exists; a missing stage is a line, not an error):
`stage-N/eval.json` (held-out evaluation, one shape for every stage), `stage-N/stage.json` (finished
marker: wall minutes, peak RSS), `stage-0/heldout_loss.json` (the base's held-out solution loss),
`stage-3/funnel.json` (rejection funnel), `stage-4/reward_model/rm_eval.json` (RM pair accuracy per kind), `stage-4/general_eval.json` (RM score on held-out general prompts
before/after) and `stage-4/rm_vs_rule.json` (the reward-hacking guard). Each RL stage's own curves
(`rl_curves.png`, `success_heatmap.png`) are linked, not redrawn.

The targets of the recipe are checked and printed as met / not met with the measured gap:
stage 2 at least `rl_margin` above stage 1; stage 3 at least stage 2 minus 2 points; stage 4 within
2 points of stage 3 on reasoning while raising the RM score on general prompts.

    rlpipe report --run runs/tiny        (also the last step of `make pipeline`)

Several runs (e.g. the same recipe on data seeds 0, 1, 2) also get one page side by side,
`runs_report.md` beside them: each run's held-out greedy accuracy per stage, each target per run and
how many runs meet it, the mean and spread of every stage-to-stage change, and one evaluation's
binomial standard error, so a change is read against its noise:

    rlpipe report --run runs/s0 --run runs/s1 --run runs/s2
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

STAGE_NAMES = {"stage-0": "base", "stage-1": "cold start SFT", "stage-2": "reasoning RL", "stage-3": "rejection SFT",
               "stage-4": "all-scenario RL"}


def _load(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def collect(run_dir: Path) -> dict:
    """Everything the report shows, from the run's stage folders."""
    evals, minutes, rss = {}, {}, {}
    for stage in STAGE_NAMES:
        e = _load(run_dir / stage / "eval.json")
        if e is not None:
            evals[stage] = e
        marker = _load(run_dir / stage / "stage.json")
        if marker is not None:
            minutes[stage] = marker.get("minutes")
            rss[stage] = marker.get("peak_rss_gb")
    return {"evals": evals, "minutes": minutes, "peak_rss_gb": rss, "funnel": _load(run_dir / "stage-3" / "funnel.json"),
            "base": _load(run_dir / "stage-0" / "heldout_loss.json"),
            "rm": _load(run_dir / "stage-4" / "reward_model" / "rm_eval.json"),
            "general": _load(run_dir / "stage-4" / "general_eval.json"),
            "guard": _load(run_dir / "stage-4" / "rm_vs_rule.json")}


def targets(data: dict, rl_margin: float = 0.10) -> list[tuple[str, bool | None, str]]:
    """(target, met (None: not measured), the measured figures)."""
    acc = {s: e["overall"]["accuracy"] for s, e in data["evals"].items()}
    out = []

    def check(name: str, a: str, b: str, ok, figure) -> None:
        if a in acc and b in acc:
            out.append((name, bool(ok(acc[a], acc[b])), figure(acc[a], acc[b])))
        else:
            out.append((name, None, f"needs {a} and {b} evaluated"))

    check(f"stage 2 >= stage 1 + {rl_margin:.2f}", "stage-2", "stage-1", lambda a, b: a - b >= rl_margin,
          lambda a, b: f"{b:.3f} -> {a:.3f} ({a - b:+.3f})")
    check("stage 3 >= stage 2 - 0.02", "stage-3", "stage-2", lambda a, b: a >= b - 0.02,
          lambda a, b: f"{b:.3f} -> {a:.3f} ({a - b:+.3f})")
    check("stage 4 within 0.02 of stage 3 (reasoning)", "stage-4", "stage-3", lambda a, b: abs(a - b) <= 0.02 or a > b,
          lambda a, b: f"{b:.3f} -> {a:.3f} ({a - b:+.3f})")
    g = data.get("general")
    if g:
        before, after = g["before"]["rm_score"], g["after"]["rm_score"]
        out.append(("stage 4 raises the RM score on general prompts", after > before,
                    f"{before:.3f} -> {after:.3f} ({after - before:+.3f})"))
    else:
        out.append(("stage 4 raises the RM score on general prompts", None, "stage 4 not evaluated"))
    return out


def overall_table(evals: dict[str, dict], minutes: dict[str, float], rss: dict[str, float]) -> str:
    lines = ["| stage | greedy | pass@k | maj@n | format | language consistency | mixing | mean length | "
             "arithmetic slips | minutes | peak RSS GB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for stage, e in evals.items():
        o = e["overall"]
        maj = f"{o['maj_at_n']:.3f}" if "maj_at_n" in o else "-"
        slips = f"{o['slip_rate']:.3f}" if "slip_rate" in o else "-"  # eval.json from before it existed
        lines.append(f"| {stage} ({STAGE_NAMES[stage]}) | {o['accuracy']:.3f} | {o['pass_at_k']:.3f} | {maj} | "
                     f"{o['format_rate']:.3f} | {o['language_consistency']:.3f} | {o['mixing_rate']:.3f} | "
                     f"{o['mean_length']:.1f} | {slips} | {minutes.get(stage) or '-'} | {rss.get(stage) or '-'} |")
    return "\n".join(lines)


def per_task_table(evals: dict[str, dict]) -> str:
    """Greedy accuracy / pass@k per task and level, one column per stage."""
    stages = list(evals)
    cells = sorted({(t, d) for e in evals.values() for t, levels in e["by_task"].items() for d in levels},
                   key=lambda c: (c[0], int(c[1])))
    lines = ["| task / level | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
    for t, d in cells:
        row = []
        for s in stages:
            c = evals[s]["by_task"].get(t, {}).get(d)
            row.append(f"{c['accuracy']:.2f} / {c['pass_at_k']:.2f}" if c else "-")
        lines.append(f"| {t} {d} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def build_report(run_dir: str | Path, rl_margin: float = 0.10) -> Path:
    """Write `run_dir/report.md` and its PNGs; returns the report's path."""
    from rlpipe.plots import plot_funnel, plot_pass_at_k, plot_stages_accuracy, plot_stages_overall
    from rlpipe.rejection import funnel_table

    run_dir = Path(run_dir)
    data = collect(run_dir)
    evals = data["evals"]
    parts = [f"# rlpipe run `{run_dir.name}`: the R1 recipe, stage by stage", ""]
    missing = [f"{s} ({STAGE_NAMES[s]})" for s in STAGE_NAMES if not (run_dir / s).exists()]
    if missing:
        parts += [f"Stages not run yet: {', '.join(missing)}.", ""]
    parts += ["## Targets", "", "| target | met | measured |", "|---|---|---|"]
    parts += [f"| {name} | {'-' if ok is None else ('yes' if ok else 'NO')} | {fig} |"
              for name, ok, fig in targets(data, rl_margin)]
    parts.append("")
    if evals:
        plot_stages_accuracy(evals, run_dir / "stages_accuracy.png")
        plot_stages_overall(evals, run_dir / "stages_overall.png")
        n = next(iter(evals.values()))["overall"]["n"]
        parts += [f"## Held-out evaluation ({n} prompts, same split and grader for every stage)", "",
                  overall_table(evals, data["minutes"], data["peak_rss_gb"]), "", "![per task](stages_accuracy.png)", "",
                  "![overall](stages_overall.png)", "", "Greedy accuracy / pass@k per task and level:", "",
                  per_task_table(evals), ""]
        if plot_pass_at_k(evals, run_dir / "pass_at_k.png"):
            parts += ["pass@k against k: where a later stage's curve rises above an earlier one's only at small k, it "
                      "sharpened what the earlier stage could already sample; a rise at large k is a wider reach.", "",
                      "![pass@k](pass_at_k.png)", ""]
    if data["base"]:
        parts += [f"Base model (stage 0): held-out solution loss {data['base']['loss']:.3f} nats per token "
                  "(lower is a stronger base; see the stage-0 report).", ""]
    curves = [(s, f) for s in ("stage-2", "stage-4") for f in ("rl_curves.png", "success_heatmap.png")
              if (run_dir / s / f).exists()]
    if curves:
        parts += ["## RL curves", ""] + [f"![{s} {f[:-4]}]({s}/{f})" for s, f in curves] + [""]
    if data["funnel"]:
        plot_funnel(data["funnel"], run_dir / "funnel.png")
        parts += ["## Stage 3: rejection-sampling funnel", "", funnel_table(data["funnel"]), "",
                  "![funnel](funnel.png)", ""]
    if data["rm"]:
        from rlpipe.train.reward_model import accuracy_table

        parts += ["## Stage 4: the preference reward model", "", accuracy_table(data["rm"]), ""]
    if data["general"]:
        g = data["general"]
        parts += [f"General prompts ({g['after']['n']} held out, greedy): RM score {g['before']['rm_score']:.3f} -> "
                  f"{g['after']['rm_score']:.3f}, exact match with the reference {g['before']['exact_match']:.3f} "
                  f"-> {g['after']['exact_match']:.3f}.", ""]
        if g["after"]["rm_score"] > g["before"]["rm_score"] and g["after"]["exact_match"] < g["before"]["exact_match"]:
            # R1's warning about long RM-driven training: the learned score rose while agreement with the
            # reference answers fell, so the policy found what the RM likes rather than what is right.
            parts += ["**Reward-hacking sign**: the RM score rose while exact match with the references fell; "
                      "shorten the RM phase (`reward_model.start_step`) or lower `reward_model.weight`.", ""]
    if data["guard"] and (run_dir / "stage-4" / "rm_vs_rule.png").exists():
        parts += ["Reward-hacking guard (RM vs the rule on the same reasoning completions):", "",
                  "![rm vs rule](stage-4/rm_vs_rule.png)", ""]
    path = run_dir / "report.md"
    path.write_text("\n".join(parts))
    return path


def build_runs_report(run_dirs: list[str | Path], out: str | Path, rl_margin: float = 0.10) -> Path:
    """One page comparing runs of the same recipe (e.g. data seeds): per-stage accuracy, targets, spread."""
    from rlpipe.plots import plot_runs_accuracy

    runs = {Path(r).name: collect(Path(r)) for r in run_dirs}
    acc = {run: {s: e["overall"]["accuracy"] for s, e in data["evals"].items()} for run, data in runs.items()}
    stages = [s for s in STAGE_NAMES if any(s in a for a in acc.values())]
    out = Path(out)
    parts = [f"# rlpipe: {len(runs)} runs side by side ({', '.join(runs)})", "",
             "## Held-out greedy accuracy per stage", "",
             "| run | " + " | ".join(stages) + " |", "|---|" + "---|" * len(stages)]
    parts += [f"| {run} | " + " | ".join(f"{a[s]:.3f}" if s in a else "-" for s in stages) + " |"
              for run, a in acc.items()]
    base = {run: data["base"]["loss"] for run, data in runs.items() if data["base"]}
    if base:
        parts += ["", "Base model (stage 0), held-out solution loss in nats per token (lower is stronger): "
                  + ", ".join(f"{run} {loss:.3f}" for run, loss in base.items()) + "."]
    # One evaluation's binomial standard error at the accuracies seen: sqrt(p (1 - p) / n).
    overall = [e["overall"] for data in runs.values() for e in data["evals"].values()]
    if overall:
        ns = [o["n"] for o in overall]
        se = max(math.sqrt(o["accuracy"] * (1 - o["accuracy"]) / o["n"]) for o in overall)
        sizes = f"{min(ns)}" if min(ns) == max(ns) else f"{min(ns)}-{max(ns)}"
        parts += ["", f"One evaluation of {sizes} prompts has a standard error of at most {se:.3f}; "
                      f"a change between two stages of one run is about {se * math.sqrt(2):.3f} (1 sigma)."]
    plot_runs_accuracy(acc, stages, out.with_name(out.stem + "_accuracy.png"))
    parts += ["", f"![accuracy per stage]({out.stem}_accuracy.png)", "", "## Stage-to-stage changes", "",
              "| change | " + " | ".join(runs) + " | mean | spread (sd) |", "|---|" + "---|" * (len(runs) + 2)]
    for a, b in zip(stages, stages[1:]):
        deltas = {run: x[b] - x[a] for run, x in acc.items() if a in x and b in x}
        if not deltas:
            continue
        vals = list(deltas.values())
        sd = f"{statistics.stdev(vals):.3f}" if len(vals) > 1 else "-"
        parts.append(f"| {a} -> {b} | " + " | ".join(f"{deltas[r]:+.3f}" if r in deltas else "-" for r in runs)
                     + f" | {statistics.mean(vals):+.3f} | {sd} |")
    parts += ["", "## Targets per run", "", "| target | " + " | ".join(runs) + " | met on |",
              "|---|" + "---|" * (len(runs) + 1)]
    verdicts = {run: {name: (ok, fig) for name, ok, fig in targets(data, rl_margin)} for run, data in runs.items()}
    for name in next(iter(verdicts.values())):
        cells = [verdicts[r][name] for r in runs]
        shown = [fig if ok is None else f"{'yes' if ok else 'NO'}: {fig}" for ok, fig in cells]
        measured = [ok for ok, _ in cells if ok is not None]
        parts.append(f"| {name} | " + " | ".join(shown) + f" | {sum(measured)} of {len(measured)} measured |")
    out.write_text("\n".join(parts) + "\n")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlpipe report", description="the run report: runs/<run>/report.md")
    parser.add_argument("--run", required=True, action="append",
                        help="run folder, e.g. runs/tiny; repeat it to compare runs (data seeds) on one page")
    parser.add_argument("--out", help="the side-by-side page of several runs (default: runs_report.md beside them)")
    parser.add_argument("--rl-margin", type=float, default=0.10, help="stage-2 target over stage 1")
    args = parser.parse_args(argv)
    for run in args.run:
        if not Path(run).is_dir():
            print(f"rlpipe report: {run} is not a run folder; run `make pipeline RUN=<name>` first")
            return 2
    for run in args.run:
        path = build_report(run, args.rl_margin)
        if len(args.run) == 1:
            print(path.read_text())
        print(f"wrote {path}")
    if len(args.run) > 1:
        path = build_runs_report(args.run, args.out or Path(args.run[0]).parent / "runs_report.md", args.rl_margin)
        print(path.read_text())
        print(f"wrote {path}")
    return 0


__all__ = ["build_report", "build_runs_report", "collect", "main", "targets"]
