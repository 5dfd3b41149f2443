"""Few-shot evaluation of a pretrained run on another dataset (`metakit transfer`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metakit.data import DATASETS, SplitDataset
from metakit.engine.build import load_run, resolve_device
from metakit.engine.evaluate import EvalResult, evaluate
from metakit.errors import ConfigError, DataError
from metakit.models.backbone import Backbone
from metakit.registry import signature_of
from metakit.transfer.learner import Transfer


def target_dataset(name: str, source_inputs: dict[str, Any], download: bool = True) -> SplitDataset:
    """`name` built at the source run's image size; channel counts must agree."""
    factory = DATASETS.get(name)
    accepted, _, _ = signature_of(factory)
    options: dict[str, Any] = {}
    if "image_size" in accepted and "image_size" in source_inputs:
        options["image_size"] = source_inputs["image_size"]
    if "download" in accepted:
        options["download"] = download
    data = factory(**options)
    if not isinstance(data, SplitDataset):
        raise ConfigError(f"{name!r} is not an image classification dataset")
    want, have = source_inputs.get("in_channels"), data.preprocess.channels
    if want is not None and want != have:
        raise DataError(
            f"the source model takes {want}-channel images but {name!r} has {have}; "
            "pick a source run trained on images with the same number of channels"
        )
    return data


def load_backbone(run_dir: Path, checkpoint: str = "best") -> tuple[Backbone, dict[str, Any]]:
    """The trained backbone of any run (its head, if any, is unused) and the run's metadata."""
    _, algorithm, _, meta = load_run(run_dir, checkpoint, "cpu")
    if meta.get("task", "classification") != "classification":
        raise ConfigError(f"{run_dir} is a regression run; transfer needs an image classifier")
    return algorithm.backbone, meta


def evaluate_transfer(
    run_dir: Path,
    target: str,
    mode: str = "extract",
    split: str | None = None,
    ways: int = 10,
    shots: int = 5,
    queries: int = 15,
    episodes: int = 600,
    seed: int = 0,
    checkpoint: str = "best",
    device: str = "cpu",
    progress: bool = False,
    **options: Any,
) -> EvalResult:
    """Accuracy (95% CI) of `mode` transfer from `run_dir` to `ways`-way `shots`-shot tasks of
    `target`'s `split` (default: `test`, else its only split). `options` go to `Transfer`."""
    backbone, meta = load_backbone(Path(run_dir), checkpoint)
    data = target_dataset(target, meta.get("inputs") or {})
    split = split or ("test" if "test" in data.splits else data.splits[0])
    sampler = data.sampler(split, ways, shots, queries, seed=seed)
    dev = resolve_device(device)
    learner = Transfer(backbone, mode=mode, seed=seed, **options).to(dev)  # type: ignore[arg-type]
    return evaluate(learner, sampler, episodes, split=split, device=dev, progress=progress)
