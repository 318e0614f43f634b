"""Shared test set-up: the real data builder at a small size and a random tiny checkpoint on its tokenizer.

`--size tiny` takes 15-50 s on the shared cores; a few hundred task rows take about 5 s."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest


def small_data_and_model(data_dir: Path, model_dir: Path, **sizes) -> None:
    """Build data into data_dir (the `tiny` sizes with `sizes` replacing some) and write a random
    `tiny` checkpoint into model_dir with that data's tokenizer."""
    import data.build
    from rlpipe.model.cli import main as init_model

    defaults = dict(eval_per_cell=1, pretrain_problems=200, pretrain_facts=40, pretrain_chat=40)
    small = dataclasses.replace(data.build.SIZES["tiny"], **{**defaults, **sizes})
    name = f"test-{data_dir.parent.name}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(data.build.SIZES, name, small)
        assert data.build.main(["--out", str(data_dir), "--seed", "0", "--size", name]) == 0
    assert init_model(["--preset", "tiny", "--tokenizer", str(data_dir / "tokenizer"), "--out", str(model_dir),
                       "--seed", "0"]) == 0
