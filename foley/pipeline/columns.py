"""Every column of a video's row, defined once: its name, its value as the row starts, its type in the manifest, and
what it means. The row builders (foley.pipeline.rows) and the manifest's schema (foley.pipeline.manifest) both come
from these definitions, so a column cannot be added to one and forgotten in the other.

A row travels through Ray Data as a batch of numpy columns, one type per column: a nested value (the windows, the
outputs, a window's notes) travels as JSON text and is kept in the manifest decoded, with its Arrow type. A column
with no manifest type travels with the row and is not kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

PENDING, OK, FAILED, SKIPPED = "pending", "ok", "failed", "skipped"
EMPTY_MATRIX = np.zeros((0, 0), dtype=np.float32)  # placeholder for per-window arrays of rows without windows


@dataclass(frozen=True)
class Column:
    name: str
    start: object  # its value as the row starts (the plan's or the first stage's)
    manifest: pa.DataType | None  # its type in the manifest; None: it travels with the row and is not kept
    meaning: str
    json: bool = False  # the row carries it as JSON text; the manifest keeps it decoded
    planned: bool = False  # the plan sets it (small rows for a million inputs); the others join at the first stage


# One entry per window: the part of the video it looks at and the shot it lies in.
WINDOWS_TYPE = pa.list_(pa.struct([("start_s", pa.float64()), ("end_s", pa.float64()), ("shot", pa.int64())]))
# One entry per segment of a long video: its windows, the synthesis actor and the run that made them, and how long
# synthesis took.
SEGMENTS_TYPE = pa.list_(
    pa.struct(
        [
            ("first_window", pa.int64()),
            ("windows", pa.int64()),
            ("synthesize_worker", pa.string()),
            ("run_id", pa.string()),
            ("seconds_synthesize", pa.float64()),
        ]
    )
)
# A sound source of a window: label, detection score, box as shares of the frame x0 y0 x1 y1, how many of the
# window's frames saw it, its weight in the mix.
SOURCE_TYPE = pa.struct(
    [
        ("label", pa.string()),
        ("score", pa.float64()),
        ("box", pa.list_(pa.float64())),
        ("frames", pa.int64()),
        ("weight", pa.float64()),
    ]
)
# One entry per window: what shaped its sound. The weight of each condition where more than the video's own
# picture was mixed, the zero-shot mapper's labels with their weights, and the CLAP scores of its candidates with the
# index of the one kept; with sound sources on, each source, and with Cycle Mix each candidate's spread of cosines
# to them.
WINDOW_NOTES_TYPE = pa.list_(
    pa.struct(
        [
            ("weights", pa.struct([("visual", pa.float64()), ("prompt", pa.float64()), ("reference", pa.float64())])),
            ("labels", pa.list_(pa.struct([("label", pa.string()), ("weight", pa.float64())]))),
            ("scores", pa.list_(pa.float64())),
            ("kept", pa.int64()),
            ("sources", pa.list_(SOURCE_TYPE)),
            ("spreads", pa.list_(pa.float64())),
        ]
    )
)
TIME = pa.timestamp("ms", tz="UTC")  # a row carries seconds since the epoch (0: not yet)

# In the manifest's order; the job kind's model and stage-time columns follow (kind_columns), then TIMES.
COLUMNS = (
    Column("input_uri", "", pa.string(), "the input, as listed", planned=True),
    Column("input_identity", "", pa.string(), "its content: S3 ETag and size, local size and mtime", planned=True),
    Column("output_uri", "", pa.string(), "where its main output goes", planned=True),
    Column(
        "outputs",
        "[]",
        pa.list_(pa.string()),
        "every file the result writes, the main one first",
        json=True,
        planned=True,
    ),
    Column(
        "output_sizes",
        "[]",
        pa.list_(pa.int64()),
        "each output's size in bytes as published (the last stage's), checked by later plans",
        json=True,
        planned=True,
    ),
    Column("result_id", "", pa.string(), "what the result depends on (foley.pipeline.kinds)", planned=True),
    Column("run_id", "", pa.string(), "the run that wrote the row; tells a retried batch's claim apart", planned=True),
    Column(
        "run_seq", 0, pa.int64(), "that run's number on the output root: a later run has a larger one", planned=True
    ),
    Column(
        "relative_path", "", pa.string(), "the input's path under the input root, mirrored by outputs", planned=True
    ),
    Column("status", PENDING, pa.string(), "pending until a stage fails or skips it, or the last one finishes it"),
    Column("error", "", pa.string(), "why it failed or was skipped: the file, the reason, what to do"),
    Column("duration_s", 0.0, pa.float64(), "the video's length"),
    Column("n_windows", 0, pa.int64(), "its windows"),
    Column("windows", "", WINDOWS_TYPE, "every window of the video (foley.media.windows.Window)", json=True),
    Column("segments", "", SEGMENTS_TYPE, "per segment of a long video, what made it", json=True),
    Column(
        "conditions",
        "",
        pa.string(),
        "JSON: the conditions that change its sound (ConditionsConfig.used)",
        planned=True,
    ),
    Column("source_edits", "", pa.string(), "JSON: its list line's own sources.exclude / sources.boost", planned=True),
    Column("window_notes", "", WINDOW_NOTES_TYPE, "per window, what shaped its sound (rows.note_window)", json=True),
    Column("has_audio", False, pa.bool_(), "the input had an audio track"),
    Column("audio_level_dbfs", float("nan"), pa.float64(), "that track's peak level"),
    Column("notes", "", pa.string(), "what a person should know of a finished row (e.g. a picture not drawn)"),
    Column("seed", 0, pa.int64(), "the run's seed (rows.pipeline_columns sets it)"),
    Column("config_hash", "", pa.string(), "the run's settings and models (foley.pipeline.kinds)", planned=True),
    Column("model_identities", "", pa.string(), "JSON: the content identity of each model used", planned=True),
    Column("settings", "", pa.string(), "JSON: the settings that, with the models, made the config hash", planned=True),
    Column("decoder", "", pa.string(), "what parsed and decoded the video: torchcodec and the FFmpeg it loaded"),
    # The columns below travel with the row only.
    Column("image", False, None, "a still image, dubbed as one shot of output.image_seconds", planned=True),
    Column("staging_uri", "", None, "where finished segments wait for the rest of their video", planned=True),
    Column("report_uri", "", None, "where the stages put the video's pictures for the report", planned=True),
    Column("cache_nodes", "", None, "the nodes that hold a copy of the input (removed when the row finishes)"),
    Column("fps", 0.0, None, "the video's frame rate"),
    Column("width", 0, None, "its width in pixels"),
    Column("height", 0, None, "its height in pixels"),
    Column("segment", 0, None, "which run of windows this row carries (foley.pipeline.segments)"),
    Column("segment_count", 1, None, "of how many"),
    Column("segment_windows", 0, None, "the windows per segment it was cut with (0: one segment)"),
    Column("first_window", 0, None, "the video's index of the row's first window: seeds and stitching use it"),
    Column("synthesize_worker", "", None, "the actor that synthesised the row's windows"),
    Column("clip_embeddings", EMPTY_MATRIX, None, "per window, CLIP's embedding of its frames"),
    Column("clap_embeddings", EMPTY_MATRIX, None, "per window, the condition in CLAP space AudioLDM read"),
    Column("waveforms", EMPTY_MATRIX, None, "per window, the generated sound (with alternates, per candidate)"),
    Column("sample_rate", 0, None, "of the waveforms"),
)
TIMES = (
    Column("started_at", 0.0, TIME, "when the first stage took the row"),
    Column("finished_at", 0.0, TIME, "when the last stage finished it"),
)
# Columns a run's settings add: window.aggregator=learned (the temporal aggregator's condition), sound sources
# (the Map stage's), and Cycle Mix (the weighted sources in CLAP space, by which Synthesize ranks candidates).
LEARNED_FRAMES = Column("frame_embeddings", EMPTY_MATRIX, None, "per window, its frames' embeddings and moments")
SOURCES = (
    Column("window_sources", "[]", None, "JSON: per window, its sound sources"),
    Column("source_embeddings", EMPTY_MATRIX, None, "per window, its sources' CLIP embeddings"),
)
CYCLE_MIX = Column("source_clap_embeddings", EMPTY_MATRIX, None, "per window, its weighted sources in CLAP space")
# jobs.evaluate's rows (of the embed job's kind) carry a dubbed video's sound, or its reference, through its stages.
EVALUATION = (
    Column("role", "", None, "whose sound the row carries: foley.pipeline.evaluation's GENERATED or REFERENCE"),
    Column("classifier_outputs", EMPTY_MATRIX, None, "per window, the audio classifier's outputs"),
    Column("seam_score", float("nan"), None, "the generated track's spectral flux at its seams"),
    Column("seconds_classify_audio", 0.0, None, "seconds of the classify_audio stage"),
)


def kind_columns(models: tuple[str, ...], stages: tuple[str, ...]) -> tuple[Column, ...]:
    """A job kind's columns: where each of its models came from, and the seconds each of its stages took."""
    return (
        *(
            Column(model, "", pa.string(), "where the model came from (for reading; the hash uses content)")
            for model in models
        ),
        *(Column(f"seconds_{stage}", 0.0, pa.float64(), f"seconds of the {stage} stage") for stage in stages),
    )
