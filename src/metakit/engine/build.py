"""Turn a `Config` into live objects, and a run directory back into a trained algorithm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from metakit.algorithms import ALGORITHMS, Algorithm
from metakit.config import Config
from metakit.data import DATASETS, Preprocess, SplitDataset
from metakit.engine.checkpoint import load_checkpoint, read_meta
from metakit.errors import CheckpointError
from metakit.models import BACKBONES
from metakit.registry import signature_of


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_dataset(config: Config) -> SplitDataset:
    options = dict(config.data)
    return DATASETS.build(options.pop("name"), **options)


def build_algorithm(config: Config, preprocess: Preprocess) -> Algorithm:
    """Backbone (input shape filled in from the data's preprocessing) wrapped by the algorithm."""
    options: dict[str, Any] = dict(config.backbone)
    name = options.pop("name")
    accepted, _, _ = signature_of(BACKBONES.get(name))
    if "in_channels" in accepted:
        options.setdefault("in_channels", preprocess.channels)
    if "image_size" in accepted:
        options.setdefault("image_size", preprocess.image_size)
    backbone = BACKBONES.build(name, **options)
    algo_options = dict(config.algorithm)
    return ALGORITHMS.build(algo_options.pop("name"), backbone=backbone, **algo_options)


def checkpoint_path(run_dir: Path, which: str = "best") -> Path:
    path = Path(run_dir) / "checkpoints" / f"{which}.safetensors"
    if not path.exists():
        have = (
            sorted(p.stem for p in path.parent.glob("*.safetensors"))
            if path.parent.exists()
            else []
        )
        hint = f"it has: {', '.join(have)}" if have else "train one with `metakit train`"
        raise CheckpointError(f"no {which!r} checkpoint in {run_dir}; {hint}")
    return path


def read_run_config(run_dir: Path) -> Config:
    """The resolved config a run directory was trained with."""
    from metakit.config import read_yaml

    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise CheckpointError(f"{run_dir} is not a metakit run (no config.yaml); train one first")
    return Config.from_dict(read_yaml(path))


def load_run(
    run_dir: Path, which: str = "best", device: str = "cpu"
) -> tuple[Config, Algorithm, Preprocess, dict[str, Any]]:
    """Rebuild a trained algorithm from its self-describing checkpoint (no dataset needed)."""
    path = checkpoint_path(run_dir, which)
    meta = read_meta(path)
    config = Config.from_dict(meta["config"])
    preprocess = Preprocess.from_dict(meta["preprocess"])
    algorithm = build_algorithm(config, preprocess)
    load_checkpoint(path, algorithm)
    algorithm.to(resolve_device(device)).eval()
    return config, algorithm, preprocess, meta
