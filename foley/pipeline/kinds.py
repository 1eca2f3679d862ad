"""The jobs over videos (dub, embed): their stages, the models they name, and what identifies their results.

A result is identified by what changes it, never by where the code or the models sit on a machine:

- the settings that change the output: every field of foley.config declares whether it counts (Identity), a job
  kind counts the sections it reads, and a setting the run ignores is left out (each section's inapplicable(),
  such as the dtype on a CPU or the mapper's sampling steps under the deterministic zero-shot mapper);
- the content of every model used (foley.models.identity);
- the content of the input (S3 ETag and size; local size and mtime) and where the output goes.

The first two make the job's config hash; with the last two they make each input's result id. A re-run skips an
input whose manifest row is ok (or skipped) under the same result id, and redoes it otherwise.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from foley.config import FoleyConfig
from foley.models.identity import ModelIdentities, open_clip_tag_identity

HASH_DIGITS = 16


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:HASH_DIGITS]


@dataclass(frozen=True)
class JobKind:
    """What differs between the jobs over videos: their stages, their models, the settings that change results."""

    name: str
    stages: tuple[str, ...]
    models: tuple[str, ...]  # manifest columns naming each model
    sections: tuple[str, ...]  # the config's top-level settings that can change this job's results
    model_stages: tuple[str, ...]  # the stages whose device changes the random draws
    moot: Callable[[FoleyConfig], set[str]] = field(hash=False)  # dotted settings this job ignores, as it is set
    sound_design: bool = False  # takes per-video conditions from the input list, and still images

    def settings(self, config: FoleyConfig) -> dict:
        """What of the config counts (each field declares it: foley.config.Identity), less what this run ignores,
        with the device of each model stage."""
        others = {name for name in FoleyConfig.model_fields if name not in self.sections}
        settings = config.counted(others | self.moot(config)) | {"devices": stage_devices(config, self.model_stages)}
        if "output" in settings:
            settings["output"]["audio_codecs"] = job_wide_codecs(config)
        return settings

    def config_hash(self, config: FoleyConfig, model_identities: dict[str, str]) -> str:
        """Equal hashes mean equal outputs for equal inputs."""
        return _digest({"settings": self.settings(config), "models": model_identities})

    def used_models(self, config: FoleyConfig) -> tuple[str, ...]:
        """The models this run uses: the dub job reads AudioLDM's CLAP only to rank candidates or embed a reference,
        and runs the source detector only with sound sources on."""
        unused = set()
        if self.sound_design and not config.uses_clap():
            unused.add("clap_model")
        if config.sources.mode == "off":
            unused.add("detector_model")
        return tuple(model for model in self.models if model not in unused)

    def model_ids(self, config: FoleyConfig) -> dict[str, str]:
        """Where this job's models come from (manifest columns, for reading; not part of the hash)."""
        used = self.used_models(config)
        return {
            model: value if model in used else "" for model, value in config.model_ids().items() if model in self.models
        }

    def model_identities(self, config: FoleyConfig, identities: ModelIdentities) -> dict[str, str]:
        """The identity of each model this run uses (computed once per job, in the driver)."""
        every = {
            "clip_model": lambda: clip_identity(config, identities),
            "mapper_model": lambda: mapper_identity(config, identities),
            "audioldm_model": lambda: identities.of(config.audioldm.model, config.audioldm.revision),
            "clap_model": lambda: identities.of(config.clap.checkpoint),
            "detector_model": lambda: (
                identities.of(config.sources.detector) + ":labels=" + identities.of_text_file(config.source_labels())
            ),
        }
        return {model: every[model]() for model in self.used_models(config)}


def result_id(config_hash: str, input_identity: str, output_uri: str) -> str:
    """One input's result: this job's settings and models, this content of the input, this output location."""
    return _digest([config_hash, input_identity, output_uri])


def clip_identity(config: FoleyConfig, identities: ModelIdentities) -> str:
    clip = config.clip
    if clip.model.startswith("local-dir:"):  # open_clip reads config and weights from the folder
        return identities.of(clip.model.removeprefix("local-dir:"))
    if clip.pretrained and ("://" in clip.pretrained or Path(clip.pretrained).suffix):
        return f"{clip.model}:" + identities.of(clip.pretrained)  # a checkpoint file
    return open_clip_tag_identity(clip.model, clip.pretrained or "random-init")


def mapper_identity(config: FoleyConfig, identities: ModelIdentities) -> str:
    if config.mapper.checkpoint is None:
        return "zero-shot:labels=" + identities.of_text_file(config.mapper.zero_shot_labels)
    return identities.of(config.mapper.checkpoint)


def stage_devices(config: FoleyConfig, stages: tuple[str, ...]) -> dict[str, str]:
    """CPU and CUDA generators draw different noise, so the device of each model stage is part of a result."""
    return {stage: getattr(config.stages, stage).device(config.device) for stage in stages}


# The containers of the first release: their audio codecs stay in every video's hash, as when the results made then
# were identified. A container added since counts only in the hash of its own videos (container_settings).
JOB_WIDE_CONTAINERS = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def job_wide_codecs(config: FoleyConfig) -> dict[str, str]:
    return {suffix: codec for suffix, codec in config.output.audio_codecs.items() if suffix in JOB_WIDE_CONTAINERS}


def container_settings(config: FoleyConfig, output_uri: str) -> dict:
    """What a video's output container adds to its hash: its audio codec, for a container not JOB_WIDE."""
    suffix = PurePosixPath(output_uri).suffix.lower()
    if suffix in JOB_WIDE_CONTAINERS or suffix not in config.output.audio_codecs:
        return {}
    return {"audio_codec": config.output.audio_codecs[suffix]}


def image_settings(config: FoleyConfig) -> dict:
    """What makes a still image's output, on top of the job's settings."""
    include = {"image_output", "image_seconds"} | (
        {"image_fps", "image_video_codec"} if config.output.image_output == "video" else set()
    )
    return config.output.model_dump(include=include)


def clap_settings(config: FoleyConfig) -> dict:
    """How AudioLDM's CLAP reads a sound, for a video whose own reference sound it embeds."""
    return config.clap.counted()


def dub_moot(config: FoleyConfig) -> set[str]:
    """The dub job reads AudioLDM's CLAP only to rank candidates or embed the job's reference sound."""
    return set() if config.uses_clap() else {"clap"}


def embed_moot(config: FoleyConfig) -> set[str]:
    """jobs.embed reads a video's sound as it is: what the dub job does with existing sound does not apply."""
    return {"input.existing_audio", "input.mix_gain_db"}


DUB = JobKind(
    name="dub",
    stages=("decode_embed", "map", "synthesize", "mux"),
    models=("clip_model", "mapper_model", "audioldm_model", "clap_model", "detector_model"),
    sections=("seed", "window", "decode", "mapper", "audioldm", "conditions", "clap", "sources", "input", "output"),
    model_stages=("decode_embed", "map", "synthesize"),
    moot=dub_moot,
    sound_design=True,
)
EMBED = JobKind(
    name="embed",
    stages=("decode_embed", "clap_embed", "write_pairs"),
    models=("clip_model", "clap_model", "detector_model"),
    sections=("window", "decode", "clap", "sources", "input"),
    model_stages=("decode_embed", "clap_embed"),
    moot=embed_moot,
)
