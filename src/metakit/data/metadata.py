"""Zero-shot episodes: each class comes as a metadata vector instead of support examples."""

from __future__ import annotations

import torch

from metakit.data.dataset import ClassDataset
from metakit.data.episode import Episode
from metakit.data.preprocess import to_float
from metakit.data.sampler import TaskSampler
from metakit.errors import DataError


class MetadataSampler:
    """Episodes whose support set is one metadata vector per class (e.g. the embedded class
    name) and whose queries are examples: the zero-shot setting of Prototypical Networks
    (Snell et al. 2017, sec. 2.4). Results report `shots = 0`; a request for more than one shot
    is an error, since there are no support examples to draw."""

    def __init__(
        self,
        dataset: ClassDataset,
        metadata: torch.Tensor,
        ways: int,
        queries: int,
        seed: int = 0,
        shots: int = 0,
    ) -> None:
        if shots > 1:
            raise DataError(
                f"zero-shot episodes have no support examples (each class is given by its "
                f"metadata), so {shots} shots cannot be drawn; use shots 0 or 1"
            )
        if metadata.dim() != 2 or metadata.shape[0] != dataset.num_classes:
            raise DataError(
                f"class metadata must be [classes, D] = [{dataset.num_classes}, D], "
                f"got {list(metadata.shape)}"
            )
        if queries < 1:
            raise DataError(f"zero-shot episodes need queries >= 1, got {queries}")
        short = torch.nonzero(dataset.counts < queries).flatten().tolist()
        if short:
            raise DataError(
                f"{queries}-query episodes need {queries} examples per class, but {len(short)} "
                f"classes of {dataset.name or 'this split'} have fewer; lower queries"
            )
        # the queries are drawn as the "support" of a 0-query sampler: same class/example draws
        self._draws = TaskSampler(dataset, ways, queries, 0, seed=seed)
        self.dataset, self.metadata = dataset, metadata
        self.ways, self.shots, self.queries, self.seed = ways, 0, queries, seed

    def sample(self, index: int) -> Episode:
        chosen, _ = self._draws.indices(index)  # [ways, queries]
        classes = self.dataset.labels[chosen[:, 0]]
        labels = torch.arange(self.ways)
        return Episode(
            support_x=self.metadata[classes],
            support_y=labels,
            query_x=to_float(self.dataset.images[chosen.reshape(-1)]),
            query_y=labels.repeat_interleave(self.queries),
        )

    def batch(self, start: int, size: int) -> Episode:
        return Episode.stack([self.sample(start + i) for i in range(size)])
