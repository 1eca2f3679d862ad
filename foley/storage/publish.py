"""Staged publishing: an output is written to a temporary file and appears at its final location only whole,
checked.

Locally that is a rename in the target's folder, after the file reached the disk (fsync), with its size checked
after; on S3 one PUT or a completed multipart upload, whose size and ETag are checked against the file sent (a
crash never leaves a partial object at a final key). A full disk or a failed write is a StorageError that names
the folder. The writes the lease needs are here too: an exclusive create that is whole or absent, and a replace or
delete conditional on the version read (S3 If-Match on the ETag; a lock beside a local file).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import mimetypes
import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from foley.storage.s3 import is_missing, s3_errors
from foley.storage.uris import StorageError, is_s3, split_s3

CONDITIONAL_PUT_ATTEMPTS = 5
NAME_MAX_BYTES = 255  # what nearly every file system allows in one name, where the folder cannot tell
MD5_CHUNK = 1 << 20
# Python's own table (not the machine's /etc/mime.types, which differs between hosts) names most files the job
# writes; these are what it lacks or names otherwise. Text is UTF-8, so a browser shows any script in a name.
CONTENT_TYPES = {
    ".mkv": "video/x-matroska",
    ".m4v": "video/x-m4v",
    ".3gp": "video/3gpp",
    ".ts": "video/mp2t",
    ".mts": "video/mp2t",
    ".m2ts": "video/mp2t",
    ".flac": "audio/flac",
    ".parquet": "application/vnd.apache.parquet",
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json; charset=utf-8",
}
BUILT_IN_TYPES = mimetypes.MimeTypes(filenames=())


def content_type(key: str) -> str:
    """The Content-Type a browser needs to show, play or run a published file rather than download it."""
    suffix = posixpath.splitext(key)[1].lower()
    return CONTENT_TYPES.get(suffix) or BUILT_IN_TYPES.guess_type(key)[0] or "application/octet-stream"


# What temporary_sibling names: hidden, then the target's stem, ".partial-" and 8 hex digits, then its extension.
# remove_partials deletes only names of exactly this form, so a person's own file in the output tree stays.
PARTIAL_TOKEN_HEX = 8
PARTIAL_NAME = re.compile(rf"\..+\.partial-[0-9a-f]{{{PARTIAL_TOKEN_HEX}}}(\.[^.]+)?")


def temporary_sibling(path: Path) -> Path:
    """A hidden name next to `path` that keeps its extension (ffmpeg picks the container from it), as long as the
    folder allows wherever `path` itself fits: a long stem is shortened (at a whole character) to make room."""
    token = f".partial-{uuid.uuid4().hex[:PARTIAL_TOKEN_HEX]}{path.suffix}"
    room = name_max(path.parent) - len(f".{token}".encode())
    stem = path.stem.encode()[: max(room, 1)].decode(errors="ignore") or "x"
    return path.with_name(f".{stem}{token}")


def name_max(folder: Path) -> int:
    """The longest file name, in bytes, the file system of `folder` (or of its nearest existing parent) takes."""
    for candidate in (folder, *folder.parents):
        try:
            return os.pathconf(candidate, "PC_NAME_MAX")
        except (OSError, ValueError):
            continue
    return NAME_MAX_BYTES


def is_partial_name(name: str) -> bool:
    """Whether a file name is one the job deletes as a partial file left by a killed run."""
    return PARTIAL_NAME.fullmatch(name) is not None


def local_write_failed(uri: str | Path, exc: OSError) -> StorageError:
    """A failed local write, named with its folder, and for a full disk how much is free there."""
    folder = Path(uri).parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if exc.errno == 28:  # ENOSPC
        free = shutil.disk_usage(folder).free
        return StorageError(
            f"no space left on the device holding {folder} ({free} bytes free) while writing {uri}; free space "
            "there and run the job again (finished work is kept)"
        )
    return StorageError(f"writing {uri} failed: {exc.strerror or exc}")


def _write_locally(uri: str, data: bytes, place: Callable[[Path, Path], None]) -> None:
    """`data` written whole to a synced temporary sibling of `uri`, then put in place by `place` (os.replace, or
    os.link, which fails with FileExistsError where a file is); the temporary file never stays."""
    target = Path(uri)
    temporary = temporary_sibling(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _synced_write(temporary, data)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise local_write_failed(uri, exc) from None
    try:
        place(temporary, target)
    except FileExistsError:  # os.link where a file is: the caller's answer, not a failure
        raise
    except OSError as exc:
        raise local_write_failed(uri, exc) from None
    finally:
        temporary.unlink(missing_ok=True)


def md5_hex(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(MD5_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def expected_etag(path: Path, part_size: int) -> str:
    """The ETag S3 gives the file uploaded in parts of `part_size` above that size: the MD5 of a single PUT, or the
    MD5 of the parts' MD5s and their count."""
    size = path.stat().st_size
    if size <= part_size:
        return md5_hex(path)
    parts = hashlib.md5(usedforsecurity=False)
    count = 0
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(part_size), b""):
            parts.update(hashlib.md5(chunk, usedforsecurity=False).digest())
            count += 1
    return f"{parts.hexdigest()}-{count}"


