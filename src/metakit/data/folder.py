"""`folder`: your own images, one sub-folder per class (`root/<class>/<image>`).

Images are decoded once (grey or RGB, resized to a square) into the uint8 cache; later runs
load the cached tensor. Unreadable or corrupt files and empty classes are skipped with a
warning that names them, so one bad file never stops a run. Classes are split into `train`,
`val` and `test` by a seeded shuffle (`all` holds every class), since few-shot evaluation
needs classes never seen in training.
"""

from __future__ import annotations

import hashlib
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from metakit.data.dataset import ClassDataset, SplitDataset
from metakit.data.preprocess import Preprocess, open_image
from metakit.data.store import cached_tensors, fingerprint
from metakit.errors import DataError

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


class FolderWarning(UserWarning):
    """Something in a user's image folder was skipped or changed."""


@dataclass
class Decoded:
    images: torch.Tensor  # [N, C, S, S] uint8
    labels: torch.Tensor
    class_names: list[str]
    skipped: list[str]  # "path: reason"
    sizes: Counter[tuple[int, int]]


def list_classes(root: Path) -> dict[str, list[Path]]:
    """Class sub-folders of `root` and their image files (sorted, so the order is stable)."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root} is not a folder; give a folder with one sub-folder per class")
    classes = {
        d.name: sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in EXTENSIONS)
        for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }
    if not classes:
        raise DataError(
            f"{root} has no class sub-folders; arrange images as {root}/<class name>/<image>"
        )
    return classes


def decode_folder(root: Path, preprocess: Preprocess) -> Decoded:
    """Decode every readable image; collect what was skipped and the original sizes seen."""
    images, labels, names, skipped = [], [], [], []
    sizes: Counter[tuple[int, int]] = Counter()
    for name, files in list_classes(root).items():
        decoded = []
        for path in files:
            try:
                img = open_image(path)
            except DataError as e:
                skipped.append(f"{path}: {e}")
                continue
            sizes[img.size] += 1
            decoded.append(preprocess.pil_to_uint8(img))
        if not decoded:
            skipped.append(f"{root / name}: class has no readable images")
            continue
        labels += [len(names)] * len(decoded)
        names.append(name)
        images += decoded
    if not images:
        raise DataError(
            f"no readable images under {root} (supported: {', '.join(sorted(EXTENSIONS))})"
        )
    return Decoded(torch.stack(images), torch.tensor(labels), names, skipped, sizes)


def report(
    skipped: list[str], sizes: Counter[tuple[int, int]], root: Path, image_size: int
) -> None:
    """Warn about skipped files and empty classes, and about resizing mixed image sizes."""
    if skipped:
        shown = "; ".join(skipped[:5])
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        warnings.warn(f"skipped {len(skipped)} item(s) under {root}: {shown}{more}",
                      FolderWarning, stacklevel=3)  # fmt: skip
    if len(sizes) > 1:
        common = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sizes.most_common(3))
        warnings.warn(
            f"images under {root} have {len(sizes)} different sizes ({common}, ...); "
            f"all were resized to {image_size}x{image_size}",
            FolderWarning,
            stacklevel=3,
        )


def read_folder(root: Path, preprocess: Preprocess) -> ClassDataset:
    """A folder of class sub-folders as a `ClassDataset`, decoded now (no cache): support sets."""
    decoded = decode_folder(root, preprocess)
    report(decoded.skipped, decoded.sizes, root, preprocess.image_size)
    return ClassDataset(decoded.images, decoded.labels, decoded.class_names, name=str(root))


def split_classes(
    names: list[str], fractions: tuple[float, float, float], seed: int
) -> dict[str, list[int]]:
    """Seeded shuffle of class indices into train/val/test by `fractions` (each split >= 1 class
    when there are at least 3 classes)."""
    n = len(names)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(fractions[1] * n)) if n >= 3 else 0
    n_test = max(1, round(fractions[2] * n)) if n >= 3 else 0
    n_train = n - n_val - n_test
    if n_train < 1:
        raise DataError(f"{n} classes are too few to split into train/val/test; add classes")
    return {
        "train": sorted(order[:n_train]),
        "val": sorted(order[n_train : n_train + n_val]),
        "test": sorted(order[n_train + n_val :]),
        "all": list(range(n)),
    }


def subset(data: ClassDataset, classes: list[int], name: str) -> ClassDataset:
    keep = torch.isin(data.labels, torch.tensor(classes))
    remap = torch.full((data.num_classes,), -1, dtype=torch.long)
    remap[torch.tensor(classes)] = torch.arange(len(classes))
    return ClassDataset(data.images[keep], remap[data.labels[keep]],
                        [data.class_names[c] for c in classes], name=name)  # fmt: skip


def folder(
    root: str,
    image_size: int = 28,
    channels: int = 1,
    invert: bool = False,
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> SplitDataset:
    """Your own image folder with a seeded class split into train/val/test (and `all`)."""
    if channels not in (1, 3):
        raise DataError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-6:
        raise DataError(f"fractions must be three non-negative numbers summing to 1: {fractions}")
    path = Path(root).expanduser().resolve()
    prep = Preprocess(image_size=image_size, channels=channels, invert=invert)
    classes = list_classes(path)
    files = [p for ps in classes.values() for p in ps]
    stamp = fingerprint(*files)
    key = "folder-" + hashlib.sha256(f"{path}|{prep}".encode()).hexdigest()[:12]

    def build() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        decoded = decode_folder(path, prep)
        sizes = [[w, h, n] for (w, h), n in decoded.sizes.items()]
        meta = {"class_names": decoded.class_names, "skipped": decoded.skipped, "sizes": sizes}
        return {"images": decoded.images, "labels": decoded.labels}, meta

    cache: dict[str, ClassDataset] = {}

    def everything() -> ClassDataset:
        if "all" not in cache:
            tensors, meta = cached_tensors(key, stamp, build)
            sizes = Counter({(w, h): n for w, h, n in meta["sizes"]})
            report(meta["skipped"], sizes, path, image_size)
            cache["all"] = ClassDataset(tensors["images"], tensors["labels"], meta["class_names"],
                                        name=f"folder:{path}")  # fmt: skip
        return cache["all"]

    def split(name: str) -> ClassDataset:
        data = everything()
        chosen = split_classes(data.class_names, fractions, seed)[name]
        return data if name == "all" else subset(data, chosen, f"folder:{path}/{name}")

    return SplitDataset(
        name=f"folder:{path}",
        preprocess=prep,
        builders={s: (lambda s=s: split(s)) for s in ("train", "val", "test", "all")},
    )
