"""What every search run does to its run directory: the metrics and history logs (truncated to
the checkpoint on resume), Ctrl-C handling, and JSON results written atomically."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metakit.engine.checkpoint import atomic_write
from metakit.engine.trainer import stop_on_interrupt
from metakit.tracking.logger import RunLogger


@contextlib.contextmanager
def search_logs(out: Path, step: int) -> Iterator[tuple[RunLogger, RunLogger, dict[str, bool]]]:
    """`metrics.jsonl` (+ TensorBoard), `history.jsonl` (every evaluated design) and the
    interrupt flag, from `step` on (rows after it, from an interrupted run, are dropped)."""
    with (
        RunLogger(out, start_step=step) as metrics,
        RunLogger(out, start_step=step, tensorboard=False, filename="history.jsonl") as history,
        stop_on_interrupt() as interrupt,
    ):
        yield metrics, history, interrupt


def write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
