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
from foley.pipeline.columns import COLUMNS, CYCLE_MIX, FAILED, LEARNED_FRAMES, PENDING, SOURCES, TIMES, kind_columns
from foley.pipeline.kinds import JobKind
from foley.storage.inputs import InputItem

log = logging.getLogger("foley")

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
    starts = {column.name: column.start for column in COLUMNS if column.planned}
    return starts | {
        "input_uri": item.uri,
        "input_identity": item.identity,
        "output_uri": output_uri,
        "outputs": json.dumps([output_uri]),
        "relative_path": item.relative_path,
    }


def pipeline_columns(config: FoleyConfig, kind: JobKind) -> dict:
    """Every other column of a row on its way through the stages, at its starting value: every column is present
    from the first stage on, so batches stay uniform."""
    extra = [LEARNED_FRAMES] if config.window.aggregator == "learned" else []
    extra += SOURCES if config.sources.mode != "off" else ()
    extra += [CYCLE_MIX] if kind.sound_design and config.sources.cycle_mix else []
    columns = (*COLUMNS, *extra, *kind_columns(kind.models, kind.stages), *TIMES)
    starts = {column.name: column.start for column in columns if not column.planned}
    return starts | {"seed": config.seed} | kind.model_ids(config)


def new_row(item: InputItem, output_uri: str, config: FoleyConfig, kind: JobKind) -> dict:
    """A video's whole row as it enters the first stage."""
    return pipeline_columns(config, kind) | planned_row(item, output_uri)


def rows_of(batch: dict[str, np.ndarray]) -> list[dict]:
    """A batch's rows, with Python values (str, int, float, bool) where the batch holds numpy scalars: stages read
    typed values, never cast them back."""
    count = len(next(iter(batch.values()))) if batch else 0
    return [{key: python_value(values[i]) for key, values in batch.items()} for i in range(count)]


def python_value(value):
    return value.item() if isinstance(value, np.generic) else value


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
    row["outputs"] = row["output_sizes"] = "[]"  # nothing of this result was written
    if not expected:
        log.warning("unexpected error in %s for %s\n%s", stage, row["input_uri"], traceback.format_exc())


def row_windows(row: dict) -> list[Window]:
    return [Window(**window) for window in json.loads(row["windows"] or "[]")]


def window_notes(row: dict) -> list[dict]:
    """Per window of the row, what shaped its sound: condition weights, zero-shot labels, candidate scores."""
    return json.loads(row["window_notes"] or "[]")


def note_window(row: dict, index: int, **notes) -> None:
    """Add notes about the row's window `index` (its index in the row, as stages see it)."""
    every = window_notes(row)
    every.extend({} for _ in range(index + 1 - len(every)))
    every[index].update(notes)
    row["window_notes"] = json.dumps(every)


def is_pending(row: dict) -> bool:
    return row["status"] == PENDING
