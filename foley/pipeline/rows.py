"""A row is one video on its way through a job's stages: its columns, its status, and Ray Data batches of rows.

A row's `status` is "pending" until a stage fails it ("failed"), decides not to process it ("skipped"), or the
last stage finishes it ("ok"); stages pass rows that are not pending through untouched. Failures are data: the
row carries the message, and the job goes on.
"""

from __future__ import annotations

import json
import logging
import traceback

import numpy as np

from foley.config import FoleyConfig
from foley.media.windows import Window
from foley.pipeline.kinds import JobKind
from foley.storage.inputs import InputItem

log = logging.getLogger("foley")

PENDING, OK, FAILED, SKIPPED = "pending", "ok", "failed", "skipped"
EMPTY_MATRIX = np.zeros((0, 0), dtype=np.float32)  # placeholder for per-window arrays of rows without windows
SUMMARY_COLUMNS = (
    "input_uri",
    "relative_path",
    "status",
    "error",
    "n_windows",
    "duration_s",
    "segment",
    "segment_count",
)


def planned_row(item: InputItem, output_uri: str) -> dict:
    """The columns the job's plan decides for one input (it adds its run's and result's); the first stage adds the
    rest (pipeline_columns), so that a plan of a million inputs holds small rows."""
    return {
        "input_uri": item.uri,
        "input_identity": item.identity,
        "output_uri": output_uri,
        "output_uris": json.dumps([output_uri]),  # JSON: every file the result writes (a video, a sidecar sound file)
        "output_sizes": "[]",  # JSON: each one's size as published (the last stage fills it in)
        "relative_path": item.relative_path,
        "image": False,  # a still image, dubbed as one shot of output.image_seconds
        "conditions": "",  # JSON: the conditions of this video that change its sound (ConditionsConfig.used)
        "source_edits": "",  # JSON: its list line's sources.exclude / sources.boost, when it has its own
        "result_id": "",
        "config_hash": "",  # with model_identities and result_id: filled in by the job run (foley.pipeline.kinds)
        "model_identities": "",
        "settings": "",
        "run_id": "",  # set by the job run: tells a retried batch's claim from another run's
        "run_seq": 0,  # set by the job run: its number on the output root, which orders rows across runs
        "staging_uri": "",  # where finished segments wait for the rest of their video
        "report_uri": "",  # where the stages put the video's pictures for the report (foley.pipeline.report)
    }


def pipeline_columns(config: FoleyConfig, kind: JobKind) -> dict:
    """Every other column of a row on its way through the stages, at its starting value: every column is present
    from the first stage on, so batches stay uniform."""
    return {
        "window_notes": "",  # JSON: per window of the row, what shaped its sound (note_window, below)
        "cache_nodes": "",
        "notes": "",
        "decoder": "",  # torchcodec and the FFmpeg version that decoded the video (the decode stage fills it in)
        "status": PENDING,
        "error": "",
        "duration_s": 0.0,
        "fps": 0.0,
        "width": 0,
        "height": 0,
        "has_audio": False,
        "audio_level_dbfs": float("nan"),
        "n_windows": 0,
        "windows": "",  # JSON: [{start_s, end_s, shot}] of every window of the video (foley.media.windows.Window)
        "segment": 0,  # which run of windows this row carries (foley.pipeline.segments), of `segment_count`
        "segment_count": 1,
        "segment_windows": 0,  # the windows per segment it was cut with (0: one segment), so its ranges are known
        "first_window": 0,  # the video's index of the row's first window: seeds and stitching use video indices
        "segment_info": "",  # JSON: per segment, what made it (manifest column `segments`)
        "synthesize_worker": "",
        "clip_embeddings": EMPTY_MATRIX,
        # window.aggregator=learned: each window's frames with their moments (the temporal aggregator's condition)
        **({"frame_embeddings": EMPTY_MATRIX} if config.window.aggregator == "learned" else {}),
        **(
            {"window_sources": "[]", "source_embeddings": EMPTY_MATRIX}  # sound sources per window (the Map stage's)
            if config.sources.mode != "off"
            else {}
        ),
        # The weighted sources mapped to CLAP space, by which Cycle Mix ranks candidates (the Synthesize stage's).
        **({"source_clap_embeddings": EMPTY_MATRIX} if kind.sound_design and config.sources.cycle_mix else {}),
        "clap_embeddings": EMPTY_MATRIX,
        "waveforms": EMPTY_MATRIX,
        "sample_rate": 0,
        "seed": config.seed,
        **kind.model_ids(config),
        **{f"seconds_{stage}": 0.0 for stage in kind.stages},
        "started_at": 0.0,
        "finished_at": 0.0,
    }


def new_row(item: InputItem, output_uri: str, config: FoleyConfig, kind: JobKind) -> dict:
    """A video's whole row as it enters the first stage."""
    return pipeline_columns(config, kind) | planned_row(item, output_uri)


def rows_of(batch: dict[str, np.ndarray]) -> list[dict]:
    count = len(next(iter(batch.values()))) if batch else 0
    return [{key: values[i] for key, values in batch.items()} for i in range(count)]


def batch_of(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows back to columns; per-window arrays of different lengths become object columns (ragged tensors), and so
    do bytes (a numpy bytes column would cut each value at its first NUL byte)."""
    batch = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if isinstance(values[0], (np.ndarray, bytes)):
            column = np.empty(len(values), dtype=object)
            column[:] = values
            batch[key] = column
        else:
            batch[key] = np.array(values)
    return batch


def first_line(exc: BaseException) -> str:
    """The first line of an error's message (its type when it has none), short enough for a manifest row."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def fail(row: dict, stage: str, exc: BaseException) -> None:
    """Record a per-video failure as data. Expected problems keep their message; bugs also get their type."""
    expected = isinstance(exc, (ValueError, RuntimeError, OSError))
    reason = str(exc) if expected and str(exc) else f"{type(exc).__name__}: {exc}"
    row["status"] = FAILED
    row["error"] = f"{stage}: {row['input_uri']}: {reason}"
    row["output_uris"] = row["output_sizes"] = "[]"  # nothing of this result was written
    if not expected:
        log.warning("unexpected error in %s for %s\n%s", stage, row["input_uri"], traceback.format_exc())


def row_windows(row: dict) -> list[Window]:
    return [Window(**window) for window in json.loads(str(row["windows"]) or "[]")]


def window_notes(row: dict) -> list[dict]:
    """Per window of the row, what shaped its sound: condition weights, zero-shot labels, candidate scores."""
    return json.loads(str(row["window_notes"]) or "[]")


def note_window(row: dict, index: int, **notes) -> None:
    """Add notes about the row's window `index` (its index in the row, as stages see it)."""
    every = window_notes(row)
    every.extend({} for _ in range(index + 1 - len(every)))
    every[index].update(notes)
    row["window_notes"] = json.dumps(every)


def is_pending(row: dict) -> bool:
    return row["status"] == PENDING
