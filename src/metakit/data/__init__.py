"""Datasets, episodes and samplers."""

from metakit.data.dataset import ClassDataset, SplitDataset
from metakit.data.episode import Episode
from metakit.data.preprocess import Preprocess
from metakit.data.sampler import TaskSampler
from metakit.registry import Registry

DATASETS: Registry[SplitDataset] = Registry("dataset")


@DATASETS.register("omniglot")
def _omniglot(**kwargs):  # type: ignore[no-untyped-def]
    from metakit.data.omniglot import omniglot

    return omniglot(**kwargs)


__all__ = ["DATASETS", "ClassDataset", "Episode", "Preprocess", "SplitDataset", "TaskSampler"]
