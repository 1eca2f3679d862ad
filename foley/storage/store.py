"""`Storage`: reading, listing, caching and publishing local paths and s3:// URIs through one object.

Each concern lives in its own module and is mixed in here; this module keeps the plain object operations (read,
exists, delete, list a prefix) and the lazily built S3 client they all share.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar

from foley.config import StorageConfig
from foley.storage.cache import NodeCache
from foley.storage.inputs import InputListing
from foley.storage.publish import StagedPublishing
from foley.storage.s3 import S3Settings, is_missing, is_transient, retried, s3_errors
from foley.storage.uris import StorageError, is_s3, local_identity, s3_identity, split_s3

DELETE_BATCH = 1000  # keys per S3 DeleteObjects request, its most
CACHE_DIR_ENV = "FOLEY_CACHE_DIR"  # set per node where nodes share a disk (e.g. test clusters on one machine)
T = TypeVar("T")


class Storage(InputListing, NodeCache, StagedPublishing):
    """Cheap to build and to send to Ray workers; the S3 client is made lazily in each process."""

    def __init__(self, config: StorageConfig):
        self.config = config
        self._client = None

    @property
    def cache_dir(self) -> Path:
        """This node's cache folder: storage.cache_dir, unless the node's own environment names another."""
        return Path(os.environ.get(CACHE_DIR_ENV) or self.config.cache_dir)

    @property
    def s3(self):
        if self._client is None:
            self._client = S3Settings.from_config(self.config).boto3_client()
        return self._client

    def __getstate__(self):  # boto3 clients do not pickle; each process makes its own
        return {"config": self.config, "_client": None}

    def retry(self, call: Callable[[], T]) -> T:
        """`call()`, tried again after a broken connection or a body cut short (foley.storage.s3.retried)."""
        return retried(call, self.config.max_attempts, self.config.retry_base_s)

    def s3_call(self, what: str, uri: str, call: Callable[[], T]) -> T:
        """An S3 exchange, body included, retried like `retry`, its failure a StorageError saying what was done
        to which object."""
        try:
            with s3_errors(what, uri):
                return self.retry(call)
        except Exception as exc:
            if not is_transient(exc):  # a local error (a full disk under a download) stays what it is
                raise
            raise StorageError(f"{what} {uri} failed: {type(exc).__name__}: {exc}") from None

    def list_prefix(self, prefix_uri: str) -> list[str]:
        """All object URIs under an s3:// prefix (paginated), or all file paths under a local folder."""
        return [uri for uri, _ in self.list_objects(prefix_uri)]

    def list_objects(self, prefix_uri: str, recursive: bool = True) -> list[tuple[str, str]]:
        """(URI, content identity) of every object under an s3:// prefix or file under a local folder; with
        recursive=False, of an S3 folder's own objects only (not those in its subfolders)."""
        if not is_s3(prefix_uri):
            root = Path(prefix_uri)
            files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
            return [(str(path), local_identity(path)) for path in files]
        bucket, prefix = split_s3(prefix_uri)
        paginator = self.s3.get_paginator("list_objects_v2")
        folders = {} if recursive else {"Delimiter": "/"}
        listing = functools.partial(paginator.paginate, Bucket=bucket, Prefix=prefix, **folders)
        pages = self.s3_call("listing", prefix_uri, lambda: list(listing()))
        return [
            (f"s3://{bucket}/{obj['Key']}", s3_identity(obj["ETag"], obj["Size"]))
            for page in pages
            for obj in page.get("Contents", [])
        ]

    def sizes(self, uris: list[str], root: str) -> dict[str, int]:
        """The size of each of these files or objects that exists (all under `root`): local ones by a stat each,
        S3 ones by listing `root` (a request per 1,000 objects, not one per file), keeping only those asked for."""
        if not is_s3(root):
            found = {}
            for uri in uris:
                with contextlib.suppress(OSError):
                    found[uri] = os.stat(uri).st_size
            return found
        wanted, found = set(uris), {}
        bucket, prefix = split_s3(root.rstrip("/") + "/")
        paginator = self.s3.get_paginator("list_objects_v2")

        def listing() -> None:
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    if (uri := f"s3://{bucket}/{obj['Key']}") in wanted:
                        found[uri] = int(obj["Size"])

        self.s3_call("listing", root, listing)
        return found

    def identity(self, uri: str) -> str:
        """What the object's content is (see foley.storage.uris): S3's ETag and size, or a local size and mtime."""
        if not is_s3(uri):
            path = Path(uri)
            return local_identity(path) if path.is_file() else ""
        head = self._head(uri)
        return s3_identity(head["ETag"], head["ContentLength"]) if head else ""  # a missing one fails its row later

    def size(self, uri: str) -> int | None:
        """The file's or object's size in bytes, or None when there is none."""
        if not is_s3(uri):
            with contextlib.suppress(OSError):
                return os.stat(uri).st_size
            return None
        head = self._head(uri)
        return int(head["ContentLength"]) if head else None

    def _head(self, uri: str) -> dict | None:
        """The object's HEAD answer, or None if there is no such object."""
        from botocore.exceptions import ClientError  # noqa: PLC0415 - only where S3 is used

        bucket, key = split_s3(uri)

        def head() -> dict | None:
            try:
                return self.s3.head_object(Bucket=bucket, Key=key)
            except ClientError as exc:
                if is_missing(exc):
                    return None
                raise

        return self.s3_call("checking", uri, head)

    def exists(self, uri: str) -> bool:
        if not is_s3(uri):
            return Path(uri).exists()
        return self._head(uri) is not None

    def read_bytes(self, uri: str) -> bytes:
        if not is_s3(uri):
            try:
                return Path(uri).read_bytes()
            except OSError as exc:
                raise StorageError(f"cannot read {uri}: {exc.strerror}") from None
        bucket, key = split_s3(uri)
        return self.s3_call("reading", uri, lambda: self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())

    @contextlib.contextmanager
    def reading(self, uri: str) -> Iterator[BinaryIO]:
        """The file or object as a stream read front to back (never whole in memory, never copied to disk)."""
        if not is_s3(uri):
            try:
                stream = open(uri, "rb")  # noqa: SIM115 - closed below
            except OSError as exc:
                raise StorageError(f"cannot read {uri}: {exc.strerror}") from None
        else:
            bucket, key = split_s3(uri)
            stream = self.s3_call("reading", uri, lambda: self.s3.get_object(Bucket=bucket, Key=key)["Body"])
        try:
            yield stream
        finally:
            stream.close()

    def delete(self, uri: str) -> None:
        if not is_s3(uri):
            Path(uri).unlink(missing_ok=True)
            return
        bucket, key = split_s3(uri)
        self.s3_call("deleting", uri, lambda: self.s3.delete_object(Bucket=bucket, Key=key))

    def read_many(self, uris: list[str]) -> list[bytes]:
        """The content of each object, in order, read storage.parallel_requests at a time."""
        with ThreadPoolExecutor(self.config.parallel_requests) as pool:
            return list(pool.map(self.read_bytes, uris))

    def delete_many(self, uris: list[str]) -> None:
        """Delete these objects: in S3, 1,000 keys per request (DeleteObjects); local files one by one."""
        by_bucket: dict[str, list[str]] = defaultdict(list)
        for uri in uris:
            if is_s3(uri):
                bucket, key = split_s3(uri)
                by_bucket[bucket].append(key)
            else:
                Path(uri).unlink(missing_ok=True)
        for bucket, keys in by_bucket.items():
            for start in range(0, len(keys), DELETE_BATCH):
                chunk = keys[start : start + DELETE_BATCH]
                objects = {"Objects": [{"Key": key} for key in chunk], "Quiet": True}
                request = functools.partial(self.s3.delete_objects, Bucket=bucket, Delete=objects)
                answer = self.s3_call("deleting", f"s3://{bucket}/{chunk[0]}", request)
                if errors := answer.get("Errors"):
                    raise StorageError(
                        f"deleting s3://{bucket}/{errors[0]['Key']} failed: {errors[0].get('Code')}"
                        + (f" (and {len(errors) - 1} more)" if errors[1:] else "")
                    )

    def arrow_files(self, uris: list[str]) -> tuple[object | None, list[str]]:
        """(pyarrow filesystem, paths) for readers such as Ray Data's read_parquet; local files need none."""
        if not uris or not is_s3(uris[0]):
            return None, uris
        return S3Settings.from_config(self.config).arrow_filesystem(), [uri.removeprefix("s3://") for uri in uris]
