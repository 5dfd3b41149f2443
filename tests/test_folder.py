"""Your own images: the folder dataset, its seeded class split, and `metakit predict`."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from metakit.cli import app
from metakit.data.folder import FolderWarning, folder, read_folder
from metakit.data.preprocess import Preprocess
from metakit.engine.trainer import train
from metakit.errors import DataError
from tests.conftest import needs_omniglot, tiny_config


def pattern(c: int, size: int = 28, noise: int = 0, seed: int = 0) -> Image.Image:
    """Class `c`: a bright horizontal band at a class-specific height, plus optional noise."""
    rng = np.random.default_rng(seed)
    arr = np.zeros((size, size), dtype=np.int16)
    band = size // 10
    arr[c * band : (c + 1) * band, :] = 255
    arr += rng.integers(-noise, noise + 1, arr.shape) if noise else 0
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def make_tree(root, classes: int = 10, per_class: int = 6, size: int = 28):
    for c in range(classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(per_class):
            pattern(c, size, noise=30, seed=i).save(d / f"{i}.png")
    return root


def test_folder_skips_bad_files_and_reports_sizes(tmp_path):
    root = make_tree(tmp_path / "imgs", classes=3, per_class=3)
    (root / "class_0" / "broken.png").write_bytes(b"not an image")
    (root / "empty_class").mkdir()
    pattern(1, size=40).save(root / "class_1" / "big.png")
    with pytest.warns(FolderWarning) as caught:
        data = read_folder(root, Preprocess(image_size=28))
    messages = " ".join(str(w.message) for w in caught)
    assert "broken.png" in messages and "empty_class" in messages
    assert "2 different sizes" in messages and "resized to 28x28" in messages
    assert data.class_names == ["class_0", "class_1", "class_2"]
    assert data.counts.tolist() == [3, 4, 3]  # the bad file is skipped, the big one resized
    with pytest.raises(DataError, match="one sub-folder per class"):
        read_folder(tmp_path / "missing", Preprocess(image_size=28))


def test_folder_class_split_is_seeded_and_disjoint(tmp_path):
    root = make_tree(tmp_path / "imgs", classes=10, per_class=2)
    a, b = folder(str(root), seed=1), folder(str(root), seed=1)
    names = {s: a.split(s).class_names for s in ("train", "val", "test")}
    assert names == {s: b.split(s).class_names for s in ("train", "val", "test")}
    assert [len(v) for v in names.values()] == [6, 2, 2]
    assert set(names["train"]).isdisjoint(names["test"])
    assert len({n for v in names.values() for n in v}) == 10
    others = [folder(str(root), seed=s).split("test").class_names for s in range(2, 6)]
    assert any(o != names["test"] for o in others)


def test_train_on_folder_then_predict(tmp_path):
    root = make_tree(tmp_path / "imgs", classes=10, per_class=6)
    config = tiny_config(episodes=4, ways=2, queries=2, val_every=4)
    config.data = {"name": "folder", "root": str(root), "image_size": 28, "split": "vinyals"}
    config.eval.ways = 2
    with pytest.warns(UserWarning, match="data.split does not apply"):
        train(config, tmp_path / "run", progress=False)
    support = tmp_path / "support"
    for c in (2, 5, 8):
        (support / f"digit{c}").mkdir(parents=True)
        pattern(c, noise=10, seed=100).save(support / f"digit{c}" / "a.png")
    queries = tmp_path / "queries"
    queries.mkdir()
    for c in (8, 2, 5):
        pattern(c, noise=10, seed=200 + c).save(queries / f"q{c}.png")
    (queries / "zz_corrupt.png").write_bytes(b"\x89PNG broken")
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "run"), "--support", str(support), "--query", str(queries),
              "--checkpoint", "last"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["label"] for r in rows] == ["digit2", "digit5", "digit8"]
    assert all(0 < float(r["probability"]) <= 1 for r in rows)
    assert "zz_corrupt.png" in result.stderr


@needs_omniglot
def test_predict_needs_a_support_folder(tmp_path):
    train(tiny_config(episodes=2, val_every=2), tmp_path / "run", progress=False)
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path / "run"), "--support", str(tmp_path / "nope"),
              "--query", str(tmp_path), "--checkpoint", "last"],
    )  # fmt: skip
    assert isinstance(result.exception, DataError)
    assert "one sub-folder per class" in str(result.exception)
