"""Omniglot (Lake et al. 2015) read from the official archives, with the Vinyals and Lake splits.

The two zips are read in place (never extracted) and decoded once into a uint8 cache at the
requested size. The Vinyals split (Vinyals et al. 2016, files as released with Prototypical
Networks) treats each of the four rotations of a character as a class of its own.
"""

from __future__ import annotations

import io
import re
import time
from collections import defaultdict
from pathlib import Path
from typing import Literal

import torch
from PIL import Image

from metakit.data.dataset import ClassDataset, SplitDataset
from metakit.data.preprocess import Preprocess
from metakit.data.store import (
    Resource,
    cache_dir,
    cached_tensors,
    fingerprint,
    locate,
    open_zip,
    read_member,
    verify_checksum,
)
from metakit.errors import ArchiveError, ArchiveStructureError, DataError

_BASE = "https://github.com/brendenlake/omniglot/raw/master/python"
ARCHIVES = {
    "background": Resource(
        "omniglot/images_background.zip",
        f"{_BASE}/images_background.zip",
        md5="68d2efa1b9178cc56df9314c21c6e718",
    ),
    "evaluation": Resource(
        "omniglot/images_evaluation.zip",
        f"{_BASE}/images_evaluation.zip",
        md5="6b91aef0f799c5bb55b94e3f2daec811",
    ),
}
# (alphabets, characters, images) of each official archive.
STRUCTURE = {"background": (30, 964, 19280), "evaluation": (20, 659, 13180)}
IMAGES_PER_CHARACTER = 20

_SPLITS_URL = (
    "https://raw.githubusercontent.com/jakesnell/prototypical-networks/master/"
    "data/omniglot/splits/vinyals"
)
VINYALS_SPLITS = {
    name: Resource(f"omniglot/splits/vinyals/{name}.txt", f"{_SPLITS_URL}/{name}.txt", sha256=h)
    for name, h in {
        "train": "984522c194c30fb678ce53304a160a42faf5403ad4f9a67010f32dd3a35738e0",
        "val": "11f99e54faee3e26f53d3231c1cceac5bf7b8730e9be31cb6dab256551dc0c1a",
        "trainval": "5276ae50c755596d0bff7f2284e85625695549a85ee6e36b6491ad1e5d1cc26a",
        "test": "845264cc5c156180828ccf17915668b17ee21424d0170df6e7d81676aa5d1204",
    }.items()
}
# Lake split: background alphabets train, evaluation alphabets test; these five background
# alphabets are held out as validation so model selection never sees the test alphabets.
LAKE_VAL_ALPHABETS = ("Bengali", "Futurama", "Hebrew", "Korean", "Tifinagh")

PREPROCESS_INVERT = True  # strokes bright on a dark background, as in Snell et al.
_MEMBER = re.compile(r"^(images_background|images_evaluation)/([^/]+)/(character\d+)/([^/]+\.png)$")


def check_structure(path: Path, part: str) -> dict[str, list[str]]:
    """Map `Alphabet/characterNN` → sorted PNG entries; raise ArchiveError on the wrong layout."""
    with open_zip(path) as zf:
        names = zf.namelist()
    chars: dict[str, list[str]] = defaultdict(list)
    for name in names:
        m = _MEMBER.match(name)
        if m and m.group(1) == f"images_{part}":
            chars[f"{m.group(2)}/{m.group(3)}"].append(name)
    alphabets = {c.split("/")[0] for c in chars}
    found = (len(alphabets), len(chars), sum(len(v) for v in chars.values()))
    if found != STRUCTURE[part]:
        raise ArchiveStructureError(
            f"{path} does not have the structure of Omniglot's images_{part}.zip: found "
            f"{found[0]} alphabets / {found[1]} characters / {found[2]} images, expected "
            f"{STRUCTURE[part][0]} / {STRUCTURE[part][1]} / {STRUCTURE[part][2]}. "
            "Delete it and run `metakit data fetch omniglot`."
        )
    uneven = [c for c, v in chars.items() if len(v) != IMAGES_PER_CHARACTER]
    if uneven:
        raise ArchiveStructureError(f"{path}: character {uneven[0]} does not have 20 images")
    return {c: sorted(v) for c, v in sorted(chars.items())}


def archive_paths(download: bool = True) -> dict[str, Path]:
    """Local paths of both archives; downloads (md5-verified) the ones that are missing."""
    return {part: locate(res, download=download) for part, res in ARCHIVES.items()}


def load_characters(image_size: int = 28, download: bool = True) -> tuple[torch.Tensor, list[str]]:
    """All 1623 characters as uint8 `[1623, 20, 1, S, S]` and names `set/Alphabet/characterNN`.

    Decoded once from the archives, then served from the cache.
    """
    paths = archive_paths(download)
    prep = Preprocess(image_size=image_size, channels=1, invert=PREPROCESS_INVERT)

    def build() -> tuple[dict[str, torch.Tensor], dict]:
        names: list[str] = []
        images: list[torch.Tensor] = []
        for part, path in paths.items():
            members = check_structure(path, part)
            with open_zip(path) as zf:
                for char, entries in members.items():
                    names.append(f"{part}/{char}")
                    for entry in entries:
                        data = read_member(zf, entry)
                        try:
                            img = Image.open(io.BytesIO(data))
                            images.append(prep.pil_to_uint8(img))
                        except OSError as e:
                            raise ArchiveError(
                                f"{path}: {entry} is not a valid PNG ({e})"
                            ) from None
        x = torch.stack(images).view(len(names), IMAGES_PER_CHARACTER, 1, image_size, image_size)
        return {"images": x}, {"characters": names}

    tensors, info = cached_tensors(
        f"omniglot-{image_size}", fingerprint(*paths.values()) + f"-v1-{image_size}", build
    )
    return tensors["images"], info["characters"]


