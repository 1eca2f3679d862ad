"""`Storage`: reading, listing, caching and publishing local paths and s3:// URIs through one object.

Each concern lives in its own module and is mixed in here; this module keeps the plain object operations (read,
exists, delete, list a prefix) and the lazily built S3 client they all share.
"""

from __future__ import annotations

from pathlib import Path

from foley.config import StorageConfig
from foley.storage.cache import NodeCache
from foley.storage.inputs import InputListing
from foley.storage.publish import StagedPublishing
from foley.storage.s3 import S3Settings, is_missing, s3_errors
from foley.storage.uris import StorageError, is_s3, split_s3


class Storage(InputListing, NodeCache, StagedPublishing):
    """Cheap to build and to send to Ray workers; the S3 client is made lazily in each process."""

    def __init__(self, config: StorageConfig):
        self.config = config
        self._client = None

    @property
    def s3(self):
        if self._client is None:
            self._client = S3Settings.from_config(self.config).boto3_client()
        return self._client

    def __getstate__(self):  # boto3 clients do not pickle; each process makes its own
        return {"config": self.config, "_client": None}

    def list_prefix(self, prefix_uri: str) -> list[str]:
        """All object URIs under an s3:// prefix (paginated), or all file paths under a local folder."""
        if not is_s3(prefix_uri):
            root = Path(prefix_uri)
            return sorted(str(p) for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
        bucket, prefix = split_s3(prefix_uri)
        paginator = self.s3.get_paginator("list_objects_v2")
        with s3_errors("listing", prefix_uri):
            pages = list(paginator.paginate(Bucket=bucket, Prefix=prefix))
        return [f"s3://{bucket}/{obj['Key']}" for page in pages for obj in page.get("Contents", [])]

    def exists(self, uri: str) -> bool:
        if not is_s3(uri):
            return Path(uri).exists()
        from botocore.exceptions import ClientError  # noqa: PLC0415 - only where S3 is used

        bucket, key = split_s3(uri)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if is_missing(exc):
                return False
            raise StorageError(f"checking {uri} failed: {exc.response.get('Error', {}).get('Code')}") from None

    def read_bytes(self, uri: str) -> bytes:
        if not is_s3(uri):
            try:
                return Path(uri).read_bytes()
            except OSError as exc:
                raise StorageError(f"cannot read {uri}: {exc.strerror}") from None
        bucket, key = split_s3(uri)
        with s3_errors("reading", uri):
            return self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()

    def delete(self, uri: str) -> None:
        if not is_s3(uri):
            Path(uri).unlink(missing_ok=True)
            return
        bucket, key = split_s3(uri)
        with s3_errors("deleting", uri):
            self.s3.delete_object(Bucket=bucket, Key=key)

    def arrow_files(self, uris: list[str]) -> tuple[object | None, list[str]]:
        """(pyarrow filesystem, paths) for readers such as Ray Data's read_parquet; local files need none."""
        if not uris or not is_s3(uris[0]):
            return None, uris
        return S3Settings.from_config(self.config).arrow_filesystem(), [uri.removeprefix("s3://") for uri in uris]
