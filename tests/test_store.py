import hashlib
import io
import zipfile
from pathlib import Path

import pytest
import torch
from PIL import Image

from metakit.data import omniglot as og
from metakit.data.store import (
    Resource,
    cached_tensors,
    download_file,
    locate,
    open_zip,
    read_member,
    safe_extract,
)
from metakit.errors import (
    ArchiveError,
    ArchiveStructureError,
    ChecksumError,
    DataError,
    TruncatedArchiveError,
    UnsafeArchiveError,
)


def png_bytes() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (105, 105), 1).save(buf, format="PNG")
    return buf.getvalue()


def make_omniglot_zip(path: Path, part: str, alphabets: int, chars: int, images: int = 20) -> Path:
    data = png_bytes()
    with zipfile.ZipFile(path, "w") as zf:
        for a in range(alphabets):
            for c in range(chars):
                for i in range(images):
                    zf.writestr(
                        f"images_{part}/Alpha{a}/character{c + 1:02d}/{c}_{i:02d}.png", data
                    )
    return path


def test_download_verifies_checksum(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"hello")
    good = hashlib.md5(b"hello").hexdigest()
    dest = download_file(
        Resource("x/file.bin", src.as_uri(), md5=good), tmp_path / "x" / "file.bin"
    )
    assert dest.read_bytes() == b"hello"
    bad = Resource("y/file.bin", src.as_uri(), md5="0" * 32)
    with pytest.raises(ChecksumError, match="md5 is .* expected 0000"):
        download_file(bad, tmp_path / "y" / "file.bin")
    assert not (tmp_path / "y" / "file.bin").exists()  # nothing half-verified is left behind
    assert not list((tmp_path / "y").glob("*.part"))


def test_missing_file_without_download_is_clear(tmp_path):
    with pytest.raises(DataError, match="is missing"):
        locate(Resource("nope.zip", "file:///nonexistent"), download=False, root=tmp_path)


def test_failed_download_is_clear(tmp_path):
    with pytest.raises(DataError, match="download of .* failed"):
        locate(Resource("a/b.zip", (tmp_path / "absent.zip").as_uri(), md5="0" * 32), root=tmp_path)


def test_truncated_archive(tmp_path):
    good = make_omniglot_zip(tmp_path / "good.zip", "background", 1, 1, 2)
    cut = tmp_path / "cut.zip"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(TruncatedArchiveError, match="truncated or is not a zip"):
        open_zip(cut)


def test_corrupt_entry(tmp_path):
    path = tmp_path / "c.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("a.txt", b"A" * 1000)
    raw = bytearray(path.read_bytes())
    raw[raw.index(b"A" * 100) + 10] = ord("B")  # flip one byte of the payload → CRC mismatch
    path.write_bytes(bytes(raw))
    with open_zip(path) as zf, pytest.raises(ArchiveError, match="corrupt"):
        read_member(zf, "a.txt")


def test_wrong_structure(tmp_path):
    path = make_omniglot_zip(tmp_path / "images_background.zip", "background", 2, 3)
    with pytest.raises(
        ArchiveStructureError, match="found 2 alphabets / 6 characters / 120 images"
    ):
        og.check_structure(path, "background")


@pytest.mark.parametrize("name", ["../evil.txt", "/etc/evil", "a/../../evil", "C:/evil"])
def test_path_escaping_entry_is_rejected(tmp_path, name):
    path = tmp_path / "evil.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.txt", b"fine")
        zf.writestr(name, b"bad")
    with pytest.raises(UnsafeArchiveError, match="escapes the target folder"):
        open_zip(path)


def test_safe_extract_stays_inside(tmp_path):
    path = tmp_path / "ok.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("d/ok.txt", b"fine")
    with open_zip(path) as zf:
        safe_extract(zf, tmp_path / "out")
    assert (tmp_path / "out" / "d" / "ok.txt").read_bytes() == b"fine"


def test_cache_builds_once_and_rebuilds_when_stale(tmp_path, monkeypatch):
    monkeypatch.setenv("METAKIT_CACHE", str(tmp_path / "cache"))
    calls = []

    def build():
        calls.append(1)
        return {"x": torch.arange(6, dtype=torch.uint8)}, {"names": ["a"]}

    t1, info = cached_tensors("k", "fp1", build)
    t2, _ = cached_tensors("k", "fp1", build)
    assert len(calls) == 1 and torch.equal(t1["x"], t2["x"]) and info == {"names": ["a"]}
    cached_tensors("k", "fp2", build)
    assert len(calls) == 2
    (tmp_path / "cache" / "k.safetensors").write_bytes(b"garbage")
    cached_tensors("k", "fp2", build)
    assert len(calls) == 3


def test_split_file_checksum_is_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("METAKIT_DATA", str(tmp_path))
    split = tmp_path / "omniglot" / "splits" / "vinyals" / "val.txt"
    split.parent.mkdir(parents=True)
    split.write_text("Hebrew/character01/rot000\n")
    with pytest.raises(ChecksumError, match="sha256"):
        og.read_split_file("val", download=False)


def test_real_archives_have_the_official_structure(omniglot):
    for part, path in og.archive_paths(download=False).items():
        members = og.check_structure(path, part)
        assert len(members) == og.STRUCTURE[part][1]
