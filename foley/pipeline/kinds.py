"""The jobs over videos (dub, embed): their stages, the models they name, and what identifies their results.

A result is identified by what changes it, never by where the code or the models sit on a machine:

- the settings that change the output (a job kind's `settings`; a setting the run ignores is left out, such as
  the dtype on a CPU or the mapper's sampling steps under the deterministic zero-shot mapper);
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

from foley.config import ConditionsConfig, FoleyConfig
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
    settings: Callable[[FoleyConfig], dict] = field(hash=False)
    sound_design: bool = False  # takes per-video conditions from the input list, and still images

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


def decode_settings(config: FoleyConfig) -> dict:
    """How frames are decoded; the device only when it is the GPU, so results decoded on the CPU keep the identity
    they had before the setting existed."""
    return config.decode.model_dump(exclude=set() if config.decode.device == "cuda" else {"device"})


CUT_SETTINGS = {"cut_threshold", "min_shot_seconds", "cut_crossfade_seconds", "cut_detect_width"}


def window_settings(config: FoleyConfig) -> dict:
    """How windows are planned and embedded; not how they travel (segments change only which windows share a
    batch). The mean aggregator, which every result before the setting used, is left out, keeping their identity."""
    window = config.window
    exclude = {"segment_windows"} | (set() if window.cuts == "detect" else CUT_SETTINGS)
    return window.model_dump(exclude=exclude | ({"aggregator"} if window.aggregator == "mean" else set()))


def dub_settings(config: FoleyConfig) -> dict:
    mapper, audioldm, source = config.mapper, config.audioldm, config.input
    if mapper.checkpoint is None:  # deterministic: seeds, steps, guidance and sampler do not apply
        mapper_settings = mapper.model_dump(
            include={"zero_shot_top_k", "zero_shot_temperature", "zero_shot_image_prompt", "zero_shot_sound_prompt"}
        )
    else:
        mapper_settings = mapper.model_dump(include={"steps", "guidance_scale", "scheduler"})
    devices = stage_devices(config, ("decode_embed", "map", "synthesize"))
    audioldm_settings = audioldm.model_dump(include={"steps", "guidance_scale", "scheduler"})
    if devices["synthesize"] == "cuda":  # reduced precision applies on a GPU only
        audioldm_settings["dtype"] = audioldm.dtype
    if audioldm.candidates > 1:
        audioldm_settings["candidates"] = audioldm.candidates
    input_settings = {"existing_audio": source.existing_audio, "silence_threshold_dbfs": source.silence_threshold_dbfs}
    if source.existing_audio == "mix":
        input_settings["mix_gain_db"] = source.mix_gain_db
    return {
        "seed": config.seed,
        "devices": devices,
        "window": window_settings(config),
        "decode": decode_settings(config),
        "mapper": mapper_settings,
        "audioldm": audioldm_settings,
        "input": input_settings,
        "output": output_settings(config),
        **({"conditions": config.conditions.hashed()} if config.conditions.hashed() != DEFAULT_CONDITIONS else {}),
        # Where the CLAP ranks candidates or embeds the job's reference, how it reads a sound changes the result.
        **({"clap": clap_settings(config)} if config.uses_clap() else {}),
        **({"sources": config.sources.hashed()} if config.sources.mode != "off" else {}),
    }


DEFAULT_CONDITIONS = ConditionsConfig().hashed()
SOUND_DESIGN_OUTPUT = {
    "mode",
    "alternates",
    "alternate_title",
    "image_output",
    "image_seconds",
    "image_fps",
    "image_video_codec",
}

OUTPUT_CHECKS = {"max_dc_fraction"}  # decide whether a track is published, never what it sounds like


# The containers of the first release: their audio codecs stay in every video's hash, as when the results made then
# were identified. A container added since counts only in the hash of its own videos (container_settings).
JOB_WIDE_CONTAINERS = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def output_settings(config: FoleyConfig) -> dict:
    """How outputs are written; a setting only counts where it applies (image settings count per image)."""
    output = config.output
    settings = output.model_dump(exclude=SOUND_DESIGN_OUTPUT | OUTPUT_CHECKS)
    settings["audio_codecs"] = {
        suffix: codec for suffix, codec in output.audio_codecs.items() if suffix in JOB_WIDE_CONTAINERS
    }
    if output.mode != "mux":
        settings["mode"] = output.mode
    if output.alternates and config.audioldm.candidates > 1:
        settings |= output.model_dump(include={"alternates", "alternate_title"})
    return settings


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
    """How AudioLDM's CLAP reads a sound (its crop, rate, fusion, branch); its weights count as a model."""
    return config.clap.model_dump(exclude={"checkpoint"})


def embed_settings(config: FoleyConfig) -> dict:
    return {
        "devices": stage_devices(config, ("decode_embed", "clap_embed")),
        "window": window_settings(config),
        "decode": decode_settings(config),
        "clap": clap_settings(config),
        "input": {"silence_threshold_dbfs": config.input.silence_threshold_dbfs},
        **({"sources": config.sources.hashed()} if config.sources.mode != "off" else {}),
    }


DUB = JobKind(
    name="dub",
    stages=("decode_embed", "map", "synthesize", "mux"),
    models=("clip_model", "mapper_model", "audioldm_model", "clap_model", "detector_model"),
    settings=dub_settings,
    sound_design=True,
)
EMBED = JobKind(
    name="embed",
    stages=("decode_embed", "clap_embed", "write_pairs"),
    models=("clip_model", "clap_model", "detector_model"),
    settings=embed_settings,
)
