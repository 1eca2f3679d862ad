"""Stage 4: windows -> one track -> the muxed output video, published atomically, and its manifest row.

INPUT  rows with waveforms (n_windows x samples) and sample_rate; failed or skipped rows pass through.
OUTPUT one manifest row per video (status ok | failed | skipped), journalled as soon as the video is done.

The windows are stitched with equal-power crossfades over their overlaps and trimmed to the video's duration;
the video stream is copied untouched and only the audio is encoded (mixed under the input's own sound when
input.existing_audio=mix). The video is read again from the node-local
copy when it is still there, instead of travelling through the object store.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from foley.audio import normalize_peak, stitch_windows
from foley.config import FoleyConfig
from foley.manifest import Manifest, utc_now
from foley.media import mux_track
from foley.stage import DUB, OK, SUMMARY_COLUMNS, batch_of, fail, is_pending, rows_of
from foley.storage import Storage, is_s3
from foley.windows import WindowPlan


class Mux:
    def __init__(self, config: FoleyConfig, output_root: str):
        self.config = config
        self.storage = Storage(config.storage)
        self.manifest = Manifest(output_root, self.storage, DUB)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = rows_of(batch)
        for row in rows:
            if is_pending(row):
                started = time.perf_counter()
                try:
                    self.mux_video(row)
                    row["status"] = OK
                except Exception as exc:  # noqa: BLE001 - one bad video becomes a failed row, never a failed job
                    fail(row, "mux", exc)
                row["seconds_mux"] = time.perf_counter() - started
            row["finished_at"] = utc_now().timestamp()
            self.manifest.record(row)
            self.release_local_copy(row)
        return batch_of([{column: row[column] for column in SUMMARY_COLUMNS} for row in rows])

    def mux_video(self, row: dict) -> None:
        window = self.config.window
        plan = WindowPlan.for_video(float(row["duration_s"]), window.seconds, window.overlap_seconds,
                                    int(row["sample_rate"]))
        track = normalize_peak(stitch_windows(row["waveforms"], plan), self.config.output.peak_dbfs)
        video = self.local_video(row)
        output_uri = str(row["output_uri"])
        suffix = Path(output_uri).suffix.lower()
        codec = self.config.output.audio_codecs.get(suffix)
        if codec is None:
            raise ValueError(f"no audio codec configured for '{suffix}' outputs (output.audio_codecs)")
        mix = bool(row["has_audio"]) and self.config.input.existing_audio == "mix"
        with self.storage.staged_output(output_uri) as staged:
            mux_track(video, track, plan.sample_rate, staged, audio_codec=codec,
                      audio_bitrate=self.config.output.audio_bitrate,
                      output_sample_rate=self.config.output.audio_sample_rate,
                      mix_under_original_db=self.config.input.mix_gain_db if mix else None)

    def local_video(self, row: dict) -> Path:
        """The decode stage's copy if it is on this node, else a fresh one."""
        local = Path(str(row["local_path"])) if row["local_path"] else None
        if local is not None and local.is_file():
            return local
        return self.storage.fetch(str(row["input_uri"]))

    def release_local_copy(self, row: dict) -> None:
        if is_s3(str(row["input_uri"])):
            self.storage.local_copy_path(str(row["input_uri"])).unlink(missing_ok=True)