def _synced_write(path: Path, data: bytes) -> None:
    with path.open("wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _sync(path: Path) -> None:
    """What ffmpeg wrote reaches the disk before the rename makes it the output: a full disk fails here, not later."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _locked(uri: str) -> Iterator[None]:
    """An exclusive lock beside a local file (`<file>.lock`), for a read-compare-write that must be one step."""
    Path(uri).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{uri}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _local_version(path: Path) -> str:
    stat = path.stat()
    return f"{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}"


class StagedPublishing:
    """Storage's writing side (mixed into Storage, whose s3 client, config and s3_call it uses)."""

    @contextlib.contextmanager
    def staged_output(self, uri: str) -> Iterator[Path]:
        """Yield a temporary local path; on success publish it at `uri` in one step, on failure leave nothing."""
        if is_s3(uri):
            scratch = self.cache_dir / "outgoing"
            try:
                scratch.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise local_write_failed(scratch / "x", exc) from None
            temporary = temporary_sibling(scratch / posixpath.basename(split_s3(uri)[1]))
        else:
            final = Path(uri)
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise local_write_failed(uri, exc) from None
            temporary = temporary_sibling(final)
        try:
            yield temporary
            self.publish(temporary, uri)
        finally:
            temporary.unlink(missing_ok=True)

    def publish(self, local: Path, uri: str) -> int:
        """Put the finished local file at `uri` whole, and check that what arrived is that file; its size."""
        size = local.stat().st_size
        if not is_s3(uri):
            self._publish_locally(local, Path(uri), size)
            return size
        bucket, key = split_s3(uri)
        part = self.config.multipart_mb << 20
        etag = expected_etag(local, part)
        from boto3.s3.transfer import TransferConfig  # noqa: PLC0415 - only where S3 is used

        transfer = TransferConfig(multipart_threshold=part + 1, multipart_chunksize=part)
        extra = {"ContentType": content_type(key)}
        try:
            self.s3_call("uploading", uri, lambda: self.s3.upload_file(str(local), bucket, key, extra, Config=transfer))
        except StorageError:
            if self._arrived(bucket, key, size, etag) == "":  # the upload completed; only its answer was lost
                return size
            raise
        if problem := self._arrived(bucket, key, size, etag):
            self.s3_call("deleting", uri, lambda: self.s3.delete_object(Bucket=bucket, Key=key))
            raise StorageError(
                f"uploading {uri} failed its check: {problem}; the object was removed. Run the job again"
            )
        return size

    def _publish_locally(self, local: Path, final: Path, size: int) -> None:
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            _sync(local)
            if local.parent == final.parent:
                os.replace(local, final)
            else:  # another file system: copy next to the target first, then rename
                copy = temporary_sibling(final)
                try:
                    shutil.copyfile(local, copy)
                    _sync(copy)
                    os.replace(copy, final)
                finally:
                    copy.unlink(missing_ok=True)
            arrived = final.stat().st_size
        except OSError as exc:
            raise local_write_failed(final, exc) from None
        if arrived != size:
            raise StorageError(f"{final} holds {arrived} bytes after publishing, not {size}; run the job again")

    def _arrived(self, bucket: str, key: str, size: int, etag: str) -> str:
        """What is wrong with the object at the key against the file sent ('' when it is that file)."""
        try:
            head = self.s3_call("checking", f"s3://{bucket}/{key}", lambda: self.s3.head_object(Bucket=bucket, Key=key))
        except StorageError as exc:
            return str(exc)
        if head["ContentLength"] != size:
            return f"{head['ContentLength']} bytes arrived of {size}"
        if head["ETag"].strip('"') != etag:
            return f"its ETag {head['ETag']} is not the file's {etag}"
        return ""

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write `data` at `uri` whole: locally through a synced temporary file and a rename; on S3 in one PUT
        whose MD5 S3 checks, straight from memory (a full node cache never stops a small write)."""
        if not is_s3(uri):
            _write_locally(uri, data, os.replace)
            return
        if len(data) > self.config.multipart_mb << 20:
            with self.staged_output(uri) as temporary:
                temporary.write_bytes(data)
            return
        self._put(uri, data)

    def _put(self, uri: str, data: bytes, **conditions) -> str:
        """One PUT of `data`, its MD5 checked by S3 on arrival and by us in the answer; the new ETag."""
        bucket, key = split_s3(uri)
        digest = hashlib.md5(data, usedforsecurity=False)
        answer = self.s3.put_object(
            Bucket=bucket,
            Key=key,
            Body=data,
            ContentMD5=base64.b64encode(digest.digest()).decode(),
            ContentType=content_type(key),
            **conditions,
        )
        if answer["ETag"].strip('"') != digest.hexdigest():
            raise StorageError(f"writing {uri} failed its check: S3 answered ETag {answer['ETag']}; run again")
        return answer["ETag"]

    def create_exclusive(self, uri: str, data: bytes) -> bool:
        """Write `uri` only if nothing is there yet, whole, in one step; False if something was. Of several writers
        racing for one name, exactly one gets True (a local hard link of a finished file, which fails where a file
        exists, so a full disk never leaves an empty one; an S3 conditional PUT, If-None-Match: *). A retried PUT
        whose first try succeeded finds its own record there, and holds it."""
        if not is_s3(uri):
            try:
                _write_locally(uri, data, os.link)
            except FileExistsError:
                return False
            return True
        return self._conditional_put(uri, data, IfNoneMatch="*") is not None

    def _conditional_put(self, uri: str, data: bytes, **condition) -> str | None:
        """A PUT under `condition` (If-None-Match or If-Match): the new ETag, or None when the condition failed. An
        answer lost after the PUT succeeded makes its retry fail the condition: then the object holds `data`."""
        from botocore.exceptions import ClientError  # noqa: PLC0415 - only where S3 is used

        for _ in range(CONDITIONAL_PUT_ATTEMPTS):
            try:
                return self.retry(lambda: self._put(uri, data, **condition))
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "PreconditionFailed":
                    found = self.read_versioned(uri)
                    return found[1] if found is not None and found[0] == data else None
                if code != "ConditionalRequestConflict":  # that one means a concurrent conditional write: again
                    with s3_errors("writing", uri):
                        raise
            except Exception as exc:  # noqa: BLE001 - a connection that stayed broken through every retry
                raise StorageError(f"writing {uri} failed: {exc}") from None
        raise StorageError(f"writing {uri} kept conflicting with concurrent writers")

    def read_versioned(self, uri: str) -> tuple[bytes, str] | None:
        """The object's content and version (S3's ETag; locally inode, mtime and size), or None if there is none."""
        if not is_s3(uri):
            path = Path(uri)
            try:
                with path.open("rb") as file:
                    return file.read(), _local_version(path)
            except FileNotFoundError:
                return None
            except OSError as exc:
                raise StorageError(f"cannot read {uri}: {exc.strerror}") from None
        from botocore.exceptions import ClientError  # noqa: PLC0415 - only where S3 is used

        bucket, key = split_s3(uri)

        def read() -> tuple[bytes, str] | None:
            try:
                answer = self.s3.get_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise
            return answer["Body"].read(), answer["ETag"]

        return self.s3_call("reading", uri, read)

    def replace_if(self, uri: str, data: bytes, version: str) -> str | None:
        """Replace the object with `data` only if it is still at `version`: the new version, or None if it changed
        (or is gone) meanwhile."""
        if is_s3(uri):
            return self._conditional_put(uri, data, IfMatch=version)
        path = Path(uri)
        with _locked(uri):
            try:
                if _local_version(path) != version:
                    return None
            except FileNotFoundError:
                return None
            temporary = temporary_sibling(path)
            try:
                _synced_write(temporary, data)
                os.replace(temporary, path)
            except OSError as exc:
                raise local_write_failed(uri, exc) from None
            finally:
                temporary.unlink(missing_ok=True)
            return _local_version(path)

    def delete_if(self, uri: str, version: str) -> bool:
        """Delete the object only if it is still at `version`; False if it changed meanwhile."""
        if not is_s3(uri):
            with _locked(uri):
                try:
                    if _local_version(Path(uri)) != version:
                        return False
                except FileNotFoundError:
                    return False
                Path(uri).unlink()
                return True
        from botocore.exceptions import ClientError  # noqa: PLC0415 - only where S3 is used

        bucket, key = split_s3(uri)
        try:
            self.retry(lambda: self.s3.delete_object(Bucket=bucket, Key=key, IfMatch=version))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "NoSuchKey", "404"):
                return False
            with s3_errors("deleting", uri):
                raise
        except Exception as exc:  # noqa: BLE001 - a connection that stayed broken through every retry
            raise StorageError(f"deleting {uri} failed: {exc}") from None
        return True

    def remove_partials(self, root: str) -> int:
        """Delete the temporary files a killed run left under a local output root (S3 keeps none: uploads
        are atomic). Assumes one job writes to a root at a time."""
        if is_s3(root) or not Path(root).is_dir():
            return 0
        stale = [path for path in Path(root).rglob(".*.partial-*") if path.is_file() and is_partial_name(path.name)]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)
