"""The node-local cache (storage.cache_dir): copies of remote inputs and weights that this node's stages read.

Remote inputs are downloaded to a stable name, so a later stage on the same node finds the copy; weights under
an s3:// prefix are copied once per node and marked complete only when every file is there.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path

from foley.storage.publish import temporary_sibling
from foley.storage.s3 import s3_errors
from foley.storage.uris import StorageError, is_s3, safe_relative_path, split_s3


class NodeCache:
    """Storage's node-local copies (mixed into Storage, whose s3 client, config and list_prefix it uses)."""

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
        partial = temporary_sibling(target)
        bucket, key = split_s3(uri)
        try:
            with s3_errors("downloading", uri):
                self.s3.download_file(bucket, key, str(partial))
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
                relative = safe_relative_path(split_s3(object_uri)[1][len(prefix) :])
                (staging / relative).parent.mkdir(parents=True, exist_ok=True)
                with s3_errors("downloading", object_uri):
                    self.s3.download_file(bucket, split_s3(object_uri)[1], str(staging / relative))
            (staging / ".complete").touch()
            try:
                os.rename(staging, destination)
            except OSError:  # another process on this node finished first
                if not done_marker.exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return destination
