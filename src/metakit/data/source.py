"""What the trainer and evaluator need from a dataset: named splits that yield episodes.

Class datasets (`SplitDataset`, drawing N-way K-shot episodes) and generated task families
(`SinusoidTasks`) both satisfy `TaskSource`, so one training loop serves both.
"""

from __future__ import annotations

from typing import Any, Protocol

from metakit.data.episode import Episode
from metakit.data.preprocess import Preprocess


class EpisodeSampler(Protocol):
    """Episode `i` of a reproducible stream; `batch` stacks consecutive ones."""

    ways: int
    shots: int
    queries: int
    seed: int

    def sample(self, index: int) -> Episode: ...

    def batch(self, start: int, size: int) -> Episode: ...


class TaskSource(Protocol):
    name: str
    task: str  # "classification" or "regression"
    preprocess: Preprocess | None  # image preprocessing, None for non-image data

    @property
    def splits(self) -> list[str]: ...

    @property
    def inputs(self) -> dict[str, Any]: ...  # backbone options implied by the data

    def sampler(
        self, split: str, ways: int, shots: int, queries: int, seed: int = 0
    ) -> EpisodeSampler: ...
