"""Where data lives, how it is fetched and verified, and the decode-once tensor cache.

The data root (`$METAKIT_DATA`, default `~/.cache/metakit`) holds archives exactly as published
and may be read-only; decoded tensors go to a separate cache folder (`$METAKIT_CACHE`, default
`~/.cache/metakit/cache`) so nothing is ever written beside a user's archives.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from metakit.errors import (
    ArchiveError,
    ChecksumError,
    DataError,
    TruncatedArchiveError,
    UnsafeArchiveError,
)


def data_root() -> Path:
    """The folder that holds raw archives; `$METAKIT_DATA` overrides the default."""
    return Path(os.environ.get("METAKIT_DATA") or Path.home() / ".cache" / "metakit").expanduser()


def cache_dir() -> Path:
    """The writable folder for decoded tensors; `$METAKIT_CACHE` overrides the default."""
    default = Path.home() / ".cache" / "metakit" / "cache"
    return Path(os.environ.get("METAKIT_CACHE") or default).expanduser()


@dataclass(frozen=True)
class Resource:
    """A published file: where it lives under the data root, where to get it, how to check it."""

    path: str  # relative to the data root
    url: str
    md5: str | None = None
    sha256: str | None = None


def file_digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_checksum(path: Path, resource: Resource) -> None:
    """Raise ChecksumError when `path` does not match the resource's published digest."""
    for algorithm in ("sha256", "md5"):
        expected = getattr(resource, algorithm)
        if expected is None:
            continue
        actual = file_digest(path, algorithm)
        if actual != expected:
            raise ChecksumError(
                f"{path.name}: {algorithm} is {actual}, expected {expected} (from {resource.url}). "
                "The file is corrupt or not the published one; delete it and fetch again."
            )


def locate(resource: Resource, download: bool = True, root: Path | None = None) -> Path:
    """Return the local path of `resource`, downloading and verifying it when it is missing."""
    root = data_root() if root is None else root
    path = root / resource.path
    if path.exists():
        return path
    if not download:
        raise DataError(
            f"{path} is missing. Fetch it with `metakit data fetch "
            f"{resource.path.split('/')[0]}`, or point METAKIT_DATA at a folder that has it."
        )
    return download_file(resource, path)


def download_file(resource: Resource, dest: Path) -> Path:
    """Download to a temporary file, verify the checksum, then move into place atomically."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    except OSError as e:
        raise DataError(
            f"cannot write {dest} ({e.strerror}); set METAKIT_DATA to a writable folder"
        ) from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(resource.url, timeout=60) as r:
            shutil.copyfileobj(r, out)
        verify_checksum(tmp, resource)
        os.replace(tmp, dest)
    except OSError as e:
        raise DataError(f"download of {resource.url} failed: {e}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def open_zip(path: Path) -> zipfile.ZipFile:
    """Open an archive for reading in place, rejecting truncated files and unsafe entries."""
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise TruncatedArchiveError(
            f"{path} is truncated or is not a zip archive ({e}); delete it and fetch it again"
        ) from None
    for name in zf.namelist():
        check_member_name(name, path)
    return zf


def check_member_name(name: str, archive: Path) -> None:
    """Reject absolute paths and `..` components: such an entry could escape a target folder."""
    p = PurePosixPath(name.replace("\\", "/"))
    if p.is_absolute() or ".." in p.parts or (p.parts and ":" in p.parts[0]):
        raise UnsafeArchiveError(
            f"{archive} has an entry {name!r} that escapes the target folder; refusing to use it"
        )


def read_member(zf: zipfile.ZipFile, name: str) -> bytes:
    """Read one entry, turning CRC and decompression failures into a clear ArchiveError."""
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ArchiveError(
            f"{zf.filename}: entry {name!r} is corrupt ({e}); delete the archive and fetch it again"
        ) from None


def safe_extract(zf: zipfile.ZipFile, target: Path) -> None:
    """Extract every entry under `target`, refusing any entry that would land outside it."""
    target = target.resolve()
    for info in zf.infolist():
        check_member_name(info.filename, Path(zf.filename or "archive"))
        dest = (target / info.filename).resolve()
        if not dest.is_relative_to(target):
            raise UnsafeArchiveError(
                f"entry {info.filename!r} escapes {target}; refusing to extract"
            )
    zf.extractall(target)


def fingerprint(*paths: Path) -> str:
    """A cheap identity of source files (name, size, mtime) so stale caches are rebuilt."""
    parts = []
    for p in paths:
        st = p.stat()
        parts.append(f"{p.resolve()}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def cached_tensors(
    key: str,
    source_fingerprint: str,
    build: Callable[[], tuple[dict[str, torch.Tensor], dict]],
) -> tuple[dict[str, torch.Tensor], dict]:
    """Load `key` from the cache, or run `build` once and store its tensors and JSON metadata.

    The cache is a safetensors file (no pickle). It is rebuilt when the source fingerprint
    changes or the file cannot be read, and written atomically so a crash never leaves half a file.
    """
    path = cache_dir() / f"{key}.safetensors"
    if path.exists():
        try:
            with safe_open(path, "pt") as f:
                meta = json.loads((f.metadata() or {}).get("metakit", "{}"))
            if meta.get("fingerprint") == source_fingerprint:
                return load_file(path), meta["info"]
        except (SafetensorError, OSError, ValueError, KeyError):
            pass  # unreadable or stale: rebuild below
    tensors, info = build()
    meta = {"fingerprint": source_fingerprint, "info": info}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
        os.close(fd)
        try:
            save_file(
                {k: v.contiguous() for k, v in tensors.items()},
                tmp,
                metadata={"metakit": json.dumps(meta)},
            )
            os.replace(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
    except OSError as e:
        raise DataError(
            f"cannot write the decode cache {path} ({e.strerror}); set METAKIT_CACHE to a "
            "writable folder"
        ) from None
    return tensors, info
