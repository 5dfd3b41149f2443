"""`BatchSampler`: labelled minibatches over all classes of a split, for supervised pretraining.

A minibatch is an `Episode` whose support set holds the examples with their *global* class
labels and whose query set is empty, so the one training loop serves episodic and supervised
algorithms alike. Batch `i` depends only on `(seed, i)`: resumed runs see the same batches.
"""

from __future__ import annotations

import torch

from metakit.data.dataset import ClassDataset
from metakit.data.episode import Episode
from metakit.data.preprocess import to_float
from metakit.data.sampler import Transform, episode_generator
from metakit.errors import DataError


class BatchSampler:
    """Uniform minibatches without replacement within a batch; epochs are not tracked, which
    keeps `sample(i)` random-access and the stream reproducible."""

    shots = 0
    queries = 0

    def __init__(
        self,
        dataset: ClassDataset,
        batch_size: int,
        seed: int = 0,
        transform: Transform | None = None,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size > len(dataset):
            raise DataError(
                f"batch_size {batch_size} exceeds the {len(dataset)} examples of "
                f"{dataset.name or 'this split'}; lower train.batch_size"
            )
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.ways = dataset.num_classes
        self.transform = transform

    def sample(self, index: int) -> Episode:
        g = episode_generator(self.seed, index, stream="batch")
        idx = torch.randperm(len(self.dataset), generator=g)[: self.batch_size]
        x = self.dataset.images[idx]
        if self.transform is not None:
            x = self.transform(x, episode_generator(self.seed + 1, index, stream="batch"))
        x = to_float(x)
        y = self.dataset.labels[idx]
        return Episode(x, y, x[:0], y[:0])

    def batch(self, start: int, size: int) -> Episode:
        """`size` minibatches from `start`, concatenated into one larger minibatch."""
        parts = [self.sample(start + i) for i in range(size)]
        if size == 1:
            return parts[0]
        x = torch.cat([p.support_x for p in parts])
        y = torch.cat([p.support_y for p in parts])
        return Episode(x, y, x[:0], y[:0])
