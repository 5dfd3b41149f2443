"""`RunLogger`: one call writes a metrics row to `metrics.jsonl` and to TensorBoard."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class RunLogger:
    """Appends `{"step": s, "split": ..., **metrics}` rows; on resume drops rows past `start`."""

    def __init__(
        self,
        run_dir: Path,
        start_step: int = 0,
        tensorboard: bool = True,
        filename: str = "metrics.jsonl",
    ) -> None:
        self.path = run_dir / filename
        if start_step and self.path.exists():
            kept = [
                line
                for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= start_step
            ]
            self.path.write_text("".join(f"{line}\n" for line in kept))
        elif not start_step:
            self.path.write_text("")
        self._file = open(self.path, "a")  # noqa: SIM115 - kept open for the run
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(log_dir=str(run_dir / "tb"), purge_step=start_step or None)

    def log(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        row = {"step": step, "split": split, **metrics}
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in metrics.items():
                if isinstance(value, int | float) and math.isfinite(value):
                    self._tb.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
