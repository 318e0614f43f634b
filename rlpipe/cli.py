"""The `rlpipe` command: one entry point that dispatches to each area's own `main(argv)`.

    rlpipe run stages/<recipe>.yaml [key=value ...]   run one pipeline stage (see stages/)
    rlpipe eval --model DIR --data DIR --out eval.json  held-out evaluation of a checkpoint
    rlpipe data build --out DIR --seed N [--size tiny]  build the task data sets
    rlpipe data difficulty --model DIR --data DIR --out DIR  per-prompt pass rate + hack test
    rlpipe init-model --preset tiny --tokenizer DIR --out DIR --seed N
    rlpipe train-rm --model DIR --data DIR --out DIR [--max-steps N --view full|answer ...]  preference RM
    rlpipe reward math --pred P --gold G | reward code --file F --tests T
    rlpipe report --run runs/<run>                      the one-page report of every stage run

Sub-commands import their area lazily, so `rlpipe reward ...` starts without torch.
"""

from __future__ import annotations

import importlib
import sys

# command -> (module, function, one-line help). Each function takes the remaining argv.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "run": ("rlpipe.pipeline", "run_stage", "run one pipeline stage from a stages/*.yaml recipe"),
    "eval": ("rlpipe.evaluate", "main", "evaluate a checkpoint on the held-out splits"),
    "data": ("data.build", "main", "task data: `rlpipe data build ...` | `rlpipe data difficulty ...`"),
    "init-model": ("rlpipe.model.cli", "main", "write a randomly initialised checkpoint"),
    "reward": ("rewards.cli", "main", "debug a grader: `rlpipe reward math|code ...`"),
    "train-rm": ("rlpipe.train.reward_model", "main", "train the preference reward model (Bradley-Terry)"),
    "report": ("rlpipe.report", "main", "the run report: runs/<run>/report.md with plots"),
}

# `rlpipe data <verb>` -> (module, function).
DATA_VERBS: dict[str, tuple[str, str]] = {
    "build": ("data.build", "main"),
    "difficulty": ("rlpipe.sampler", "main"),
}


def usage() -> str:
    lines = ["usage: rlpipe <command> [args]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, _, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(f"rlpipe: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module, function, _ = COMMANDS[command]
    if command == "data":
        # `rlpipe data <verb> ...`: each verb is its own module's main(argv).
        if not rest or rest[0] not in DATA_VERBS:
            print("usage: rlpipe data build --out DIR --seed N [--size tiny|small|full]\n"
                  "       rlpipe data difficulty --model DIR --data DIR --out DIR [--split rl] [--k 10] "
                  "[--limit N] [--backend vllm|local]", file=sys.stderr)
            return 2
        (module, function), rest = DATA_VERBS[rest[0]], rest[1:]
    result = getattr(importlib.import_module(module), function)(rest)
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
