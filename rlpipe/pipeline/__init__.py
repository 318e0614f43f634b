"""Stage procedures: thin wiring that reads the previous stage's folder and writes its own.

`rlpipe run stages/<recipe>.yaml [key=value ...]` -> `run_stage(argv)`: load the recipe
(`rlpipe.config.load_config`), pick the procedure from its `stage:` field (`rlpipe.config.STAGES`)
and call its `run(cfg)`. User errors (`rlpipe.errors.RlpipeError`: bad recipe, missing input stage,
malformed checkpoint or data) end in one message, exit 2.
"""

from __future__ import annotations

import importlib
import sys

USAGE = "usage: rlpipe run stages/<recipe>.yaml [key=value | section.key=value ...]"


def run_stage(argv: list[str] | None = None) -> int:
    from rlpipe.config import STAGES, load_config
    from rlpipe.errors import RlpipeError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(f"{USAGE}\n\nstages: {', '.join(f'{k} ({v[2]})' for k, v in STAGES.items())}")
        return 0 if argv else 2
    try:
        cfg = load_config(argv[0], argv[1:])
        procedure = importlib.import_module(STAGES[cfg.stage][1])
        procedure.run(cfg)
    except RlpipeError as err:  # a user error: one line naming the file and the fix
        print(f"rlpipe run: {err}", file=sys.stderr)
        return 2
    return 0


__all__ = ["run_stage"]
