"""IDX parsing against hand-made files, and MNIST / Fashion-MNIST against the shared copies."""

import gzip
import struct

import pytest
import torch

from metakit.data import DATASETS
from metakit.data.idx import parse_idx, read_idx_gz
from metakit.data.store import data_root
from metakit.errors import ArchiveError, TruncatedArchiveError


def idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape) + payload


def test_parse_hand_made_uint8_images():
    data = idx_bytes(0x08, (2, 2, 3), bytes(range(12)))
    x = parse_idx(data)
    assert x.dtype == torch.uint8 and x.shape == (2, 2, 3)
    assert x[1, 0].tolist() == [6, 7, 8]


def test_parse_big_endian_int32_and_float():
    x = parse_idx(idx_bytes(0x0C, (3,), struct.pack(">3i", 1, -2, 70000)))
    assert x.tolist() == [1, -2, 70000]
    y = parse_idx(idx_bytes(0x0D, (2,), struct.pack(">2f", 1.5, -0.25)))
    assert y.tolist() == [1.5, -0.25]


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(ArchiveError, match="magic"):
        parse_idx(b"\x01\x02\x08\x01")
    with pytest.raises(ArchiveError, match="type code"):
        parse_idx(idx_bytes(0x07, (1,), b"\x00"))
    with pytest.raises(TruncatedArchiveError, match="truncated"):
        parse_idx(idx_bytes(0x08, (4, 4), bytes(10)))
    path = tmp_path / "labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(idx_bytes(0x08, (5,), bytes([3, 1, 4, 1, 5]))))
    assert read_idx_gz(path).tolist() == [3, 1, 4, 1, 5]
    path.write_bytes(gzip.compress(idx_bytes(0x08, (5,), bytes(5)))[:-6])  # cut download
    with pytest.raises(TruncatedArchiveError, match="fetch again"):
        read_idx_gz(path)


needs_mnist = pytest.mark.skipif(
    not (data_root() / "mnist" / "t10k-images-idx3-ubyte.gz").exists(),
    reason="MNIST is not under METAKIT_DATA",
)


@needs_mnist
def test_mnist_test_split_counts():
    data = DATASETS.build("mnist", download=False)
    assert data.splits == ["test"]  # only the test split is present in the shared copy
    test = data.split("test")
    assert test.images.shape == (10000, 1, 28, 28) and test.images.dtype == torch.uint8
    assert test.counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    episode = data.sampler("test", ways=10, shots=5, queries=15, seed=0).sample(0)
    assert episode.support_x.shape == (50, 1, 28, 28)


@needs_mnist
def test_fashion_mnist_counts_and_resize():
    data = DATASETS.build("fashion-mnist", download=False)
    assert sorted(data.splits) == ["test", "train"]
    assert data.split("train").counts.tolist() == [6000] * 10
    assert data.split("test").counts.tolist() == [1000] * 10
    small = DATASETS.build("fashion-mnist", image_size=14, download=False).split("test")
    assert small.images.shape == (10000, 1, 14, 14)
