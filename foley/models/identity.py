"""What a model is, independent of where it sits on a machine: the identities that go into a job's hash.

- a local file or folder: the SHA-256 of its content (a folder: of every file's relative path and digest), cached
  per node by (path, size, mtime) so a large model is read once, not on every run;
- s3:// weights: the ETags and sizes of their objects (S3's own content fingerprints, no download);
- a hub model: its commit (the pinned revision, or the one `main` resolves to, from the hub or its local cache);
- an open_clip pretrained tag: the tag and the open_clip release that maps it to published files.

Moving the code or the models to another folder or machine changes none of these; retraining a mapper into the
same folder or prefix changes its identity.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from importlib.metadata import version
from pathlib import Path

from huggingface_hub import HfApi, constants

from foley.config import ConfigError
from foley.storage.store import Storage
from foley.storage.uris import is_s3, local_identity

log = logging.getLogger("foley.models")
DIGEST_CACHE = "digests.json"
HASH_CHUNK = 1 << 22
SHORT = 16  # hex digits kept of a digest: plenty to tell versions apart, short enough to read in a manifest
COMMIT = re.compile(r"[0-9a-f]{40}")


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class ModelIdentities:
    """Identities of weight locations, with a per-node cache of local file digests in storage.cache_dir."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self.cache_path = storage.cache_dir / DIGEST_CACHE
        try:
            self.cache: dict[str, list] = json.loads(self.cache_path.read_text())
        except (OSError, ValueError):
            self.cache = {}

    def of(self, location: str, revision: str | None = None) -> str:
        """The identity of weights at `location`: a local path, s3://, hf://REPO/FILE or a hub id."""
        if location.startswith("hf://"):
            owner, repo, filename = location.removeprefix("hf://").split("/", 2)
            return f"hf:{owner}/{repo}@{hub_revision(f'{owner}/{repo}', revision)}/{filename}"
        if is_s3(location):
            # One object (s3://b/m/weights.pt), or a folder (s3://b/models/v1.2/): told apart by what is there,
            # never by a dot in the name, and a folder's listing ends in '/', so v1.2 never takes in v1.20/.
            single = not location.endswith("/") and self.storage.exists(location)
            objects = self.storage.list_objects(location if single else location.rstrip("/") + "/")
            if single:
                objects = [(uri, identity) for uri, identity in objects if uri == location]
            relative = sorted((uri.removeprefix(location), identity) for uri, identity in objects)
            return "s3:" + _sha256_text(json.dumps(relative))[:SHORT]
        path = Path(location)
        if path.exists():
            return "sha256:" + self.local_digest(path)[:SHORT]
        return f"hub:{location}@{hub_revision(location, revision)}"

    def of_text_file(self, path: str) -> str:
        return "sha256:" + self.local_digest(Path(path))[:SHORT]

    def local_digest(self, path: Path) -> str:
        if path.is_file():
            return self._file_digest(path)
        files = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        return _sha256_text(json.dumps([(f.relative_to(path).as_posix(), self._file_digest(f)) for f in files]))

    def _file_digest(self, path: Path) -> str:
        key, stamp = str(path.resolve()), local_identity(path)
        cached = self.cache.get(key)
        if cached and cached[0] == stamp:
            return cached[1]
        digest = hashlib.sha256()
        with path.open("rb") as file:
            for chunk in iter(lambda: file.read(HASH_CHUNK), b""):
                digest.update(chunk)
        self.cache[key] = [stamp, digest.hexdigest()]
        return digest.hexdigest()

    def save(self) -> None:
        """Keep the digests for the next run on this node (written whole, then renamed). They only spare reading
        the weights again: where the cache's disk is full or read-only, the next run reads them again."""
        partial = self.cache_path.with_name(f".{DIGEST_CACHE}.{os.getpid()}")
        try:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps(self.cache))
            os.replace(partial, self.cache_path)
        except OSError as exc:
            log.warning("the model digests could not be kept in %s (%s); the next run computes them again", partial, exc)
            partial.unlink(missing_ok=True)


def open_clip_tag_identity(model: str, pretrained: str) -> str:
    return f"open_clip-{version('open_clip_torch')}:{model}:{pretrained}"


def hub_revision(repo_id: str, revision: str | None) -> str:
    """The commit a hub model resolves to: a pinned commit as it is, else from the hub, else its local cache."""
    if revision and COMMIT.fullmatch(revision):
        return revision
    if not constants.HF_HUB_OFFLINE:
        try:
            return HfApi().model_info(repo_id, revision=revision or "main").sha
        except Exception:  # noqa: BLE001 - no network or no access: the local cache may still know
            pass
    ref = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}" / "refs" / (revision or "main")
    if ref.is_file():
        return ref.read_text().strip()
    raise ConfigError(
        f"cannot tell which revision of hub model {repo_id!r} to use: the hub is out of reach and it is not in the "
        "local hub cache; pin its commit in the config (e.g. audioldm.revision=<40-hex commit>) or point the "
        "model key at a local folder or s3:// copy"
    )
