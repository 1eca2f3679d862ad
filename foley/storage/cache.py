"""The node-local cache (storage.cache_dir): copies of remote inputs and weights that this node's stages read.

An input copy is named after the input's URI and content identity, so a replaced object is never read from a stale
copy; a stage that needs the input on its node fetches it there if absent, and the job's last stage removes the
copies on every node that made them. Weights under an s3:// prefix are copied once per node into a folder named
after their ETags, each file checked against its ETag (its MD5) where S3 gives one, and marked complete only when
every file is there.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from foley.storage.publish import local_write_failed, md5_hex, temporary_sibling
from foley.storage.shards import Member, member_of, read_range
from foley.storage.uris import StorageError, is_s3, safe_relative_path, split_s3

INPUTS_DIR, WEIGHTS_DIR = "inputs", "weights"
COMPLETE_MARKER = ".complete"


class NodeCache:
    """Storage's node-local copies (mixed into Storage, whose s3 client, cache_dir and list_objects it uses)."""

    def local_copy_path(self, uri: str, identity: str) -> Path:
        """Where this node keeps its copy of a remote input (or a shard's member) of this content."""
        digest = hashlib.sha256(f"{uri}|{identity}".encode()).hexdigest()[:24]
        name = sample[1].name if (sample := member_of(uri, identity)) else split_s3(uri)[1]
        return self.cache_dir / INPUTS_DIR / f"{digest}{PurePosixPath(name).suffix.lower()}"

    @staticmethod
    def is_copied(uri: str, identity: str) -> bool:
        """Whether a stage reads this input from a node-local copy (an S3 object, a shard's member)."""
        return is_s3(uri) or member_of(uri, identity) is not None

    def fetch(self, uri: str, identity: str = "") -> Path:
        """A local path holding the input: the path itself for local files, else this node's copy, made if absent
        (of a shard's member: just its bytes, read from their range in the shard)."""
        if sample := member_of(uri, identity):
            return self._fetch_member(uri, identity, *sample)
        if not is_s3(uri):
            path = Path(uri)
            if not path.is_file():
                raise StorageError(f"input {uri} does not exist or is not a file")
            return path
        target = self.local_copy_path(uri, identity)
        if target.is_file():  # published whole by an earlier stage on this node
            return target
        bucket, key = split_s3(uri)

        def download(partial: Path) -> None:
            self.s3_call("downloading", uri, lambda: self.s3.download_file(bucket, key, str(partial)))

        return self._copy_whole(target, download)

    def _fetch_member(self, uri: str, identity: str, shard: str, member: Member) -> Path:
        target = self.local_copy_path(uri, identity)
        if target.is_file():
            return target
        if is_s3(shard):
            bucket, key = split_s3(shard)
            span = f"bytes={member.offset}-{member.offset + member.size - 1}"
            data = self.s3_call(
                "reading", uri, lambda: self.s3.get_object(Bucket=bucket, Key=key, Range=span)["Body"].read()
            )
        else:
            try:
                data = read_range(Path(shard), member)
            except OSError as exc:
                raise StorageError(f"cannot read {uri}: {exc.strerror}") from None
        if len(data) != member.size:
            raise StorageError(
                f"{uri}: the shard holds {len(data)} of the member's {member.size} bytes (it changed or was cut short "
                "since the job listed it); run the job again"
            )
        return self._copy_whole(target, lambda partial: partial.write_bytes(data))

    @staticmethod
    def _copy_whole(target: Path, write: Callable[[Path], object]) -> Path:
        """`write` the copy beside `target`, then publish it whole: a reader on this node never sees a part."""
        partial = temporary_sibling(target)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write(partial)
            os.replace(partial, target)
        except OSError as exc:  # the cache's disk: full, or not writable
            raise local_write_failed(target, exc) from None
        finally:
            partial.unlink(missing_ok=True)
        return target

    def remove_copy(self, uri: str, identity: str) -> None:
        if self.is_copied(uri, identity):
            self.local_copy_path(uri, identity).unlink(missing_ok=True)

    def fetch_tree(self, uri: str, names: tuple[str, ...] = ()) -> Path:
        """This node's copy of an s3:// prefix (only `names` under it, when given), made once per content."""
        bucket, key = split_s3(uri)
        prefix = key.rstrip("/") + "/" if key else ""
        listed = dict(self.list_objects(f"s3://{bucket}/{prefix}"))
        wanted = [f"s3://{bucket}/{prefix}{name}" for name in names] or [u for u in listed if not u.endswith("/")]
        if missing := [u for u in wanted if u not in listed]:
            raise StorageError(f"weights not found: {', '.join(missing)}; check the weights location")
        if not wanted:
            raise StorageError(f"nothing found under {uri}; check the weights location")
        content = "|".join(f"{u}={listed[u]}" for u in sorted(wanted))
        destination = self.cache_dir / WEIGHTS_DIR / hashlib.sha256(content.encode()).hexdigest()[:24]
        if (destination / COMPLETE_MARKER).exists():
            return destination
        staging = destination.with_name(destination.name + f".partial-{uuid.uuid4().hex[:8]}")
        staging.mkdir(parents=True)
        try:
            for object_uri in wanted:
                local = staging / safe_relative_path(split_s3(object_uri)[1][len(prefix) :])
                local.parent.mkdir(parents=True, exist_ok=True)
                self.s3_call(
                    "downloading",
                    object_uri,
                    functools.partial(self.s3.download_file, bucket, split_s3(object_uri)[1], str(local)),
                )
                self._check_download(object_uri, listed[object_uri], local)
            (staging / COMPLETE_MARKER).write_text(content)
            try:
                os.rename(staging, destination)
            except OSError:  # another process on this node finished first
                if not (destination / COMPLETE_MARKER).exists():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return destination

    @staticmethod
    def _check_download(uri: str, identity: str, local: Path) -> None:
        """A single-part upload's ETag is its MD5: check the copy against it (multipart ETags are not MD5s)."""
        etag = identity.split(":")[1]
        if "-" not in etag and len(etag) == 32 and md5_hex(local) != etag:
            raise StorageError(f"the copy of {uri} does not match its ETag (corrupted download); run the job again")