def read_split_file(name: str, download: bool = True) -> list[str]:
    """Lines `Alphabet/characterNN/rotDDD` of a Vinyals split file, checked against its sha256."""
    resource = VINYALS_SPLITS[name]
    path = locate(resource, download=download)
    verify_checksum(path, resource)
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _rotated_classes(
    images: torch.Tensor, index: dict[str, int], entries: list[tuple[str, int]], name: str
) -> ClassDataset:
    """Classes given as (character, quarter turns) → a ClassDataset of rotated copies."""
    try:
        rows = torch.tensor([index[c] for c, _ in entries])
    except KeyError as e:
        raise DataError(
            f"split {name!r} names character {e.args[0]!r}, not in the archives"
        ) from None
    turns = torch.tensor([k for _, k in entries])
    out = images[rows].clone()  # [C, 20, 1, S, S]
    for k in (1, 2, 3):
        sel = turns == k
        if sel.any():
            out[sel] = torch.rot90(out[sel], k, dims=(-2, -1))
    n = len(entries)
    labels = torch.arange(n).repeat_interleave(IMAGES_PER_CHARACTER)
    class_names = [f"{c}/rot{k * 90:03d}" for c, k in entries]
    return ClassDataset(out.flatten(0, 1), labels, class_names, name=name)


def omniglot(
    split: Literal["vinyals", "lake"] = "vinyals",
    image_size: int = 28,
    rotations: bool = False,
    download: bool = True,
) -> SplitDataset:
    """Omniglot with the Vinyals split (rotations as classes) or Lake's background/evaluation.

    `rotations` adds the four rotations as classes to the Lake split (Vinyals has them already).
    """
    if image_size < 8:
        raise DataError(f"image_size must be at least 8, got {image_size}")
    prep = Preprocess(image_size=image_size, channels=1, invert=PREPROCESS_INVERT)

    def characters() -> tuple[torch.Tensor, list[str], dict[str, int]]:
        images, names = load_characters(image_size, download)
        return images, names, {n.split("/", 1)[1]: i for i, n in enumerate(names)}

    def vinyals(name: str) -> ClassDataset:
        images, _, index = characters()
        entries = []
        for line in read_split_file(name, download):
            char, rot = line.rsplit("/", 1)
            entries.append((char, int(rot.removeprefix("rot")) // 90))
        return _rotated_classes(images, index, entries, f"omniglot/vinyals/{name}")

    def lake(name: str) -> ClassDataset:
        images, names, index = characters()
        chars = []
        for full in names:
            part, char = full.split("/", 1)
            alphabet = char.split("/")[0]
            held_out = alphabet in LAKE_VAL_ALPHABETS
            if (
                (name == "test" and part == "evaluation")
                or (name == "evaluation" and part == "evaluation")
                or (name == "background" and part == "background")
                or (name == "train" and part == "background" and not held_out)
                or (name == "val" and part == "background" and held_out)
            ):
                chars.append(char)
        turns = (0, 1, 2, 3) if rotations else (0,)
        entries = [(c, k) for c in chars for k in turns]
        return _rotated_classes(images, index, entries, f"omniglot/lake/{name}")

    if split == "vinyals":
        names = ["train", "val", "trainval", "test"]
        build = vinyals
    elif split == "lake":
        names = ["train", "val", "test", "background", "evaluation"]
        build = lake
    else:
        raise DataError(f"unknown Omniglot split {split!r}; use 'vinyals' or 'lake'")
    return SplitDataset(
        name=f"omniglot-{split}",
        preprocess=prep,
        builders={n: (lambda n=n: build(n)) for n in names},
    )


def fetch() -> None:
    """Download (and verify) whatever is missing: both archives and the Vinyals split files."""
    archive_paths(download=True)
    for name in VINYALS_SPLITS:
        read_split_file(name, download=True)


def info(image_size: int = 28, download: bool = False) -> dict:
    """Facts for `metakit data info omniglot`: archive structure and decode/cache timing."""
    paths = archive_paths(download)
    out: dict = {"archives": {}}
    for part, path in paths.items():
        members = check_structure(path, part)
        out["archives"][part] = {
            "path": str(path),
            "alphabets": len({c.split("/")[0] for c in members}),
            "characters": len(members),
            "images": sum(len(v) for v in members.values()),
        }
    cached = (cache_dir() / f"omniglot-{image_size}.safetensors").exists()
    t = time.perf_counter()
    images, _ = load_characters(image_size, download)
    out["load_seconds" if cached else "decode_seconds"] = round(time.perf_counter() - t, 3)
    out["decoded_shape"] = list(images.shape)
    return out
