"""Local folders and S3 buckets behind one small interface.

Inputs are read from a node-local copy; outputs are staged in a temporary file and published only when complete
(a rename on a local disk, one PUT or a completed multipart upload on S3), so a final path never holds a partial
file. Credentials come from the standard AWS chain and are never logged.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import posixpath
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from foley.config import StorageConfig

CONTENT_TYPES = {
    ".mp4": "video/mp4",
    ".mov": "video/quicktime",
    ".mkv": "video/x-matroska",
    ".webm": "video/webm",
    ".avi": "video/x-msvideo",
    ".parquet": "application/vnd.apache.parquet",
    ".json": "application/json",
    ".png": "image/png",
    ".safetensors": "application/octet-stream",
}
LIST_SUFFIXES = (".csv", ".parquet")


class StorageError(RuntimeError):
    """A storage problem that names the location and what to do about it."""


class UnsafePathError(StorageError):
    """A relative path that would escape the output root (`../x.mp4`, `/etc/x.mp4`)."""


@dataclass(frozen=True)
class InputItem:
    uri: str
    relative_path: str  # posix path under the output root, also the video's stable id


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


def join(root: str, relative: str) -> str:
    relative = safe_relative_path(relative)
    if is_s3(root):
        return root.rstrip("/") + "/" + relative
    return str(Path(root) / relative)


def _common_directory(uris: list[str]) -> str:
    """The deepest folder (ending in '/') that holds every URI; outputs mirror the paths below it."""
    folders = [uri.rsplit("/", 1)[0] + "/" for uri in uris]
    prefix = os.path.commonprefix(folders)
    return prefix[: prefix.rfind("/") + 1]


def _temporary_sibling(path: Path) -> Path:
    """A hidden name next to `path` that keeps its extension (ffmpeg picks the container from it)."""
    return path.with_name(f".{path.stem}.partial-{uuid.uuid4().hex[:8]}{path.suffix}")


class Storage:
    """Reads, lists and atomically writes local paths and s3:// URIs. Cheap to build; the S3 client is lazy."""

    def __init__(self, config: StorageConfig):
        self.config = config
        self._client = None

    # -- S3 client ---------------------------------------------------------------------------------------------
    @property
    def s3(self):
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.session.Session().client(
                "s3",
                endpoint_url=self.config.endpoint_url
                or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL"),
                region_name=self.config.region
                or os.environ.get("AWS_REGION")
                or os.environ.get("AWS_DEFAULT_REGION")
                or "us-east-1",
                config=Config(retries={"mode": "adaptive", "max_attempts": self.config.max_attempts}),
            )
        return self._client

    def __getstate__(self):  # boto3 clients do not pickle; each process makes its own
        return {"config": self.config, "_client": None}

    def _s3_call(self, what: str, uri: str, call, *args, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call(*args, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise StorageError(f"{what} {uri} failed: {error.get('Code', '?')} {error.get('Message', '')}".strip()) from None
        except BotoCoreError as exc:
            raise StorageError(f"{what} {uri} failed: {exc}") from None

    # -- listing -----------------------------------------------------------------------------------------------
    def list_inputs(self, source: str, extensions: tuple[str, ...]) -> list[InputItem]:
        """Every video under a folder or prefix (recursive, extensions case-insensitive), or the URIs of a list file."""
        if source.lower().endswith(LIST_SUFFIXES):
            return self._list_from_file(source)
        suffixes = tuple(e.lower() for e in extensions)
        if is_s3(source):
            prefix_uri = source if source.endswith("/") else source + "/"
            items = [
                InputItem(uri, uri[len(prefix_uri):])
                for uri in self.list_prefix(prefix_uri)
                if uri.lower().endswith(suffixes) and not uri.endswith("/")
            ]
        else:
            root = Path(source)
            if root.is_file():
                return [InputItem(str(root.resolve()), root.name)]
            if not root.is_dir():
                raise StorageError(f"input {source} is neither a folder, a video, nor a .csv/.parquet list of URIs")
            items = [
                InputItem(str(path.resolve()), path.relative_to(root).as_posix())
                for path in root.rglob("*")
                if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith(".")
            ]
        return sorted(items, key=lambda item: item.relative_path)

    def list_prefix(self, prefix_uri: str) -> list[str]:
        """All object URIs under an s3:// prefix (paginated), or all file paths under a local folder."""
        if not is_s3(prefix_uri):
            root = Path(prefix_uri)
            return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        bucket, prefix = split_s3(prefix_uri)
        uris = []
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = self._s3_call("listing", prefix_uri, lambda: list(paginator.paginate(Bucket=bucket, Prefix=prefix)))
        for page in pages:
            uris.extend(f"s3://{bucket}/{obj['Key']}" for obj in page.get("Contents", []))
        return uris

    def _list_from_file(self, source: str) -> list[InputItem]:
        data = self.read_bytes(source)
        if source.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            table = pq.read_table(io.BytesIO(data))
            if "uri" not in table.column_names:
                raise StorageError(f"input list {source} has no 'uri' column (columns: {table.column_names})")
            uris = [u for u in table.column("uri").to_pylist() if u]
        else:
            rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
            if rows and rows[0] and rows[0][0].strip().lower() == "uri":
                rows = rows[1:]
            uris = [row[0].strip() for row in rows if row and row[0].strip()]
        if not uris:
            raise StorageError(f"input list {source} holds no URIs; give one per line (a 'uri' column)")
        uris = [uri if is_s3(uri) else Path(uri).resolve().as_posix() for uri in uris]
        base = _common_directory(uris)
        items = [InputItem(uri, uri[len(base):]) for uri in uris]
        return sorted(items, key=lambda item: item.relative_path)

    # -- reading -----------------------------------------------------------------------------------------------
    def exists(self, uri: str) -> bool:
        if not is_s3(uri):
            return Path(uri).exists()
        from botocore.exceptions import ClientError

        bucket, key = split_s3(uri)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise StorageError(f"checking {uri} failed: {exc.response.get('Error', {}).get('Code')}") from None

    def read_bytes(self, uri: str) -> bytes:
        if not is_s3(uri):
            try:
                return Path(uri).read_bytes()
            except OSError as exc:
                raise StorageError(f"cannot read {uri}: {exc.strerror}") from None
        bucket, key = split_s3(uri)
        response = self._s3_call("reading", uri, self.s3.get_object, Bucket=bucket, Key=key)
        return response["Body"].read()

    def local_copy_path(self, uri: str) -> Path:
        """Where this node keeps its copy of a remote input (stable, so a later stage on the node can reuse it)."""
        digest = hashlib.sha256(uri.encode()).hexdigest()[:24]
        return Path(self.config.cache_dir) / "inputs" / f"{digest}{Path(split_s3(uri)[1]).suffix.lower()}"

    def fetch(self, uri: str) -> Path:
        """A local path holding the object: the path itself for local files, else a fresh node-local copy."""
        if not is_s3(uri):
            path = Path(uri)
            if not path.is_file():
                raise StorageError(f"input {uri} does not exist or is not a file")
            return path
        target = self.local_copy_path(uri)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = _temporary_sibling(target)
        bucket, key = split_s3(uri)
        try:
            self._s3_call("downloading", uri, self.s3.download_file, bucket, key, str(partial))
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        return target

    def fetch_tree(self, uri: str, destination: Path, names: tuple[str, ...] = ()) -> Path:
        """Copy an s3:// prefix (only `names` under it, when given) into `destination` once per node."""
        done_marker = destination / ".complete"
        if done_marker.exists():
            return destination
        bucket, key = split_s3(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        if names:
            objects = [f"s3://{bucket}/{prefix}{name}" for name in names]
        else:
            objects = [u for u in self.list_prefix(f"s3://{bucket}/{prefix}") if not u.endswith("/")]
        if not objects:
            raise StorageError(f"nothing found under {uri}; check the weights location")
        staging = destination.with_name(destination.name + f".partial-{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        try:
            for object_uri in objects:
                relative = safe_relative_path(split_s3(object_uri)[1][len(prefix):])
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                self._s3_call("downloading", object_uri, self.s3.download_file, bucket,
                              split_s3(object_uri)[1], str(staging / relative))
            (staging / ".complete").touch()
            try:
                os.rename(staging, destination)
            except OSError:  # another process on this node finished first
                if not done_marker.exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return destination

    # -- writing -----------------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def staged_output(self, uri: str, scratch: Path | None = None) -> Iterator[Path]:
        """Yield a temporary local path; on success publish it at `uri` in one step, on failure leave nothing."""
        if is_s3(uri):
            scratch = scratch or Path(self.config.cache_dir) / "outgoing"
            scratch.mkdir(parents=True, exist_ok=True)
            temporary = _temporary_sibling(scratch / posixpath.basename(split_s3(uri)[1]))
        else:
            final = Path(uri)
            final.parent.mkdir(parents=True, exist_ok=True)
            temporary = _temporary_sibling(final)
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
        content_type = CONTENT_TYPES.get(Path(key).suffix.lower(), "application/octet-stream")
        self._s3_call("uploading", uri, self.s3.upload_file, str(local), bucket, key,
                      ExtraArgs={"ContentType": content_type})

    def write_bytes(self, uri: str, data: bytes) -> None:
        with self.staged_output(uri) as temporary:
            temporary.write_bytes(data)

    def arrow_files(self, uris: list[str]) -> tuple[object | None, list[str]]:
        """(pyarrow filesystem, paths) for readers such as Ray Data's read_parquet; local files need none."""
        if not uris or not is_s3(uris[0]):
            return None, uris
        from pyarrow import fs

        endpoint = (self.config.endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3")
                    or os.environ.get("AWS_ENDPOINT_URL"))
        options = {"region": self.config.region or os.environ.get("AWS_REGION")
                   or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"}
        if endpoint:
            scheme, _, host = endpoint.partition("://")
            options.update(endpoint_override=host, scheme=scheme)
        return fs.S3FileSystem(**options), [uri.removeprefix("s3://") for uri in uris]

    def remove_partials(self, root: str) -> int:
        """Delete the temporary files a killed run left under a local output root (S3 keeps none: uploads
        are atomic). Assumes one job writes to a root at a time."""
        if is_s3(root) or not Path(root).is_dir():
            return 0
        stale = [path for path in Path(root).rglob(".*.partial-*") if path.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def delete(self, uri: str) -> None:
        if not is_s3(uri):
            Path(uri).unlink(missing_ok=True)
            return
        bucket, key = split_s3(uri)
        self._s3_call("deleting", uri, self.s3.delete_object, Bucket=bucket, Key=key)
