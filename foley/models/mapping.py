"""The mapper a job uses to turn CLIP embeddings into CLAP ones: the trained V2A-Mapper the config names, or the
zero-shot mapper when it names none."""

from __future__ import annotations

from pathlib import Path

import torch

from foley.config import FoleyConfig, MapperConfig
from foley.models.zero_shot import build_zero_shot_mapper
from foley.storage.store import Storage
from foley.storage.uris import is_s3


def load_mapper(config: FoleyConfig, storage: Storage, device: torch.device):
    """The trained V2A-Mapper the config names, or the zero-shot mapper when it names none."""
    if config.mapper.checkpoint is None:
        return build_zero_shot_mapper(config, storage, device)
    return load_trained_mapper(config.mapper, storage, device)


def load_trained_mapper(config: MapperConfig, storage: Storage, device: torch.device):
    """The trained mapper from a folder, a .safetensors file (its .json beside it) or the s3:// equivalents."""
    # The mapper's module imports diffusers (~5 s): imported where the mapper is built, since a job's driver imports
    # this module with its stages and builds no model.
    from foley.models.mapper import CONFIG_NAME, WEIGHTS_NAME, read_mapper  # noqa: PLC0415

    location = config.checkpoint
    if location is None:
        raise ValueError("mapper.checkpoint is not set")
    if is_s3(location):
        if location.endswith(".safetensors"):
            folder_uri, weights = location.rsplit("/", 1)
            names = (weights, weights.removesuffix(".safetensors") + ".json")
        else:
            folder_uri, names = location.rstrip("/"), (WEIGHTS_NAME, CONFIG_NAME)
        return read_mapper(storage.fetch_tree(folder_uri, names) / names[0], device)
    return read_mapper(Path(location), device)
