"""Staged publishing: an output is written to a temporary file and appears at its final location only whole.

Locally that is a rename in the target's folder; on S3 one PUT or a completed multipart upload, so a crash never
leaves a partial object at a final key.
"""

from __future__ import annotations

import contextlib
import mimetypes
import os
import posixpath
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from foley.storage.s3 import s3_errors
from foley.storage.uris import StorageError, is_s3, split_s3

CONDITIONAL_PUT_ATTEMPTS = 5
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
    """A hidden name next to `path` that keeps its extension (ffmpeg picks the container from it)."""
    return path.with_name(f".{path.stem}.partial-{uuid.uuid4().hex[:PARTIAL_TOKEN_HEX]}{path.suffix}")


def is_partial_name(name: str) -> bool:
    """Whether a file name is one the job deletes as a partial file left by a killed run."""
    return PARTIAL_NAME.fullmatch(name) is not None


class StagedPublishing:
    """Storage's writing side (mixed into Storage, whose s3 client and config it uses)."""

    @contextlib.contextmanager
    def staged_output(self, uri: str, scratch: Path | None = None) -> Iterator[Path]:
        """Yield a temporary local path; on success publish it at `uri` in one step, on failure leave nothing."""
        if is_s3(uri):
            scratch = scratch or self.cache_dir / "outgoing"
            scratch.mkdir(parents=True, exist_ok=True)
            temporary = temporary_sibling(scratch / posixpath.basename(split_s3(uri)[1]))
        else:
            final = Path(uri)
            final.parent.mkdir(parents=True, exist_ok=True)
            temporary = temporary_sibling(final)
        try:
            yield temporary
            self.publish(temporary, uri)
        finally:
            temporary.unlink(missing_ok=True)

    def publish(self, local: Path, uri: str) -> None:
        if not is_s3(uri):
            final = Path(uri)
            final.parent.mkdir(parents=True, exist_ok=True)
            if local.parent == final.parent:
                os.replace(local, final)
            else:  # another file system: copy next to the target first, then rename
                with tempfile.NamedTemporaryFile(dir=final.parent, prefix=f".{final.name}.", delete=False) as tmp:
                    shutil.copyfile(local, tmp.name)
                os.replace(tmp.name, final)
            return
        bucket, key = split_s3(uri)
        with s3_errors("uploading", uri):
            self.s3.upload_file(str(local), bucket, key, ExtraArgs={"ContentType": content_type(key)})

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self.staged_output(uri) as temporary:
            temporary.write_bytes(data)

    def create_exclusive(self, uri: str, data: bytes) -> bool:
        """Write `uri` only if nothing is there yet, in one step; False if something was. Of several writers racing
        for one name, exactly one gets True (a local O_EXCL create; an S3 conditional PUT, If-None-Match: *)."""
        if not is_s3(uri):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            try:
                descriptor = os.open(uri, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return False
            with os.fdopen(descriptor, "wb") as file:
                file.write(data)
            return True
        from botocore.exceptions import ClientError  # noqa: PLC0415 - only where S3 is used

        bucket, key = split_s3(uri)
        for _ in range(CONDITIONAL_PUT_ATTEMPTS):
            try:
                self.s3.put_object(Bucket=bucket, Key=key, Body=data, IfNoneMatch="*")
                return True
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code")
                if code == "PreconditionFailed":
                    return False
                if code != "ConditionalRequestConflict":  # that one means a concurrent conditional write: again
                    with s3_errors("writing", uri):
                        raise
        raise StorageError(f"writing {uri} kept conflicting with concurrent writers")

    def remove_partials(self, root: str) -> int:
        """Delete the temporary files a killed run left under a local output root (S3 keeps none: uploads
        are atomic). Assumes one job writes to a root at a time."""
        if is_s3(root) or not Path(root).is_dir():
            return 0
        stale = [path for path in Path(root).rglob(".*.partial-*") if path.is_file() and is_partial_name(path.name)]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)
