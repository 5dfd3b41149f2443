"""MNIST and Fashion-MNIST from the official IDX `.gz` files, as few-shot target datasets.

Splits: `train` and `test` as published, where present. MNIST may be present as its test split
only (as in `../shared/data`); then every class is a "test" class, which is how a few-shot
target set is used anyway. Images are decoded once into the uint8 cache at the requested size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from metakit.data.dataset import ClassDataset, SplitDataset
from metakit.data.idx import read_idx_gz
from metakit.data.preprocess import Preprocess
from metakit.data.store import Resource, cached_tensors, data_root, fingerprint, locate
from metakit.errors import ArchiveStructureError, DataError

_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist"  # mirror of yann.lecun.com/exdb/mnist
_FASHION = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com"
FILES: dict[str, dict[str, dict[str, Resource]]] = {
    "mnist": {
        "train": {
            "images": Resource(
                "mnist/train-images-idx3-ubyte.gz",
                f"{_MNIST}/train-images-idx3-ubyte.gz",
                md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
            ),
            "labels": Resource(
                "mnist/train-labels-idx1-ubyte.gz",
                f"{_MNIST}/train-labels-idx1-ubyte.gz",
                md5="d53e105ee54ea40749a09fcbcd1e9432",
            ),
        },
        "test": {
            "images": Resource(
                "mnist/t10k-images-idx3-ubyte.gz",
                f"{_MNIST}/t10k-images-idx3-ubyte.gz",
                md5="9fb629c4189551a2d022fa330f9573f3",
            ),
            "labels": Resource(
                "mnist/t10k-labels-idx1-ubyte.gz",
                f"{_MNIST}/t10k-labels-idx1-ubyte.gz",
                md5="ec29112dd5afa0611ce80d1b7f02629c",
            ),
        },
    },
    "fashion-mnist": {
        split: {
            kind: Resource(
                f"fashion-mnist/{prefix}-{kind}-idx{1 if kind == 'labels' else 3}-ubyte.gz",
                f"{_FASHION}/{prefix}-{kind}-idx{1 if kind == 'labels' else 3}-ubyte.gz",
                md5=md5,
            )
            for kind, md5 in digests.items()
        }
        for split, prefix, digests in (
            (
                "train",
                "train",
                {
                    "images": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                    "labels": "25c81989df183df01b3e8a0aad5dffbe",
                },
            ),
            (
                "test",
                "t10k",
                {
                    "images": "bef4ecab320f06d8554ea6380940ec79",
                    "labels": "bb300cfdad3c16e7a12a480ee83cd310",
                },
            ),
        )
    },
}
SIZES = {"train": 60000, "test": 10000}
CLASS_NAMES = {
    "mnist": [str(d) for d in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
}


def available_splits(name: str) -> list[str]:
    """Splits whose files are both present under the data root."""
    root = data_root()
    return [
        s
        for s, files in FILES[name].items()
        if all((root / r.path).exists() for r in files.values())
    ]


def load_split(name: str, split: str, image_size: int = 28, download: bool = True) -> ClassDataset:
    """One split as a ClassDataset (decoded once; local copies are checked for structure)."""
    if split not in FILES[name]:
        raise DataError(f"{name} has no split {split!r}; use one of {', '.join(FILES[name])}")
    paths = {kind: locate(r, download) for kind, r in FILES[name][split].items()}

    def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        images, labels = read_idx_gz(paths["images"]), read_idx_gz(paths["labels"])
        n = SIZES[split]
        if images.shape != (n, 28, 28) or images.dtype != torch.uint8 or labels.shape != (n,):
            raise ArchiveStructureError(
                f"{name} {split}: expected {n} 28x28 uint8 images and {n} labels, got images "
                f"{list(images.shape)} and labels {list(labels.shape)}; delete and fetch again"
            )
        if int(labels.min()) < 0 or int(labels.max()) > 9:
            raise ArchiveStructureError(f"{name} {split}: labels outside 0..9")
        images = images.unsqueeze(1)
        if image_size != 28:
            resized = F.interpolate(
                images.float(), size=(image_size, image_size), mode="bilinear", antialias=True
            )
            images = resized.round().clamp(0, 255).to(torch.uint8)
        return {"images": images, "labels": labels.long()}, {"counts": labels.bincount().tolist()}

    key = f"{name}-{split}-{image_size}"
    tensors, _ = cached_tensors(key, fingerprint(*paths.values()), build)
    return ClassDataset(tensors["images"], tensors["labels"], CLASS_NAMES[name], name=key)


def idx_dataset(name: str, image_size: int = 28, download: bool = True) -> SplitDataset:
    """MNIST or Fashion-MNIST with the splits that are present (all of them when `download`)."""
    if name not in FILES:
        raise DataError(f"unknown IDX dataset {name!r}; use one of {', '.join(FILES)}")
    if image_size < 8:
        raise DataError(f"image_size must be at least 8, got {image_size}")
    # what is present locally; when nothing is, everything (downloaded on first use)
    splits = available_splits(name) or (list(FILES[name]) if download else [])
    if not splits:
        raise DataError(
            f"no {name} files under {data_root() / name}; fetch them with `metakit data fetch "
            f"{name}`, or point METAKIT_DATA at a folder that has them"
        )
    return SplitDataset(
        name=name,
        preprocess=Preprocess(image_size=image_size, channels=1, invert=False),
        builders={s: (lambda s=s: load_split(name, s, image_size, download)) for s in splits},
    )


DATASET_NAMES = tuple(FILES)  # this module serves several registered datasets (`name=`)


def fetch(name: str = "mnist") -> None:
    """Download (and verify) the missing files of `name`."""
    for files in FILES[name].values():
        for resource in files.values():
            locate(resource, download=True)


def info(name: str = "mnist", image_size: int = 28, download: bool = False) -> dict[str, Any]:
    """Facts for `metakit data info mnist|fashion-mnist`: splits present and class counts."""
    data = idx_dataset(name, image_size, download)
    out: dict[str, Any] = {"splits": {}}
    for split in data.splits:
        ds = data.split(split)
        out["splits"][split] = {"images": len(ds), "per_class": ds.counts.tolist()}
    return out
