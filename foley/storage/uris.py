"""Local paths and s3:// URIs: telling them apart, splitting them, and joining relative paths safely."""

from __future__ import annotations

import functools
import os
import posixpath
from pathlib import Path


class StorageError(RuntimeError):
    """A storage problem that names the location and what to do about it."""


class UnsafePathError(StorageError):
    """A relative path that would escape the output root (`../x.mp4`, `/etc/x.mp4`)."""


def is_s3(uri: str) -> bool:
    return uri.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    if not bucket:
        raise StorageError(f"'{uri}' names no bucket; use s3://BUCKET/PREFIX/")
    return bucket, key


def safe_relative_path(relative: str) -> str:
    """Normalise a relative path, refusing anything that could land outside the root it is joined to."""
    if not relative or relative.startswith(("/", "\\")) or "\\" in relative or "\x00" in relative:
        raise UnsafePathError(f"unsafe relative path {relative!r}: absolute or not a plain path")
    normalised = posixpath.normpath(relative)
    if normalised in (".", "..") or normalised.startswith("../"):
        raise UnsafePathError(f"unsafe relative path {relative!r}: it points outside the output root")
    return normalised


def s3_identity(etag: str, size: int) -> str:
    """An S3 object's content identity: its ETag (the content's MD5 for single-part uploads) and its size."""
    return "etag:" + etag.strip('"') + f":size:{size}"


def local_identity(path: Path | os.DirEntry) -> str:
    """A local file's content identity: size and modification time, which any rewrite of the file changes."""
    stat = path.stat()
    return f"size:{stat.st_size}:mtime:{stat.st_mtime_ns}"


def join(root: str, relative: str) -> str:
    relative = safe_relative_path(relative)
    if is_s3(root):
        return root.rstrip("/") + "/" + relative
    folder = _local_root(root)
    return relative if folder == "." else posixpath.join(folder, relative)


@functools.lru_cache(maxsize=256)
def _local_root(root: str) -> str:
    """A local root as pathlib writes it ('a//b/' -> 'a/b'), worked out once: a plan joins it a million times."""
    return str(Path(root))
