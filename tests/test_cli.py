"""The `rlpipe` entry point dispatches to each area and reports bad commands clearly."""

import subprocess
import sys

from rlpipe.cli import COMMANDS, main


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_unknown_command_is_an_error_naming_it(capsys):
    assert main(["frobnicate"]) == 2
    assert "frobnicate" in capsys.readouterr().err


def test_data_needs_the_build_verb(capsys):
    assert main(["data", "explode"]) == 2
    assert "rlpipe data build" in capsys.readouterr().err


def test_console_script_runs_reward_math():
    # Through a real subprocess: the installed console script, no torch import needed.
    out = subprocess.run([sys.executable, "-m", "rlpipe.cli", "reward", "math", "--pred", "1/2",
                          "--gold", "0.5"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "true" in out.stdout.lower() or "equal" in out.stdout.lower()
