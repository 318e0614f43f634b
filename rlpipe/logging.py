"""Run logging: metrics.jsonl in the stage folder, Weights & Biases offline, progress bars.

- `MetricsLogger`: one JSON object per logged step appended to `<out_dir>/metrics.jsonl` (flushed
  every line, so a killed run keeps what it logged). On resume the lines past the resumed step are
  dropped first, so the file always reads as one run.
- wandb only when `report_to: wandb`; `mode="offline"` by default with its files under the stage
  folder (`WANDB_DIR`), so nothing needs a network or an account. `wandb sync` uploads later.
- `progress(...)`: the tqdm bar (with ETA) every long loop uses; silent on ranks other than 0.
- `read_metrics(path)`: the logged rows back, for plots and tests.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from tqdm.auto import tqdm

METRICS_FILE = "metrics.jsonl"


def _plain(value: Any) -> Any:
    """JSON-safe scalars: tensors and numpy numbers become floats, NaN/inf become null."""
    if hasattr(value, "item") and getattr(value, "numel", lambda: 1)() == 1:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class MetricsLogger:
    """Append-only metrics for one stage; a no-op on ranks other than 0 (`enabled=False`)."""

    def __init__(self, out_dir: str | os.PathLike, *, report_to: str = "none", wandb_project: str = "rlpipe",
                 wandb_mode: str = "offline", run_name: str | None = None, config: Mapping | None = None,
                 resume_step: int = 0, enabled: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / METRICS_FILE
        self.enabled = enabled
        self._wandb_run = None
        if not enabled:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._truncate_after(resume_step)
        self._file = self.path.open("a", encoding="utf-8")
        if report_to == "wandb" and wandb_mode != "disabled":
            self._wandb_run = self._start_wandb(wandb_project, wandb_mode, run_name, config)

    @classmethod
    def from_config(cls, out_dir, logging_cfg, *, run_name: str, config: Mapping | None = None,
                    resume_step: int = 0, enabled: bool = True) -> "MetricsLogger":
        return cls(out_dir, report_to=logging_cfg.report_to, wandb_project=logging_cfg.wandb_project,
                   wandb_mode=logging_cfg.wandb_mode, run_name=run_name, config=config,
                   resume_step=resume_step, enabled=enabled)

    def _truncate_after(self, step: int) -> None:
        # A resumed run repeats the steps after its checkpoint; keep one line per step.
        if not self.path.exists():
            return
        kept = [row for row in read_metrics(self.path) if row.get("step", 0) <= step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in kept))
        tmp.replace(self.path)

    def _start_wandb(self, project: str, mode: str, run_name: str | None, config: Mapping | None):
        wandb_dir = self.out_dir / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("WANDB_SILENT", "true")
        os.environ["WANDB_DIR"] = str(wandb_dir)
        os.environ["WANDB_MODE"] = mode
        import wandb

        return wandb.init(project=project, name=run_name, dir=str(wandb_dir), mode=mode,
                          config=dict(config or {}), reinit="finish_previous")

    def log(self, metrics: Mapping[str, Any], step: int) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), **{k: _plain(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._wandb_run is not None:
            self._wandb_run.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=step)

    def close(self) -> None:
        if not self.enabled:
            return
        self._file.close()
        if self._wandb_run is not None:
            self._wandb_run.finish()
            self._wandb_run = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Rows of a metrics.jsonl; a torn last line (a run killed mid-write) is ignored."""
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", initial: int = 0,
             unit: str = "it", disable: bool = False) -> tqdm:
    """A tqdm bar with rate and ETA; pass disable=not is_main_process on ranks other than 0."""
    return tqdm(iterable, total=total, desc=desc, initial=initial, unit=unit, disable=disable,
                dynamic_ncols=True, smoothing=0.1)
