"""Shared fixtures. Tests read real data from $METAKIT_DATA (CI points it at ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from metakit.config import Config
from metakit.data.dataset import ClassDataset

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if "METAKIT_DATA" not in os.environ and SHARED.exists():
    os.environ["METAKIT_DATA"] = str(SHARED)


def has_omniglot() -> bool:
    root = Path(os.environ.get("METAKIT_DATA", ""))
    return (root / "omniglot" / "images_background.zip").exists()


needs_omniglot = pytest.mark.skipif(
    not has_omniglot(), reason="Omniglot archives not found under $METAKIT_DATA"
)


@pytest.fixture(scope="session")
def omniglot():
    if not has_omniglot():
        pytest.skip("Omniglot archives not found under $METAKIT_DATA")
    from metakit.data.omniglot import omniglot as build

    return build(split="vinyals", image_size=28, download=False)


def synthetic_dataset(classes: int = 10, per_class: int = 8, size: int = 8, uneven: bool = False):
    """A tiny ClassDataset whose pixels encode (class, example) so tests can trace indices."""
    counts = [per_class + (c % 3 if uneven else 0) for c in range(classes)]
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    images = torch.arange(len(labels), dtype=torch.int64).remainder(256).to(torch.uint8)
    images = images.view(-1, 1, 1, 1).expand(-1, 1, size, size).contiguous()
    return ClassDataset(images, labels, [f"class{c}" for c in range(classes)], name="synthetic")


def tiny_config(**train: object) -> Config:
    """A real Omniglot run small enough for unit tests (seconds)."""
    cfg = Config.from_dict(
        {
            "name": "tiny",
            "seed": 3,
            "device": "cpu",
            "data": {"name": "omniglot", "split": "vinyals", "image_size": 28, "download": False},
            "backbone": {"name": "conv4", "hidden": 16},
            "algorithm": {"name": "protonet"},
            "train": {
                "ways": 5,
                "shots": 1,
                "queries": 2,
                "episodes": 4,
                "val_every": 2,
                "val_episodes": 3,
                "log_every": 1,
                "lr_step": 3,
            },
            "eval": {"ways": 5, "shots": 1, "queries": 3, "episodes": 5},
        }
    )
    for key, value in train.items():
        setattr(cfg.train, key, value)
    return cfg.validate()
