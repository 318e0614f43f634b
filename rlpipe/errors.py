"""The one family of errors a user can cause. Each message names the file, the field and the fix.

`rlpipe run` (and every other command) catches `RlpipeError` and prints one line, exit code 2;
anything else is a bug and keeps its traceback. The subclasses also derive from the builtin a
caller would expect (`ValueError`, `FileNotFoundError`, ...), so `except ValueError` keeps working.
"""

from __future__ import annotations


class RlpipeError(Exception):
    """A user-caused error: bad recipe, missing or malformed input, incompatible checkpoint."""


class ConfigError(RlpipeError, ValueError):
    """A recipe, override or model configuration is wrong; names the key, the source and the fix."""


class CheckpointError(RlpipeError, RuntimeError):
    """A checkpoint folder is missing, incomplete, corrupt or made for another model/run."""


class StageInputError(RlpipeError, FileNotFoundError):
    """A stage's input (previous stage folder, data split) is missing; names the make target."""


class DataError(RlpipeError, ValueError):
    """A data set row or column is malformed (e.g. an RL split without answers); names the fix."""


__all__ = ["CheckpointError", "ConfigError", "DataError", "RlpipeError", "StageInputError"]
