"""Sinusoid regression tasks (Finn et al. 2017): y = A sin(x - φ), A ~ U[0.1, 5], φ ~ U[0, π].

Inputs x ~ U[-5, 5]. Each task has K support points and `queries` query points. Like
`TaskSampler`, task `i` depends only on `(split, seed, i)`, so training resumes exactly and the
test tasks are the same everywhere. `SinusoidTasks` is the registered dataset `sinusoid`: its
splits are independent task streams (the distribution is continuous, so they never overlap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from metakit.data.episode import Episode
from metakit.data.sampler import stream_seed
from metakit.errors import ConfigError, DataError

AMPLITUDE = (0.1, 5.0)
PHASE = (0.0, math.pi)
X_RANGE = (-5.0, 5.0)


@dataclass(frozen=True)
class SinusoidTask:
    amplitude: float
    phase: float

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.amplitude * torch.sin(x - self.phase)  # float32 math, as the sampler's


class SinusoidSampler:
    """Episodes of one sinusoid each: `support_x/query_x` are `[K, 1]`, targets `[K, 1]`."""

    ways = 1

    def __init__(self, shots: int, queries: int, seed: int = 0, stream: str = "") -> None:
        if shots < 1 or queries < 1:
            raise DataError(
                f"sinusoid tasks need shots >= 1 and queries >= 1, got {shots}, {queries}"
            )
        self.shots, self.queries, self.seed, self.stream = shots, queries, seed, stream

    def task(self, index: int) -> tuple[SinusoidTask, np.random.Generator]:
        """Task `index` and the random stream its points are drawn from."""
        rng = np.random.default_rng(stream_seed(self.seed, index, self.stream))
        u = rng.random(2)
        amplitude = AMPLITUDE[0] + (AMPLITUDE[1] - AMPLITUDE[0]) * float(u[0])
        phase = PHASE[0] + (PHASE[1] - PHASE[0]) * float(u[1])
        return SinusoidTask(amplitude, phase), rng

    def _points(self, index: int) -> np.ndarray:
        task, rng = self.task(index)
        lo, hi = X_RANGE
        x = lo + (hi - lo) * rng.random(self.shots + self.queries, dtype=np.float32)
        y = task.amplitude * np.sin(x - np.float32(task.phase))
        return np.stack([x, y])  # [2, K + Q]; plain numpy: tasks are tiny, torch ops cost more

    def sample(self, index: int) -> Episode:
        return self._split(torch.from_numpy(self._points(index)).unsqueeze(-1))

    def batch(self, start: int, size: int) -> Episode:
        points = np.stack([self._points(start + i) for i in range(size)], axis=1)
        return self._split(torch.from_numpy(points).unsqueeze(-1))

    def _split(self, points: torch.Tensor) -> Episode:
        x, y = points[0], points[1]
        k = self.shots
        return Episode(x[..., :k, :], y[..., :k, :], x[..., k:, :], y[..., k:, :])


class SinusoidTasks:
    """The task distribution as a dataset: `sampler(split, ...)` gives that split's tasks."""

    name = "sinusoid"
    task: ClassVar[str] = "regression"
    splits: ClassVar[list[str]] = ["train", "val", "test"]
    preprocess = None
    inputs: ClassVar[dict[str, Any]] = {"in_features": 1}

    def sampler(
        self, split: str, ways: int, shots: int, queries: int, seed: int = 0
    ) -> SinusoidSampler:
        """`ways` is ignored (one function per task); `shots` points adapt, `queries` score."""
        if split not in self.splits:
            raise ConfigError(
                f"dataset 'sinusoid' has no split {split!r}; available: {', '.join(self.splits)}"
            )
        return SinusoidSampler(shots, queries, seed=seed, stream=split)


def sinusoid() -> SinusoidTasks:
    return SinusoidTasks()


def info(download: bool = False) -> dict[str, Any]:
    return {
        "name": "sinusoid",
        "task": "regression",
        "amplitude": list(AMPLITUDE),
        "phase": list(PHASE),
        "x_range": list(X_RANGE),
        "splits": SinusoidTasks.splits,
    }


def fetch() -> None:
    """Nothing to download: tasks are generated."""
