"""`TaskSampler`: reproducible N-way K-shot episodes drawn from a preloaded `ClassDataset`.

Episode `i` depends only on `(seed, i)`, so a run can resume at any episode and evaluation
episodes are the same on every machine, whatever was sampled before.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import torch

from metakit.data.dataset import ClassDataset
from metakit.data.episode import Episode
from metakit.data.preprocess import to_float
from metakit.errors import DataError

Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def stream_seed(seed: int, index: int, stream: str = "") -> int:
    """A 63-bit seed that depends only on `(seed, index)` (no collisions between seeds); a
    non-empty `stream` name gives an independent family (e.g. one per task split)."""
    key = f"{stream}:{seed}:{index}" if stream else f"{seed}:{index}"
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def episode_generator(seed: int, index: int, stream: str = "") -> torch.Generator:
    """A torch generator seeded by `stream_seed(seed, index, stream)`."""
    return torch.Generator().manual_seed(stream_seed(seed, index, stream))


class TaskSampler:
    """Draws episodes: `ways` classes, `shots` support and `queries` query examples per class.

    Labels are `0..ways-1` in class-major order. An optional `transform(x_uint8, generator)` runs
    on the gathered uint8 images (augmentation), before conversion to float.
    """

    def __init__(
        self,
        dataset: ClassDataset,
        ways: int,
        shots: int,
        queries: int,
        seed: int = 0,
        transform: Transform | None = None,
    ) -> None:
        for name, value, low in (("ways", ways, 1), ("shots", shots, 1), ("queries", queries, 0)):
            if not isinstance(value, int) or value < low:
                raise DataError(f"{name} must be an integer >= {low}, got {value!r}")
        if ways > dataset.num_classes:
            raise DataError(
                f"cannot draw {ways}-way episodes from {dataset.name or 'this split'}: it has only "
                f"{dataset.num_classes} classes; lower the number of ways"
            )
        need = shots + queries
        counts = dataset.counts
        too_small = torch.nonzero(counts < need).flatten().tolist()
        if too_small:
            first = too_small[0]
            raise DataError(
                f"{shots}-shot {queries}-query episodes need {need} examples per class, but "
                f"{len(too_small)} classes of {dataset.name or 'this split'} have fewer (e.g. "
                f"{dataset.class_names[first]!r} has {int(counts[first])}); lower shots or queries"
            )
        self.dataset, self.ways, self.shots, self.queries = dataset, ways, shots, queries
        self.seed = seed
        self.transform = transform

    def indices(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Image indices `[ways, shots]` and `[ways, queries]` of episode `index`."""
        g = episode_generator(self.seed, index)
        ds, need = self.dataset, self.shots + self.queries
        classes = torch.randperm(ds.num_classes, generator=g)[: self.ways]
        if ds.dense_index is not None:
            pool = ds.dense_index[classes]
            pick = torch.rand(pool.shape, generator=g).argsort(dim=1)[:, :need]
            chosen = torch.gather(pool, 1, pick)
        else:
            chosen = torch.stack(
                [
                    ds.class_index[c][torch.randperm(len(ds.class_index[c]), generator=g)[:need]]
                    for c in classes.tolist()
                ]
            )
        return chosen[:, : self.shots], chosen[:, self.shots :]

    def sample(self, index: int) -> Episode:
        """Episode number `index` of this sampler's reproducible stream."""
        support, query = self.indices(index)
        labels = torch.arange(self.ways)
        return Episode(
            support_x=self._images(support.reshape(-1), index),
            support_y=labels.repeat_interleave(self.shots),
            query_x=self._images(query.reshape(-1), index),
            query_y=labels.repeat_interleave(self.queries),
        )

    def batch(self, start: int, size: int) -> Episode:
        """`size` consecutive episodes from `start`, stacked with a leading task dimension."""
        return Episode.stack([self.sample(start + i) for i in range(size)])

    def __iter__(self) -> Iterator[Episode]:
        index = 0
        while True:
            yield self.sample(index)
            index += 1

    def _images(self, idx: torch.Tensor, index: int) -> torch.Tensor:
        x = self.dataset.images[idx]
        if self.transform is not None:
            x = self.transform(x, episode_generator(self.seed + 1, index))
        return to_float(x)
