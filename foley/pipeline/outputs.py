"""The files a dub result writes, named from the input's relative path: the muxed video, a sidecar sound file
beside where the video goes, or, for a still image, a sound file or a still video. A shard's sample writes them
into the job's staging of that shard (`<output>/_foley/samples/<shard>/`), named as its members will be
(`<key>.flac`), until the output shard holds them (foley.pipeline.shards)."""

from __future__ import annotations

from pathlib import PurePosixPath

from foley.config import FoleyConfig
from foley.pipeline.layout import SAMPLES_DIR
from foley.storage.inputs import InputItem, is_image
from foley.storage.shards import sample_key
from foley.storage.uris import join

SIDECAR_SUFFIX = ".flac"  # lossless, and read by every dataset loader
STILL_VIDEO_SUFFIX = ".mp4"


def with_suffix(relative_path: str, suffix: str) -> str:
    return PurePosixPath(relative_path).with_suffix(suffix).as_posix()


def dub_outputs(output_root: str, item: InputItem, config: FoleyConfig) -> tuple[str, ...]:
    """Every file the input's result writes, the main one first (output.mode, output.image_output)."""
    path, output = item.relative_path, config.output
    if item.shard:
        member = path[len(item.shard) + 1 :]
        staging = join(output_root, f"{SAMPLES_DIR}/{item.shard}")
        video, sidecar = join(staging, member), join(staging, sample_key(member) + SIDECAR_SUFFIX)
        return {"mux": (video,), "audio": (sidecar,), "both": (video, sidecar)}[output.mode]
    if is_image(path, config.input.image_extensions):
        suffix = STILL_VIDEO_SUFFIX if output.image_output == "video" else f".{output.image_output}"
        return (join(output_root, with_suffix(path, suffix)),)
    video, sidecar = join(output_root, path), join(output_root, with_suffix(path, SIDECAR_SUFFIX))
    return {"mux": (video,), "audio": (sidecar,), "both": (video, sidecar)}[output.mode]
