"""Where model weights come from: a hub id, a local path, an s3:// prefix or an hf://REPO/FILE.

s3:// weights are copied once per node into the cache folder and then loaded like local ones, by the libraries'
own loaders.
"""

from __future__ import annotations

from pathlib import Path

from huggingface_hub import hf_hub_download

from foley.config import FoleyConfig
from foley.storage.store import Storage
from foley.storage.uris import is_s3, split_s3

# A mapper checkpoint: its weights and its architecture, side by side (foley.models.mapper writes and reads them).
# Named here, not in the mapper's module, so that the driver's checks before Ray read them without importing torch.
WEIGHTS_NAME, CONFIG_NAME = "mapper.safetensors", "mapper.json"


def local_weights(location: str, storage: Storage) -> str:
    """The location itself; for s3:// a node-local copy of that prefix or file; for hf://REPO/FILE the hub's
    cached copy of that file (the hub cache honours HF_HUB_OFFLINE)."""
    if location.startswith("hf://"):
        owner, repo, filename = location.removeprefix("hf://").split("/", 2)
        return hf_hub_download(f"{owner}/{repo}", filename)
    if not is_s3(location):
        return location
    folder_uri, names = location, ()
    if not location.endswith("/") and storage.exists(location):  # one object, such as .../open_clip_model.safetensors
        folder_uri, names = location.rsplit("/", 1)[0], (location.rsplit("/", 1)[1],)
    folder = storage.fetch_tree(folder_uri, names)
    return str(folder / names[0]) if names else str(folder)


def missing_weights(config: FoleyConfig) -> list[str]:
    """Local weight locations the config names that are not there, so a job fails before starting Ray."""
    problems = []
    clip_dir = config.clip.model.removeprefix("local-dir:") if config.clip.model.startswith("local-dir:") else None
    local = {
        "clip.model": clip_dir,
        "clip.pretrained": config.clip.pretrained if config.clip.pretrained and Path(config.clip.pretrained).suffix
        else None,
        "mapper.checkpoint": config.mapper.checkpoint,
        "clap.checkpoint": config.clap.checkpoint if config.uses_clap() and "://" not in config.clap.checkpoint else None,
        # A hub id (owner/name) cannot be told from a relative folder that is not there; an absolute path can.
        "sources.detector": config.sources.detector
        if config.sources.mode != "off" and Path(config.sources.detector).is_absolute()
        else None,
    }
    for key, location in local.items():
        if location and not is_s3(location) and not Path(location).exists():
            problems.append(f"{key} = {location!r}: no such file or folder")
    return problems
