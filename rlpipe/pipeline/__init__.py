"""Stage procedures: thin wiring that reads the previous stage's folder and writes its own.

`rlpipe run stages/<recipe>.yaml [key=value ...]` -> `run_stage(argv)`: load the recipe
(`rlpipe.config.load_config`), pick the procedure from its `stage:` field (`rlpipe.config.STAGES`)
and call its `run(cfg)`. User errors (`rlpipe.errors.RlpipeError`: bad recipe, missing input stage,
malformed checkpoint or data) end in one message, exit 2.

A stage that ends writes `stage.json` (`FINISHED`) into its folder, with its wall minutes and the
peak resident memory of its largest process (this one: the trainer with its in-process vLLM engine).
Running it again then says so and does nothing, unless `redo=true`, which deletes the stage folder
and runs it from scratch. An interrupted stage has no `stage.json`: running it again resumes from
its last checkpoint.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import shutil
import sys
import time

USAGE = "usage: rlpipe run stages/<recipe>.yaml [key=value | section.key=value ...]"
FINISHED = "stage.json"


def _is_rank0() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _peak_rss_gb() -> float:
    """The largest resident set of this process or any child it waited for (ru_maxrss is in KiB on Linux)."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 2**20


def run_stage(argv: list[str] | None = None) -> int:
    from rlpipe.config import STAGES, load_config
    from rlpipe.errors import RlpipeError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\nstages: {', '.join(f'{k} ({v[2]})' for k, v in STAGES.items())}")
        return 0 if argv else 2
    try:
        cfg = load_config(argv[0], argv[1:])
        marker = cfg.out_dir / FINISHED
        if marker.exists() and not cfg.redo:
            print(f"{cfg.stage} of run '{cfg.run}' is already finished ({marker}); nothing to do. "
                  f"Pass redo=true (make {cfg.stage} RUN={cfg.run} ARGS=redo=true) to run it again from scratch")
            return 0
        if marker.exists() and _is_rank0():
            print(f"redo=true: deleting {cfg.out_dir}/ and running {cfg.stage} from scratch")
            shutil.rmtree(cfg.out_dir)
        procedure = importlib.import_module(STAGES[cfg.stage][1])
        t0 = time.time()
        procedure.run(cfg)
        if _is_rank0() and cfg.out_dir.exists():
            marker.write_text(json.dumps({"stage": cfg.stage, "run": cfg.run, "recipe": argv[0],
                                          "overrides": argv[1:], "minutes": round((time.time() - t0) / 60, 2),
                                          "peak_rss_gb": round(_peak_rss_gb(), 2),
                                          "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))
    except RlpipeError as err:  # a user error: one line naming the file and the fix
        print(f"rlpipe run: {err}", file=sys.stderr)
        return 2
    return 0


__all__ = ["run_stage"]
