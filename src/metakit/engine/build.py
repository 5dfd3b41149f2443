"""Turn a `Config` into live objects, and a run directory back into a trained algorithm."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from metakit.algorithms import ALGORITHMS, Algorithm
from metakit.config import Config
from metakit.data import DATASETS, Preprocess, TaskSource
from metakit.engine.checkpoint import load_checkpoint, read_meta
from metakit.errors import CheckpointError, ConfigError
from metakit.models import BACKBONES
from metakit.registry import signature_of


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_dataset(config: Config) -> TaskSource:
    """The configured dataset. Options the dataset does not take are dropped with a warning,
    so a recipe can be pointed at another dataset (`--set data.name=folder`) without editing
    away its own data options (e.g. Omniglot's `split`)."""
    options = dict(config.data)
    name = options.pop("name")
    accepted, _, var_kw = signature_of(DATASETS.get(name))
    if not var_kw:
        for key in [k for k in options if k not in accepted]:
            warnings.warn(f"data.{key} does not apply to dataset {name!r}; ignored", stacklevel=2)
            options.pop(key)
    return DATASETS.build(name, **options)


def build_algorithm(
    config: Config, inputs: dict[str, Any], task: str = "classification"
) -> Algorithm:
    """Backbone (input shape filled in from the data, e.g. `in_channels`, `image_size`) wrapped
    by the algorithm; `task` (classification or regression) is passed to algorithms that take it.
    """
    options: dict[str, Any] = dict(config.backbone)
    name = options.pop("name")
    accepted, _, _ = signature_of(BACKBONES.get(name))
    for key, value in inputs.items():
        if key in accepted:
            options.setdefault(key, value)
    backbone = BACKBONES.build(name, **options)
    algo_options = dict(config.algorithm)
    algo_name = algo_options.pop("name")
    kinds = ALGORITHMS.get(algo_name).tasks  # type: ignore[attr-defined]
    if task not in kinds:
        able = [n for n in ALGORITHMS.names() if task in ALGORITHMS.get(n).tasks]  # type: ignore[attr-defined]
        raise ConfigError(
            f"algorithm {algo_name!r} learns {' and '.join(kinds)} tasks, but dataset "
            f"{config.data.get('name')!r} poses {task} tasks; use one of: {', '.join(able)}"
        )
    if "task" in signature_of(ALGORITHMS.get(algo_name))[0]:
        algo_options.setdefault("task", task)
    return ALGORITHMS.build(algo_name, backbone=backbone, **algo_options)


def run_inputs(meta: dict[str, Any]) -> tuple[Preprocess | None, dict[str, Any], str]:
    """Preprocessing, backbone input options and task of a checkpoint's metadata."""
    preprocess = Preprocess.from_dict(meta["preprocess"]) if meta.get("preprocess") else None
    inputs = meta.get("inputs")
    if inputs is None and preprocess is not None:  # checkpoints from metakit 0.1.0
        inputs = {"in_channels": preprocess.channels, "image_size": preprocess.image_size}
    return preprocess, inputs or {}, meta.get("task", "classification")


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


def test_time_overrides(config: Config, overrides: list[str]) -> Config:
    """Apply `algorithm.test_*` overrides (test-time settings such as `test_inner_lr`); anything
    else would describe a different model than the one trained, so it is refused."""
    from metakit.config import apply_overrides

    for item in overrides:
        key = item.split("=", 1)[0].strip()
        if not key.startswith("algorithm.test_"):
            raise ConfigError(
                f"cannot override {key} at evaluation: only test-time settings "
                "(algorithm.test_*, e.g. algorithm.test_inner_lr) may change after training"
            )
    return Config.from_dict(apply_overrides(config.to_dict(), overrides))


def load_run(
    run_dir: Path, which: str = "best", device: str = "cpu", overrides: list[str] | None = None
) -> tuple[Config, Algorithm, Preprocess | None, dict[str, Any]]:
    """Rebuild a trained algorithm from its self-describing checkpoint (no dataset needed);
    `overrides` may change its test-time settings (see `test_time_overrides`)."""
    path = checkpoint_path(run_dir, which)
    meta = read_meta(path)
    config = test_time_overrides(Config.from_dict(meta["config"]), overrides or [])
    preprocess, inputs, task = run_inputs(meta)
    algorithm = build_algorithm(config, inputs, task)
    load_checkpoint(path, algorithm)
    algorithm.to(resolve_device(device)).eval()
    return config, algorithm, preprocess, meta
