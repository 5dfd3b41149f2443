"""Datasets, episodes and samplers."""

from metakit.data.dataset import ClassDataset, SplitDataset
from metakit.data.episode import Episode
from metakit.data.preprocess import Preprocess
from metakit.data.sampler import TaskSampler
from metakit.data.source import EpisodeSampler, TaskSource
from metakit.registry import Registry

DATASETS: Registry[TaskSource] = Registry("dataset")


@DATASETS.register("omniglot")
def _omniglot(**kwargs):  # type: ignore[no-untyped-def]
    from metakit.data.omniglot import omniglot

    return omniglot(**kwargs)


@DATASETS.register("mnist")
def _mnist(image_size: int = 28, download: bool = True):  # type: ignore[no-untyped-def]
    from metakit.data.mnist import idx_dataset

    return idx_dataset("mnist", image_size, download)


@DATASETS.register("fashion-mnist")
def _fashion_mnist(image_size: int = 28, download: bool = True):  # type: ignore[no-untyped-def]
    from metakit.data.mnist import idx_dataset

    return idx_dataset("fashion-mnist", image_size, download)


@DATASETS.register("folder")
def _folder(  # type: ignore[no-untyped-def]
    root: str,
    image_size: int = 28,
    channels: int = 1,
    invert: bool = False,
    fractions: tuple[float, float, float] = (0.6, 0.2, 0.2),
    seed: int = 0,
):
    from metakit.data.folder import folder

    return folder(root, image_size, channels, invert, fractions, seed)


@DATASETS.register("clinc150")
def _clinc150(  # type: ignore[no-untyped-def]
    seed: int = 0,
    sizes: tuple[int, int, int] = (80, 20, 50),
    download: bool = True,
    support: str = "examples",
    layer: int | None = None,
):
    from metakit.text.datasets import clinc150_embeddings

    return clinc150_embeddings(seed, sizes, download, support, layer)


@DATASETS.register("fewrel")
def _fewrel(  # type: ignore[no-untyped-def]
    domain: str = "wiki",
    pool: str = "entity",
    download: bool = True,
    layer: int | None = None,
    val_relations: int = 8,
    seed: int = 0,
):
    from metakit.text.datasets import fewrel_embeddings

    return fewrel_embeddings(domain, pool, download, layer, val_relations, seed)  # type: ignore[arg-type]


@DATASETS.register("sinusoid")
def _sinusoid():  # type: ignore[no-untyped-def]
    from metakit.data.sinusoid import sinusoid

    return sinusoid()


__all__ = [
    "DATASETS",
    "ClassDataset",
    "Episode",
    "EpisodeSampler",
    "Preprocess",
    "SplitDataset",
    "TaskSampler",
    "TaskSource",
]
