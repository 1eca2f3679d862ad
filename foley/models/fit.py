"""Whether the configured models fit each other, read from their small config files before a job starts Ray: a
mapper trained for one CLIP would otherwise fail every video, one by one, on the workers."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path, PurePosixPath

from foley.config import FoleyConfig
from foley.models.weights import CONFIG_NAME
from foley.storage.store import Storage
from foley.storage.uris import is_s3, join

OPEN_CLIP_CONFIG = "open_clip_config.json"  # what an open_clip 'local-dir:' folder holds beside its weights


def clip_embed_dim(config: FoleyConfig, storage: Storage) -> int | None:
    """The width of the configured CLIP's image embeddings, or None for a model name open_clip does not ship."""
    if config.clip.model.startswith("local-dir:"):
        folder = config.clip.model.removeprefix("local-dir:")
        return json.loads(storage.read_bytes(join(folder, OPEN_CLIP_CONFIG)))["model_cfg"]["embed_dim"]
    # open_clip ships its architectures as JSON files; read the one named without importing open_clip (~7 s).
    package = importlib.util.find_spec("open_clip").submodule_search_locations[0]
    path = Path(package) / "model_configs" / f"{config.clip.model}.json"
    return json.loads(path.read_text())["embed_dim"] if path.is_file() else None


def mapper_architecture(location: str, storage: Storage) -> dict:
    """The architecture (mapper.json) of a mapper checkpoint: a folder or prefix, or its .safetensors file."""
    if PurePosixPath(location).suffix == ".safetensors":
        config_uri = location.removesuffix(".safetensors") + ".json"
    else:
        config_uri = join(location, CONFIG_NAME) if is_s3(location) or Path(location).is_dir() else location
    return json.loads(storage.read_bytes(config_uri))


def misfit_models(config: FoleyConfig, storage: Storage) -> list[str]:
    """What in the configured models does not fit together, with the fix; empty when they fit."""
    if not config.mapper.checkpoint:  # the zero-shot mapper works in whatever space the CLIP has
        return []
    clip_dim = clip_embed_dim(config, storage)
    architecture = mapper_architecture(config.mapper.checkpoint, storage)
    mapper_dim, remixer = int(architecture["clip_dim"]), architecture.get("variant") == "source-remixer"
    misfits = []
    if clip_dim is not None and clip_dim != mapper_dim:
        misfits.append(
            f"mapper.checkpoint = {config.mapper.checkpoint!r} maps {mapper_dim}-d CLIP embeddings, but clip.model "
            f"= {config.clip.model!r} makes {clip_dim}-d ones; use the CLIP the mapper was trained with, or train a "
            "mapper for this CLIP (python -m jobs.train_mapper)"
        )
    if remixer != (config.sources.mode == "remixer"):
        misfits.append(
            f"mapper.checkpoint = {config.mapper.checkpoint!r} is a source remixer, which needs sources.mode=remixer"
            if remixer
            else f"sources.mode=remixer needs a mapper.checkpoint trained with train.variant=source-remixer; "
            f"{config.mapper.checkpoint!r} is a {architecture.get('variant', 'diffusion-transformer')}"
        )
    temporal = architecture.get("variant") == "temporal-aggregator"
    if temporal != (config.window.aggregator == "learned"):
        misfits.append(
            f"mapper.checkpoint = {config.mapper.checkpoint!r} is a temporal aggregator, which needs "
            "window.aggregator=learned"
            if temporal
            else f"window.aggregator=learned needs a mapper.checkpoint trained with train.variant=temporal-aggregator; "
            f"{config.mapper.checkpoint!r} is a {architecture.get('variant', 'diffusion-transformer')}"
        )
    if temporal and int(architecture["frames"]) != config.window.frames:
        misfits.append(
            f"mapper.checkpoint = {config.mapper.checkpoint!r} aggregates {architecture['frames']} frames per window, "
            f"but window.frames = {config.window.frames}; sample as many frames as it was trained with"
        )
    return misfits
