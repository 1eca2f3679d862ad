"""Evaluation stage: each generated track -> how visible its seams between windows are (jobs.evaluate).

INPUT  rows with windows (jobs.evaluate.window_row); a row's `notes` says whether it holds generated or reference
       audio.
OUTPUT the same rows plus seam_score: the spectral flux at the crossfades between windows of one shot over the flux
       elsewhere (foley.media.seams), NaN for reference audio and for a track with no such seam. Fan-out 1:1.

It decodes the whole generated track once at evaluation.seam_sample_rate and lays the windows out as the Mux stage
stitched them. It needs no model and no GPU; it runs here, not on the driver, so a library's seams are scored in
parallel.
"""

from __future__ import annotations

import math

import numpy as np

from foley.config import FoleyConfig
from foley.media.probe import decode_audio
from foley.media.seams import seam_score
from foley.media.stitch import TrackLayout
from foley.pipeline.attempts import bounded_crashes
from foley.pipeline.evaluation import GENERATED
from foley.pipeline.rows import batch_of, fail, is_pending, row_windows, rows_of
from foley.pipeline.stage import local_input
from foley.storage.store import Storage


class SeamScore:
    def __init__(self, config: FoleyConfig):
        self.config = config
        self.storage = Storage(config.storage)

    @bounded_crashes("seam_score")
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = rows_of(batch)
        for row in rows:
            row["seam_score"] = math.nan
            if is_pending(row) and row["role"] == GENERATED:
                try:
                    row["seam_score"] = self.score(row)
                except Exception as exc:  # noqa: BLE001 - one bad video becomes a failed row, never a failed job
                    fail(row, "seam_score", exc)
        return batch_of(rows)

    def score(self, row: dict) -> float:
        settings, window = self.config.evaluation, self.config.window
        duration = row["duration_s"]
        track = decode_audio(local_input(row, self.storage), 0.0, duration, settings.seam_sample_rate)
        layout = TrackLayout.of(
            row_windows(row), duration, window.seconds, window.cut_crossfade_seconds, settings.seam_sample_rate
        )
        return seam_score(track, layout, settings.seam_frame, settings.seam_hop)
