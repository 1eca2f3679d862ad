"""The one typed configuration of every job: YAML presets in configs/, overridable with `key.path=value`.

Everything a run depends on lives here, so stage code holds no magic numbers. Validation happens before any
work starts; a bad key or value raises ConfigError naming the key, the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo


class ConfigError(ValueError):
    """A configuration problem the user must fix; the message says which key and how."""


class ConfigLoader(yaml.SafeLoader):
    """YAML as version 1.2 reads it: only true and false are booleans. YAML 1.1 (PyYAML's default) also reads off,
    on, yes and no as booleans, so `sources.mode=off` would arrive as False; here they stay the words a setting's
    choices name, and a yes/no setting still takes them (pydantic reads "on", "off", "yes", "no" as booleans)."""


ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
ConfigLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def read_yaml(text: str) -> Any:
    return yaml.load(text, Loader=ConfigLoader)  # noqa: S506 - a SafeLoader subclass


class Identity(Enum):
    """Whether a setting is part of a result's identity, declared on every field of the config: a result is
    identified by what changes it (foley.pipeline.kinds hashes what counts), so a new setting must say which."""

    COUNTED = "counted"
    NOT_COUNTED = "not counted"  # how a job runs, or where a model sits (its content counts as the model's)
    COUNTED_UNLESS_DEFAULT = "counted unless default"  # results made before it existed keep the identity they had


T = TypeVar("T")
Counted = Annotated[T, Identity.COUNTED]
NotCounted = Annotated[T, Identity.NOT_COUNTED]
CountedUnlessDefault = Annotated[T, Identity.COUNTED_UNLESS_DEFAULT]


def declared_identity(field: FieldInfo) -> Identity | None:
    return next((item for item in field.metadata if isinstance(item, Identity)), None)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def inapplicable(self) -> set[str]:
        """The (dotted) settings of this section that the run ignores, as it is set: they count in no result."""
        return set()

    def counted(self, leave_out: set[str] = frozenset(), prefix: str = "") -> dict:
        """The settings that make a result's identity, by each field's declaration, less those that do not apply
        (this section's own inapplicable(), and `leave_out`, dotted from the config's root)."""
        counted = {}
        ignored = leave_out | {prefix + name for name in self.inapplicable()}
        for name, field in type(self).model_fields.items():
            identity = declared_identity(field)
            if identity is Identity.NOT_COUNTED or prefix + name in ignored:
                continue
            value, default = getattr(self, name), field.get_default(call_default_factory=True)
            if isinstance(value, Strict):
                value, default = (
                    value.counted(ignored, f"{prefix}{name}."),
                    default.counted(ignored, f"{prefix}{name}."),
                )
            if identity is not Identity.COUNTED_UNLESS_DEFAULT or value != default:
                counted[name] = value
        return counted


class StageResources(Strict):
    """How one pipeline stage is scheduled: declared next to the stage, filled from the cluster profile."""

    num_cpus: NotCounted[float] = Field(1.0, gt=0, description="CPUs reserved per actor")
    num_gpus: NotCounted[float] = Field(0.0, ge=0, description="GPU fraction per actor (0 on CPU-only machines)")
    memory_gb: NotCounted[float | None] = Field(
        None,
        gt=0,
        description="host memory Ray reserves per actor, so it places no more actors on a node than fit; default: "
        "none reserved (Ray Data then warns in the log once an actor uses more than its CPU share's default)",
    )
    concurrency: NotCounted[int | tuple[int, int]] = Field(1, description="actor pool size, or [min, max] to autoscale")
    max_retries: NotCounted[int] = Field(
        3,
        ge=0,
        description="times this stage works again on an input whose worker process died on it (a crash, out of "
        "memory), each time on a restarted actor; then that input fails, named, and the job goes on (a lost node "
        "counts against no input: its batches wait for the actors to come back)",
    )
    batch_size: NotCounted[int] = Field(1, ge=1, description="videos per Ray Data batch")
    max_forward_batch: NotCounted[int] = Field(
        8, ge=1, description="frames (CLIP) or windows (mapper, AudioLDM) per forward pass"
    )
    torch_threads: NotCounted[int | None] = Field(
        None, ge=1, description="intra-op threads; default: the CPUs reserved, at least 1"
    )
    resources: NotCounted[dict[str, float]] = Field(
        default_factory=dict, description="custom Ray resources per actor, e.g. {decode_node: 1} to place a stage"
    )

    def device(self, setting: str) -> str:
        """Where this stage's models run: 'auto' means CUDA exactly when the stage reserves a GPU, so the device,
        which changes the random draws and so the output, follows from the config alone."""
        if setting == "auto":
            return "cuda" if self.num_gpus > 0 else "cpu"
        return setting

    @model_validator(mode="after")
    def _pool_bounds(self) -> StageResources:
        if isinstance(self.concurrency, tuple):
            low, high = self.concurrency
            if not 1 <= low <= high:
                raise ValueError(f"concurrency [min, max] needs 1 <= min <= max, got {list(self.concurrency)}")
        elif self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        return self

    def threads(self) -> int:
        return self.torch_threads or max(1, int(self.num_cpus))


class Stages(Strict):
    decode_embed: NotCounted[StageResources] = StageResources()
    map: NotCounted[StageResources] = StageResources()
    synthesize: NotCounted[StageResources] = StageResources()
    mux: NotCounted[StageResources] = StageResources()
    clap_embed: NotCounted[StageResources] = StageResources()  # jobs.embed
    write_pairs: NotCounted[StageResources] = StageResources()  # jobs.embed
    classify_audio: NotCounted[StageResources] = StageResources()  # jobs.evaluate: the PANNs classifier
    seam_score: NotCounted[StageResources] = StageResources()  # jobs.evaluate: spectral flux at the seams


CUT_SETTINGS = {"cut_threshold", "min_shot_seconds", "cut_crossfade_seconds", "cut_detect_width"}


class WindowConfig(Strict):
    seconds: Counted[float] = Field(10.24, gt=0, description="window length; 10.24 s is AudioLDM's native length")
    overlap_seconds: Counted[float] = Field(0.64, ge=0, description="overlap of neighbouring windows, crossfaded")
    frames: Counted[int] = Field(16, ge=1, description="frames sampled evenly per window for CLIP")
    cuts: Counted[Literal["off", "detect"]] = Field(
        "detect", description="detect: find shot cuts, plan windows per shot so none straddles a cut; off: one grid"
    )
    cut_threshold: Counted[float] = Field(
        10.0, gt=0, le=100, description="ffmpeg scdet score (0-100) at or above which a frame starts a new shot"
    )
    min_shot_seconds: Counted[float] = Field(
        1.0, gt=0, description="a cut closer than this to another cut or to either end of the video is ignored"
    )
    cut_crossfade_seconds: Counted[float] = Field(
        0.05, ge=0, description="crossfade at a cut, after it, instead of the overlap between windows of one shot"
    )
    cut_detect_width: Counted[int] = Field(
        160, ge=16, description="width the cut detector scales frames to (low is fast)"
    )
    segment_windows: NotCounted[int] = Field(
        16, ge=1, description="a video of more windows travels as segments of this many, spread over the actors"
    )
    aggregator: CountedUnlessDefault[Literal["mean", "learned"]] = Field(
        "mean",
        description="mean: a window's frames' CLIP embeddings are averaged (V2A-Mapper); learned: all of them, with "
        "their moments in the window, go to a trained temporal aggregator (SSV2A), which mapper.checkpoint names "
        "(train.variant=temporal-aggregator); jobs.embed then keeps every frame's embedding to train it",
    )

    def inapplicable(self) -> set[str]:
        """Cut settings apply only when cuts are detected. (How windows travel, segment_windows, never counts.)"""
        return set() if self.cuts == "detect" else CUT_SETTINGS

    @model_validator(mode="after")
    def _overlap_fits(self) -> WindowConfig:
        if self.overlap_seconds * 2 > self.seconds:
            raise ValueError(
                f"overlap_seconds ({self.overlap_seconds}) must be at most half of seconds ({self.seconds})"
            )
        if self.cut_crossfade_seconds > self.min_shot_seconds:
            raise ValueError(
                f"cut_crossfade_seconds ({self.cut_crossfade_seconds}) must be at most min_shot_seconds "
                f"({self.min_shot_seconds})"
            )
        return self


class DecodeConfig(Strict):
    """How frames are decoded for CLIP. The defaults are the fast path; the others exist to be measured."""

    frames: Counted[Literal["sampled", "all"]] = Field(
        "sampled", description="decode only the K sampled frames, or all"
    )
    size: Counted[Literal["clip", "native"]] = Field("clip", description="scale in the decoder to CLIP's size, or not")
    device: CountedUnlessDefault[Literal["cpu", "cuda"]] = Field(
        "cpu",
        description="cuda: decode on the decode stage's GPU with NVDEC (needs stages.decode_embed.num_gpus > 0); "
        "its colour conversion differs slightly from FFmpeg's, so it is part of a result's identity",
    )


class ClipConfig(Strict):
    model: NotCounted[str] = Field(
        "ViT-B-32", description="open_clip model name, or 'local-dir:PATH' (PATH may be s3://)"
    )
    pretrained: NotCounted[str | None] = Field(
        "openai", description="open_clip pretrained tag, a local file or an s3:// key"
    )


class MapperConfig(Strict):
    checkpoint: NotCounted[str | None] = Field(
        None, description="V2A-Mapper checkpoint (dir, .safetensors or s3://); null selects the zero-shot mapper"
    )
    steps: Counted[int] = Field(50, ge=1, description="sampling steps of the diffusion prior")
    guidance_scale: Counted[float] = Field(0.9, ge=0, description="classifier-free guidance (1.0 = conditional only)")
    scheduler: Counted[Literal["ddim", "ddpm"]] = "ddim"
    zero_shot_labels: NotCounted[str] = Field(
        "configs/labels/vggsound.txt", description="sound-event vocabulary, one per line"
    )
    zero_shot_top_k: Counted[int] = Field(5, ge=1, description="labels mixed per window")
    zero_shot_temperature: Counted[float] = Field(
        0.01, gt=0, description="softmax temperature over CLIP cosine similarity"
    )
    zero_shot_image_prompt: Counted[str] = Field(
        "a photo of {label}", description="CLIP text for a label; needs {label}"
    )
    zero_shot_sound_prompt: Counted[str] = Field(
        "the sound of {label}", description="CLAP text for a label; needs {label}"
    )

    def inapplicable(self) -> set[str]:
        """The zero-shot mapper (no checkpoint) is deterministic: seeds, steps, guidance and sampler do not apply;
        a trained one has no zero-shot settings."""
        if self.checkpoint is None:
            return {"steps", "guidance_scale", "scheduler"}
        return {"zero_shot_top_k", "zero_shot_temperature", "zero_shot_image_prompt", "zero_shot_sound_prompt"}

    @model_validator(mode="after")
    def _prompts_name_the_label(self) -> MapperConfig:
        for key in ("zero_shot_image_prompt", "zero_shot_sound_prompt"):
            if "{label}" not in getattr(self, key):
                raise ValueError(f"{key} must contain {{label}}, got {getattr(self, key)!r}")
        return self


class ClapConfig(Strict):
    """AudioLDM's own CLAP (laion_clap): the mapper's training targets (jobs.embed), reference sounds, scores."""

    checkpoint: NotCounted[str] = Field(
        "models/audioldm-s-full-v2-clap",
        description="a folder (local or s3://) made by `python -m jobs.convert_audioldm_clap` from AudioLDM's "
        "original checkpoint, or a laion_clap .pt file (local, s3:// or hf://REPO/FILE)",
    )
    audio_model: Counted[str] = Field(
        "HTSAT-tiny", description="laion_clap audio model name (AudioLDM's CLAP: HTSAT-tiny)"
    )
    enable_fusion: Counted[bool] = False
    sample_rate: Counted[int] = Field(48000, description="laion_clap's input rate; audio is resampled to it")
    seconds: Counted[float] = Field(10.0, gt=0, description="CLAP's input length; longer windows are centre-cropped")


# A condition's weight in the mix. The mix is normalised, so only the weights' ratios count and [0, 1] expresses every
# mix; a larger or non-finite weight (1e39 overflows float32) would make no sound, only NaN or a DC offset.
WEIGHT = {"ge": 0, "le": 1, "allow_inf_nan": False}


class ConditionsConfig(Strict):
    """What every video should sound like besides what it shows: conditions composed per window in CLAP space
    (weighted sum of unit embeddings, then normalised). Per-video values come from columns of the input list with
    the same names; an empty cell keeps the value here."""

    prompt: Counted[str | None] = Field(
        None, description="text condition (AudioLDM's CLAP text embedding), e.g. 'seaside'"
    )
    prompt_weight: Counted[float] = Field(0.5, **WEIGHT, description="weight of the prompt at the start of the video")
    prompt_weight_end: Counted[float | None] = Field(
        None, **WEIGHT, description="weight of the prompt at the end: it fades linearly between (null: constant)"
    )
    negative_prompt: Counted[str] = Field(
        "", description="text for the unconditional branch of classifier-free guidance, e.g. 'speech, music'"
    )
    reference_audio: NotCounted[str | None] = Field(
        None, description="a sound file (local or s3://) whose CLAP embedding mixes in"
    )
    reference_weight: Counted[float] = Field(0.5, **WEIGHT, description="weight of the reference audio")
    visual_weight: Counted[float | None] = Field(
        None, **WEIGHT, description="weight of what the video shows (the mapper's output); null: 1 minus the others"
    )

    @property
    def fades(self) -> bool:
        return bool(self.prompt) and self.prompt_weight_end is not None

    def weights_at(self, fraction: float) -> dict[str, float]:
        """The weight of each condition used, `fraction` of the way through the video (0 at its start)."""
        weights = {}
        if self.prompt:
            end = self.prompt_weight if self.prompt_weight_end is None else self.prompt_weight_end
            weights["prompt"] = self.prompt_weight + (end - self.prompt_weight) * fraction
        if self.reference_audio:
            weights["reference"] = self.reference_weight
        others = sum(weights.values())
        weights["visual"] = max(0.0, 1.0 - others) if self.visual_weight is None else self.visual_weight
        return weights

    def inapplicable(self) -> set[str]:
        """The settings of unused conditions."""
        unused = set() if self.prompt else {"prompt", "prompt_weight", "prompt_weight_end"}
        return unused | (set() if self.reference_audio else {"reference_audio", "reference_weight"})

    def used(self) -> dict:
        """The settings that change the sound (a video's row shows them): those of unused conditions are left out."""
        return self.model_dump(exclude=self.inapplicable())

    @model_validator(mode="after")
    def _some_weight(self) -> ConditionsConfig:
        if all(weight == 0 for weight in (*self.weights_at(0.0).values(), *self.weights_at(1.0).values())):
            raise ValueError("every condition has weight 0; give the visual, prompt or reference condition a weight")
        return self


class SourcesConfig(Strict):
    """SSV2A's sound sources: an open-vocabulary detector finds what may make sound in each window, each source is
    CLIP-embedded from its crop and mapped like the window's whole picture, and the mapped sources are mixed with it
    in CLAP space by detection score and box area. `off` keeps every result and hash as without sources."""

    mode: Counted[Literal["off", "zero_shot", "remixer"]] = Field(
        "off",
        description="zero_shot: mix the sources by score and area (no trained remixer is needed); remixer: the "
        "trained source remixer that mapper.checkpoint names mixes them (train.variant=source-remixer)",
    )
    detector: NotCounted[str] = Field(
        "google/owlv2-base-patch16-ensemble",
        description="an OWL-ViT or OWLv2 detector (transformers): hub id, save_pretrained folder or s3:// prefix",
    )
    labels: NotCounted[str | None] = Field(
        None, description="the label file the detector is queried with, one per line; null: mapper.zero_shot_labels"
    )
    query_template: Counted[str] = Field("a photo of {label}", description="each label's text query")
    frames: Counted[int] = Field(2, ge=1, description="of each window's window.frames sampled frames, evenly spread")
    max_sources: Counted[int] = Field(8, ge=1, le=64, description="per window, the highest scores first")
    min_score: Counted[float] = Field(
        0.25, ge=0, le=1, description="a detection's least score (sigmoid of its best query)"
    )
    min_area: Counted[float] = Field(0.01, ge=0, le=1, description="a box's least area, as a share of the frame")
    nms_iou: Counted[float] = Field(
        0.3, gt=0, le=1, description="boxes of one label overlapping more are one detection"
    )
    track_iou: Counted[float] = Field(
        0.3,
        gt=0,
        le=1,
        description="a box of one label overlapping one in another frame of the window this much "
        "is the same source (its crops' embeddings are averaged)",
    )
    global_weight: Counted[float] = Field(
        0.5, ge=0, le=1, description="the whole picture's share of a window with sources"
    )
    cycle_mix: Counted[bool] = Field(
        False,
        description="keep the candidate whose CLAP audio embedding has the lowest spread (standard deviation) of "
        "cosines to the window's weighted sources (SSV2A's Cycle Mix); needs audioldm.candidates > 1",
    )
    exclude: Counted[list[str]] = Field([], description="labels never voiced, e.g. [speech, music]: their weight is 0")
    boost: Counted[dict[str, float]] = Field({}, description="label -> factor on its sources' weights (0 mutes it)")

    @field_validator("boost")
    @classmethod
    def _finite_boosts(cls, boost: dict[str, float]) -> dict[str, float]:
        if bad := {label: factor for label, factor in boost.items() if not 0 <= factor < float("inf")}:
            raise ValueError(f"boost factors must be finite and at least 0: {bad}")
        return boost

    def hashed(self) -> dict:
        """What changes the sound: not where the detector or its label file sit (their content is a model's)."""
        return self.model_dump(exclude={"detector", "labels"})


MapperVariant = Literal[
    "diffusion-transformer",
    "diffusion-mlp",
    "regression-mlp",
    "regression-transformer",
    "source-remixer",
    "temporal-aggregator",
]


class TrainConfig(Strict):
    """jobs.train_mapper; defaults are the paper's diffusion prior."""

    variant: NotCounted[MapperVariant] = Field(
        "diffusion-transformer",
        description="source-remixer: SSV2A's remixer over a window's picture and sound sources (needs pairs that "
        "jobs.embed made with sources.mode on); temporal-aggregator: SSV2A's learned aggregation of a window's "
        "frames (needs pairs that jobs.embed made with window.aggregator=learned; SSV2A uses train.depth=1)",
    )
    depth: NotCounted[int] = Field(12, ge=1)
    heads: NotCounted[int] = Field(12, ge=1)
    head_dim: NotCounted[int] = Field(64, ge=1)
    mlp_expansion: NotCounted[int] = Field(4, ge=1)
    dropout: NotCounted[float] = Field(0.0, ge=0, lt=1)
    train_timesteps: NotCounted[int] = Field(1000, ge=2)
    condition_dropout: NotCounted[float] = Field(
        0.1, ge=0, lt=1, description="for classifier-free guidance (source-remixer: each source muted with it)"
    )
    kl_weight: NotCounted[float] = Field(
        1e-3, ge=0, description="source-remixer and temporal-aggregator: the KL term of their variational heads"
    )
    learning_rate: NotCounted[float] = Field(1.1e-4, gt=0)
    weight_decay: NotCounted[float] = Field(0.01, ge=0)
    batch_size: NotCounted[int] = Field(448, ge=1, description="global batch, split across workers")
    epochs: NotCounted[int] = Field(100, ge=1)
    val_fraction: NotCounted[float] = Field(0.05, gt=0, lt=1, description="share of pair files held out for validation")
    val_max_pairs: NotCounted[int] = Field(
        4096, ge=1, description="pairs sampled per validation (diffusion sampling is costly)"
    )
    num_workers: NotCounted[int] = Field(1, ge=1, description="data-parallel Ray Train workers")
    use_gpu: NotCounted[bool] = False
    cpus_per_worker: NotCounted[float] = Field(
        1.0, gt=0, description="CPUs Ray reserves per worker; leave some for reading"
    )
    torch_threads: NotCounted[int | None] = Field(
        None, ge=1, description="threads per worker; default: cpus_per_worker"
    )


class AudioLDMConfig(Strict):
    model: NotCounted[str] = Field("cvssp/audioldm-s-full-v2", description="hub id, local directory or s3:// prefix")
    revision: NotCounted[str | None] = Field(
        None, description="hub commit to load (a hub id only); null: the job resolves 'main' once and records it"
    )
    steps: Counted[int] = Field(25, ge=1)
    guidance_scale: Counted[float] = Field(2.5, ge=0)
    scheduler: Counted[Literal["ddim", "dpmsolver++"]] = "ddim"
    candidates: CountedUnlessDefault[int] = Field(
        1,
        ge=1,
        description="samples per window, each with its own seed; the one closest to the condition in CLAP "
        "space (AudioLDM's own CLAP, clap.checkpoint) is kept",
    )
    dtype: Counted[Literal["float32", "float16", "bfloat16"]] = Field("float32", description="applied on GPU only")
    attention: NotCounted[Literal["sdpa", "classic"]] = Field(
        "sdpa", description="scaled-dot-product attention kernels, or diffusers' plain matmul-softmax processor"
    )


class InputConfig(Strict):
    extensions: NotCounted[tuple[str, ...]] = Field(
        (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".3gp"),
        description="videos the job takes (case-insensitive); files with others are counted as left out",
    )
    image_extensions: NotCounted[tuple[str, ...]] = Field(
        (".jpg", ".jpeg", ".png", ".webp"), description="still images, dubbed as one shot of output.image_seconds"
    )
    shard_extensions: NotCounted[tuple[str, ...]] = Field(
        (".tar",), description="WebDataset shards: each sample with a video member (input.extensions) is an input"
    )
    # A caption's text is in its sample's conditions, and so in its result id (as a list's prompt cell is).
    prompt_from: NotCounted[str] = Field(
        "none",
        pattern=r"^(none|txt|json:.+)$",
        description="a shard sample's prompt: none, txt (its .txt member) or json:FIELD (a field of its .json)",
    )
    existing_audio: Counted[Literal["skip", "replace", "mix"]] = Field(
        "skip", description="inputs that already have sound: leave them, replace their audio, or mix under it"
    )
    mix_gain_db: Counted[float] = Field(-12.0, le=0, description="gain of the generated track under the original (mix)")
    max_duration_s: NotCounted[float] = Field(3600.0, gt=0)
    max_width: NotCounted[int] = Field(7680, ge=1)
    max_height: NotCounted[int] = Field(4320, ge=1)
    silence_threshold_dbfs: Counted[float] = Field(
        -60.0, le=0, description="an audio track whose peak stays below this counts as no sound (dBFS)"
    )

    def inapplicable(self) -> set[str]:
        return set() if self.existing_audio == "mix" else {"mix_gain_db"}


class OutputConfig(Strict):
    audio_codecs: Counted[dict[str, str]] = Field(
        default_factory=lambda: {
            ".mp4": "aac",
            ".mov": "aac",
            ".mkv": "libopus",
            ".webm": "libopus",
            ".avi": "libmp3lame",
            ".m4v": "aac",
            ".3gp": "aac",
            ".ts": "aac",
            ".mts": "aac",
            ".m2ts": "aac",
            ".mpg": "mp2",
            ".mpeg": "mp2",
        },
        description="audio encoder per output container",
    )
    video_codec: Counted[str] = Field(
        "copy", description="copy: the video stream untouched; an encoder name re-encodes"
    )
    audio_bitrate: Counted[str] = "128k"
    audio_sample_rate: Counted[int] = Field(48000, ge=8000)
    peak_dbfs: Counted[float | None] = Field(
        -1.0, le=0, description="normalise each track to this peak; null keeps levels"
    )
    max_dc_fraction: NotCounted[float] = Field(
        0.5,
        gt=0,
        le=1,
        description="a generated track whose energy is more than this share constant offset (DC) fails its video "
        "instead of being published",
    )
    audio_language: Counted[str] = Field("und", description="ISO 639-2 language tag of the generated track")
    audio_title: Counted[str] = Field("Generated Foley", description="title of the generated track")
    mode: CountedUnlessDefault[Literal["mux", "audio", "both"]] = Field(
        "mux",
        description="mux: the video with the track; audio: only the track, as FLAC beside where the video "
        "would go (clip.mp4 -> clip.flac); both",
    )
    alternates: Counted[bool] = Field(
        False, description="with audioldm.candidates > 1: mux the runners-up as extra tracks 'Alternate 2'..'N'"
    )
    alternate_title: Counted[str] = Field("Alternate {rank}", description="title of an alternate track; needs {rank}")
    image_output: NotCounted[Literal["flac", "wav", "video"]] = Field(
        "flac", description="what a still image becomes: a sound file, or a still video with the sound (mp4)"
    )
    image_seconds: NotCounted[float] = Field(
        10.24, gt=0, description="length of the sound (and video) made for a still image"
    )
    image_fps: NotCounted[float] = Field(1.0, gt=0, description="frame rate of the still video made for an image")
    image_video_codec: NotCounted[str] = Field("libx264", description="encoder of the still video made for an image")

    @model_validator(mode="after")
    def _title_names_the_rank(self) -> OutputConfig:
        if "{rank}" not in self.alternate_title:
            raise ValueError(f"alternate_title must contain {{rank}}, got {self.alternate_title!r}")
        return self


class ReportConfig(Strict):
    """The static report under <output>/_foley/report/ (jobs.report; jobs.dub writes it at the end) and its pictures."""

    enabled: NotCounted[bool] = Field(
        True, description="jobs.dub writes the report when it ends, and its stages the pictures"
    )
    page_size: NotCounted[int] = Field(
        500, ge=1, description="rows per data file the page loads, so 100,000 inputs open fast"
    )
    poster_height: NotCounted[int] = Field(72, ge=16, description="height in pixels of a window's poster frame")
    max_posters: NotCounted[int] = Field(
        24, ge=1, description="poster frames per video at most (evenly chosen windows)"
    )
    jpeg_quality: NotCounted[int] = Field(70, ge=1, le=95, description="JPEG quality of the poster strip")
    source_colors: NotCounted[tuple[str, ...]] = Field(
        ("#ff3b30", "#ffcc00", "#34c759", "#0a84ff", "#bf5af2", "#ff9f0a", "#64d2ff", "#ffffff"),
        min_length=1,
        description="outline of each sound source's box on the poster frames, the best source first",
    )
    source_line_width: NotCounted[int] = Field(2, ge=1, description="pixels")
    spectrogram_inches: NotCounted[tuple[float, float]] = Field(
        (6.0, 1.6), description="size of the spectrogram at 80 dpi"
    )
    spectrogram_columns: NotCounted[int] = Field(
        480, ge=16, description="time columns of the spectrogram, however long the video"
    )


class ClassifierConfig(Strict):
    """The audio classifier jobs.evaluate scores FD_PANNs, KL_PANNs, IS_PANNs and SSMS with: PANNs CNN14 at 16 kHz,
    as av-benchmark runs it. The sizes come from the checkpoint; what it does not hold is set here."""

    checkpoint: NotCounted[str | None] = Field(
        None,
        description="the released CNN14 checkpoint (Cnn14_16k_mAP=0.438.pth), a local file, s3:// or hf://REPO/FILE; "
        "null: the PANNs numbers are not computed (null in summary.json, with the reason)",
    )
    labels: NotCounted[str | None] = Field(
        None,
        description="a text file of the checkpoint's class names in index order, one per line; null: the 527 "
        "AudioSet names that the installed laion_clap ships",
    )
    sample_rate: NotCounted[int] = Field(
        16000, ge=8000, description="rate the checkpoint was trained at; audio is decoded at it"
    )
    hop_size: NotCounted[int] = Field(160, ge=1, description="STFT hop of the checkpoint's front end, in samples")
    fmin: NotCounted[float] = Field(50.0, ge=0, description="lowest mel frequency of the checkpoint's front end, Hz")
    fmax: NotCounted[float] = Field(8000.0, gt=0, description="highest mel frequency of the checkpoint's front end, Hz")


class EvaluationConfig(Strict):
    """jobs.evaluate: the classifier-based numbers and how the seams between windows are measured (spectral flux on
    the generated track)."""

    classifier: NotCounted[ClassifierConfig] = ClassifierConfig()
    ssms_reference_top: NotCounted[int] = Field(
        10, ge=1, description="SSMS: the reference window's top labels by the classifier (SSV2A: 10)"
    )
    ssms_generated_top: NotCounted[int] = Field(
        50, ge=1, description="SSMS: the generated window's top labels by the classifier (SSV2A: 50)"
    )
    labels_kept: NotCounted[int] = Field(
        5,
        ge=0,
        description="the classifier's top labels of each generated and reference window kept in "
        "windows.parquet, for a person to read",
    )
    inception_splits: NotCounted[int] = Field(
        10, ge=1, description="IS_PANNs: the windows are split in this many parts (fewer with fewer windows)"
    )
    kl_epsilon: NotCounted[float] = Field(
        1e-6, gt=0, description="KL_PANNs: added to the generated probabilities before the log (av-benchmark's)"
    )

    seam_sample_rate: NotCounted[int] = Field(
        16000, ge=8000, description="rate the generated track is decoded at (AudioLDM's)"
    )
    seam_frame: NotCounted[int] = Field(
        512, ge=16, description="STFT frame of the spectral flux, in samples of the track"
    )
    seam_hop: NotCounted[int] = Field(128, ge=1, description="STFT hop of the spectral flux, in samples")
    reference_extensions: NotCounted[tuple[str, ...]] = Field(
        (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".mp4", ".mov", ".mkv", ".webm", ".avi"),
        description="files that count as a video's reference under --reference, found by the video's relative path "
        "with any of these extensions",
    )


class ProgressConfig(Strict):
    """What a job prints while it runs, besides its own line per finished video (with the rate and an ETA)."""

    non_tty_ray_data_lines: NotCounted[bool] = Field(
        False,
        description="when stdout is not a terminal: also print Ray Data's own INFO lines (execution plans, progress "
        "dumps); they always go to ray-data.log in the Ray session's logs",
    )
    non_tty_interval_s: NotCounted[int] = Field(
        120, ge=1, description="with non_tty_ray_data_lines: seconds between Ray Data's progress log lines"
    )
    non_tty_operator_lines: NotCounted[bool] = Field(
        False, description="with non_tty_ray_data_lines: also log a line per pipeline stage, not only the total"
    )


class LeaseConfig(Strict):
    """The lease a run holds on its output root, so that one job at a time writes there (foley.pipeline.lease)."""

    renew_s: NotCounted[float] = Field(30.0, gt=0, description="seconds between renewals while the run goes on")
    expire_s: NotCounted[float] = Field(
        600.0,
        gt=0,
        description="a lease not renewed for this long (by the clock of the machine reading it) is taken over by a "
        "run from another host; from the holder's own host, a lease whose process has ended is taken at once",
    )

    @model_validator(mode="after")
    def _renewed_before_expiry(self) -> LeaseConfig:
        if self.expire_s <= 2 * self.renew_s:
            raise ValueError(f"lease.expire_s ({self.expire_s}) must exceed twice lease.renew_s ({self.renew_s})")
        return self


class JournalConfig(Strict):
    """How the driver gathers finished rows into the manifest's journal (foley.pipeline.manifest)."""

    batch_rows: NotCounted[int] = Field(
        200,
        ge=1,
        description="the driver writes the rows it has received as one journal file per this many rows; a re-run "
        "after a kill reads at most about this many one-row files (the last stage's) besides the batches",
    )
    batch_seconds: NotCounted[float] = Field(
        60.0, gt=0, description="...or once this many seconds have passed since its last batch, if sooner"
    )


class StorageConfig(Strict):
    endpoint_url: NotCounted[str | None] = Field(
        None, description="S3-compatible endpoint; default from AWS_ENDPOINT_URL(_S3)"
    )
    region: NotCounted[str | None] = Field(None, description="default from AWS_REGION / AWS_DEFAULT_REGION")
    max_attempts: NotCounted[int] = Field(8, ge=1, description="adaptive retry attempts per S3 call")
    retry_base_s: NotCounted[float] = Field(
        0.2,
        gt=0,
        description="first backoff of the job's own S3 retries (a body cut short while read, a conditional write "
        "whose answer was lost); each further try waits up to twice as long",
    )
    multipart_mb: NotCounted[int] = Field(
        8,
        ge=5,
        description="part size of S3 uploads larger than this (MiB); known to the job, so that it checks a "
        "multipart upload's ETag against the file it sent",
    )
    parallel_requests: NotCounted[int] = Field(
        16, ge=1, description="S3 requests the driver makes at once where it makes many"
    )
    list_folder_from: NotCounted[int] = Field(
        20,
        ge=1,
        description="an input list's S3 URIs: a folder holding at least this many of them is listed for their "
        "identities (a request per 1,000 objects) instead of a HEAD request each",
    )
    shared_local_output: NotCounted[bool] = Field(
        False,
        description="every node of the cluster mounts the local --output folder at the same path (NFS, a shared "
        "volume); without it, a local output on a cluster of more than one node is refused before any work",
    )
    cache_dir: NotCounted[str] = Field(
        "/tmp/foley-cache",
        description="node-local cache of weights and inputs; FOLEY_CACHE_DIR in a node's environment wins",
    )


class FoleyConfig(Strict):
    seed: Counted[int] = Field(0, ge=0)
    device: NotCounted[Literal["auto", "cpu", "cuda"]] = Field(
        "auto", description="auto: CUDA for stages that reserve a GPU (stages.<name>.num_gpus > 0), else the CPU"
    )
    window: Counted[WindowConfig] = WindowConfig()
    decode: Counted[DecodeConfig] = DecodeConfig()
    clip: NotCounted[ClipConfig] = ClipConfig()
    mapper: Counted[MapperConfig] = MapperConfig()
    audioldm: Counted[AudioLDMConfig] = AudioLDMConfig()
    conditions: CountedUnlessDefault[ConditionsConfig] = ConditionsConfig()
    clap: Counted[ClapConfig] = ClapConfig()
    sources: Counted[SourcesConfig] = SourcesConfig()
    train: NotCounted[TrainConfig] = TrainConfig()
    input: Counted[InputConfig] = InputConfig()
    output: Counted[OutputConfig] = OutputConfig()
    storage: NotCounted[StorageConfig] = StorageConfig()
    progress: NotCounted[ProgressConfig] = ProgressConfig()
    evaluation: NotCounted[EvaluationConfig] = EvaluationConfig()
    report: NotCounted[ReportConfig] = ReportConfig()
    stages: NotCounted[Stages] = Stages()
    lease: NotCounted[LeaseConfig] = LeaseConfig()
    journal: NotCounted[JournalConfig] = JournalConfig()

    @model_validator(mode="after")
    def _decoder_has_a_gpu(self) -> FoleyConfig:
        if self.decode.device == "cuda" and self.stages.decode_embed.num_gpus <= 0:
            raise ValueError(
                "decode.device=cuda decodes on the decode stage's GPU, but stages.decode_embed.num_gpus is 0; give "
                "that stage a GPU or set decode.device=cpu"
            )
        return self

    @model_validator(mode="after")
    def _source_frames_are_sampled(self) -> FoleyConfig:
        if self.sources.frames > self.window.frames:
            raise ValueError(
                f"sources.frames={self.sources.frames} of each window's window.frames={self.window.frames} sampled "
                "frames: detect in at most as many frames as are sampled"
            )
        if self.sources.cycle_mix and (self.sources.mode != "zero_shot" or self.audioldm.candidates < 2):
            raise ValueError(
                "sources.cycle_mix ranks candidates by their sound sources: it needs sources.mode=zero_shot and "
                "audioldm.candidates of 2 or more"
            )
        if self.window.aggregator == "learned" and (not self.mapper.checkpoint or self.sources.mode != "off"):
            raise ValueError(
                "window.aggregator=learned maps each window's frames with the trained temporal aggregator that "
                "mapper.checkpoint names (set it); it reads the frames alone, so sources.mode must be off"
            )
        if self.sources.mode == "remixer" and (not self.mapper.checkpoint or self.sources.boost):
            raise ValueError(
                "sources.mode=remixer mixes the sources with the trained remixer that mapper.checkpoint names (set "
                "it), and weighs them by attention, not by sources.boost (leave it empty; sources.exclude applies)"
            )
        return self

    def inapplicable(self) -> set[str]:
        """Settings that another section's setting makes moot."""
        moot = set()
        if not (self.output.alternates and self.audioldm.candidates > 1):  # a single candidate has no runners-up
            moot |= {"output.alternates", "output.alternate_title"}
        if self.stages.synthesize.device(self.device) != "cuda":  # reduced precision applies on a GPU only
            moot.add("audioldm.dtype")
        return moot | ({"sources"} if self.sources.mode == "off" else set())

    def source_labels(self) -> str:
        """The label file the detector is queried with."""
        return self.sources.labels or self.mapper.zero_shot_labels

    def with_overrides(self, *overrides: str) -> FoleyConfig:
        """This config with more `key.path=value` settings, validated like the command line's."""
        tree = self.model_dump()
        for text in overrides:
            set_dotted(tree, *parse_override(text))
        return FoleyConfig.model_validate(tree)

    def uses_clap(self) -> bool:
        """Whether every video of a dub run needs AudioLDM's CLAP audio encoder: to rank candidates (by condition
        or, with sources.cycle_mix, by sources), or to embed the job's reference sound (a video with a reference of
        its own adds the CLAP to its own hash)."""
        return self.audioldm.candidates > 1 or bool(self.conditions.reference_audio)

    def model_ids(self) -> dict[str, str]:
        """Where each model comes from, for people reading a manifest (the hash uses content identities instead)."""
        return {
            "clip_model": f"{self.clip.model}:{self.clip.pretrained}",
            "mapper_model": self.mapper.checkpoint or f"zero-shot:{Path(self.mapper.zero_shot_labels).name}",
            "audioldm_model": self.audioldm.model,
            "clap_model": f"{self.clap.audio_model}:{self.clap.checkpoint}",
            "detector_model": f"{self.sources.detector}:{Path(self.source_labels()).name}",
        }


def _describe_error(error: dict[str, Any], root: type[BaseModel]) -> str:
    key = ".".join(str(part) for part in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        parent = root
        for part in error["loc"][:-1]:
            field = parent.model_fields.get(str(part))
            parent = field.annotation if field is not None else parent
        if not isinstance(parent, type):
            return f"unknown key '{key}'"
        allowed = ", ".join(sorted(parent.model_fields))
        close = difflib.get_close_matches(str(error["loc"][-1]), parent.model_fields, n=1)
        guess = f"did you mean '{'.'.join([*map(str, error['loc'][:-1]), close[0]])}'? " if close else ""
        return f"unknown key '{key}'; {guess}allowed keys here: {allowed}"
    if isinstance(error.get("input"), dict):  # a check across several keys of one section
        return f"{key}: {error['msg'].removeprefix('Value error, ')}"
    return f"{key} = {error.get('input')!r}: {error['msg']}"


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is a value, not a section")
        node = child
    node[parts[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """`audioldm.steps=10` -> ('audioldm.steps', 10); the value is read as YAML, so lists and null work."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form key.path=value (e.g. audioldm.steps=10)")
    key, raw = text.split("=", 1)
    return key.strip(), read_yaml(raw) if raw.strip() else None


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> FoleyConfig:
    """Read a preset, apply overrides, validate everything, and make local weight paths absolute."""
    tree: Counted[dict] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist; presets live in configs/ (e.g. configs/tiny.yaml)")
        try:
            tree = read_yaml(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {exc}") from exc
        if not isinstance(tree, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(tree).__name__}")
    for text in overrides:
        key, value = parse_override(text)
        set_dotted(tree, key, value)
    try:
        config = FoleyConfig.model_validate(tree)
    except ValidationError as exc:
        overridden = [parse_override(text)[0] for text in overrides]
        details = "\n  ".join(
            _describe_error(e, FoleyConfig) + _where_set(e["loc"], overridden, path) for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration:\n  {details}") from None
    return _absolute_local_paths(config, base=Path(path).parent.parent if path else Path.cwd())


def _where_set(location: tuple, overridden: list[str], path: Path | None) -> str:
    """Where the key at fault was set: on the command line (key.path=value) or in the preset file."""
    key = ".".join(map(str, location))
    if not key:  # a check across sections: its message names the keys
        return ""
    if any(key == o or key.startswith(o + ".") or o.startswith(key + ".") for o in overridden):
        return " (set on the command line)"
    return f" (in {path})" if path else ""


def _absolute(location: str | None, base: Path) -> str | None:
    """Relative local paths are read against the project root, so Ray workers in other cwds find them."""
    if location is None or "://" in location:
        return location
    candidate = Path(location).expanduser()
    if candidate.is_absolute():
        return str(candidate)
    for root in (Path.cwd(), base):
        if (root / candidate).exists():
            return str((root / candidate).resolve())
    return location  # a hub id or a pretrained tag


def _absolute_local_paths(config: FoleyConfig, base: Path) -> FoleyConfig:
    clip_model = config.clip.model
    if clip_model.startswith("local-dir:"):
        clip_model = "local-dir:" + (_absolute(clip_model.removeprefix("local-dir:"), base) or "")
    return config.model_copy(
        update={
            "clip": config.clip.model_copy(
                update={"model": clip_model, "pretrained": _absolute(config.clip.pretrained, base)}
            ),
            "mapper": config.mapper.model_copy(
                update={
                    "checkpoint": _absolute(config.mapper.checkpoint, base),
                    "zero_shot_labels": _absolute(config.mapper.zero_shot_labels, base),
                }
            ),
            "clap": config.clap.model_copy(update={"checkpoint": _absolute(config.clap.checkpoint, base)}),
            "audioldm": config.audioldm.model_copy(update={"model": _absolute(config.audioldm.model, base)}),
            "sources": config.sources.model_copy(
                update={
                    "detector": _absolute(config.sources.detector, base),
                    "labels": _absolute(config.sources.labels, base),
                }
            ),
        }
    )
