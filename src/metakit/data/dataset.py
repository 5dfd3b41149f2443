"""`ClassDataset`: one split's images as a preloaded uint8 tensor, grouped by class."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from metakit.data.preprocess import Preprocess
from metakit.errors import ConfigError

if TYPE_CHECKING:
    from metakit.data.metadata import MetadataSampler
    from metakit.data.sampler import TaskSampler, Transform


@dataclass
class ClassDataset:
    """Images `[N, C, H, W]` (uint8), or precomputed features `[N, D]` (float, e.g. cached text
    embeddings), with labels `0..num_classes-1` and class names.

    Episodes index into `images`; nothing is decoded or read from disk per episode.
    """

    images: torch.Tensor
    labels: torch.Tensor
    class_names: list[str]
    name: str = ""
    class_index: list[torch.Tensor] = field(init=False, repr=False)
    dense_index: torch.Tensor | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.images.dim() < 2 or self.images.shape[0] != self.labels.shape[0]:
            raise ValueError("examples must be [N, ...] (images [N, C, H, W] or features [N, D])")
        order = torch.argsort(self.labels, stable=True)
        counts = torch.bincount(self.labels, minlength=len(self.class_names))
        self.class_index = list(torch.split(order, counts.tolist()))
        same = bool((counts == counts[0]).all()) if len(counts) else False
        self.dense_index = order.view(len(counts), -1) if same and counts[0] > 0 else None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def counts(self) -> torch.Tensor:
        return torch.tensor([len(ix) for ix in self.class_index])

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:
        return (
            f"ClassDataset({self.name!r}, classes={self.num_classes}, images={len(self)}, "
            f"shape={list(self.images.shape[1:])})"
        )


@dataclass
class SplitDataset:
    """A dataset with named class splits, each built lazily on first use and then kept."""

    name: str
    preprocess: Preprocess | None  # None: examples are feature vectors, not images
    builders: dict[str, Callable[[], ClassDataset]]
    _built: dict[str, ClassDataset] = field(default_factory=dict, repr=False)
    features: int = 0  # feature width when `preprocess` is None
    #: further backbone options implied by the data (e.g. which encoder layer cached states
    #: come from), filled in like `in_features` when the backbone accepts them
    input_options: dict[str, Any] = field(default_factory=dict)
    #: class metadata `[classes, D]` of a split (e.g. embedded class names): when set, episodes
    #: are zero-shot, with one metadata vector per class in place of support examples
    metadata: Callable[[str], torch.Tensor] | None = None

    @property
    def task(self) -> str:
        return "classification" if self.metadata is None else "zero-shot"

    @property
    def splits(self) -> list[str]:
        return list(self.builders)

    @property
    def inputs(self) -> dict[str, Any]:
        """Backbone options implied by the data (filled in when a backbone accepts them)."""
        if self.preprocess is None:
            return {"in_features": self.features, **self.input_options}
        return {"in_channels": self.preprocess.channels, "image_size": self.preprocess.image_size}

    def sampler(
        self,
        split: str,
        ways: int,
        shots: int,
        queries: int,
        seed: int = 0,
        transform: Transform | None = None,
    ) -> TaskSampler | MetadataSampler:
        """Reproducible N-way K-shot episodes of one split (zero-shot ones with `metadata`)."""
        from metakit.data.metadata import MetadataSampler
        from metakit.data.sampler import TaskSampler  # the sampler module imports this one

        if self.metadata is not None:
            return MetadataSampler(
                self.split(split), self.metadata(split), ways, queries, seed=seed, shots=shots
            )
        return TaskSampler(self.split(split), ways, shots, queries, seed=seed, transform=transform)

    def split(self, name: str) -> ClassDataset:
        if name not in self.builders:
            raise ConfigError(
                f"dataset {self.name!r} has no split {name!r}; "
                f"available: {', '.join(self.builders)}"
            )
        if name not in self._built:
            self._built[name] = self.builders[name]()
        return self._built[name]
