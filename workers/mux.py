"""Stage 4: windows -> one track -> the muxed output video, published atomically, and its manifest row.

INPUT  rows with waveforms (windows x samples) and sample_rate, one per video or per segment of a long video;
       failed or skipped rows pass through.
OUTPUT one manifest row per video (status ok | failed | skipped), journalled as soon as the video is done; for a
       segment that does not complete its video, a progress row (status still pending) instead.

A segment of a long video is staged under the output root (foley.pipeline.segments); the segment that completes
its video claims it and assembles the track from the staged segments, one segment in memory at a time. Windows
are stitched with equal-power crossfades over their overlaps, and over a short crossfade at each cut, and the
track is trimmed to the video's duration. Every stream of the input but the audio it replaces is kept (video
copied untouched), and only the audio is encoded (mixed under the input's own sound when
input.existing_audio=mix). What the output container cannot hold is converted or left out, and said in the row's
notes. The video is read again from the node-local copy when it is still there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from foley.media.mux import mux_track
from foley.media.stitch import TrackBuilder, TrackLayout, normalize_peak
from foley.pipeline.kinds import DUB
from foley.pipeline.rows import batch_of, fail, is_pending, row_windows, rows_of
from foley.pipeline.segments import ASSEMBLE_ONLY, SegmentStaging
from foley.pipeline.stage import FinalStage, local_input, summary

TIMED_STAGES = ("decode_embed", "map", "synthesize")  # what a segment's staged info records of its making


class Mux(FinalStage):
    kind = DUB
    stage = "mux"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        summaries = []
        for row in rows_of(batch):
            if is_pending(row) and int(row["segment_count"]) > 1:
                started = time.perf_counter()
                try:
                    completes = self.stage_segment(row)
                except Exception as exc:  # noqa: BLE001 - the video fails, the job goes on
                    fail(row, self.stage, exc)
                    completes = True
                row["seconds_mux"] = time.perf_counter() - started
                if not completes:
                    summaries.append(summary(row))
                    continue
            summaries.append(self.finish(row))
        return batch_of(summaries)

    def stage_segment(self, row: dict) -> bool:
        """Stage this segment; True when it completes its video and this row won the claim to publish it."""
        staging = self.staging(row)
        segment = int(row["segment"])
        if segment != ASSEMBLE_ONLY:
            info = {
                "first_window": int(row["first_window"]),
                "windows": len(row["waveforms"]),
                "synthesize_worker": str(row["synthesize_worker"]),
                "run_id": str(row["run_id"]),
                **{f"seconds_{stage}": float(row[f"seconds_{stage}"]) for stage in TIMED_STAGES},
            }
            staging.stage(segment, row["waveforms"], info)
        if len(staging.staged()) < staging.count:
            return False
        return staging.claim(f"{row['run_id']}/{segment}")

    def staging(self, row: dict) -> SegmentStaging:
        return SegmentStaging(self.storage, str(row["staging_uri"]), int(row["segment_count"]))

    def publish(self, row: dict) -> None:
        window = self.config.window
        layout = TrackLayout.of(
            row_windows(row),
            float(row["duration_s"]),
            window.seconds,
            window.cut_crossfade_seconds,
            int(row["sample_rate"]),
        )
        builder = TrackBuilder(layout)
        if int(row["segment_count"]) > 1:
            staging, segments = self.staging(row), []
            for index in range(staging.count):  # one segment in memory at a time
                waveforms, info = staging.load(index)
                builder.add(info["first_window"], waveforms)
                segments.append(info)
            row["segment_info"] = json.dumps(segments)
            for stage in TIMED_STAGES:  # the video's time is the sum of its segments' (this one's is staged too)
                row[f"seconds_{stage}"] = sum(info[f"seconds_{stage}"] for info in segments)
        else:
            builder.add(0, row["waveforms"])
        track = normalize_peak(builder.result(), self.config.output.peak_dbfs)
        self.mux(row, track, layout.sample_rate)

    def mux(self, row: dict, track: np.ndarray, sample_rate: int) -> None:
        output_uri = str(row["output_uri"])
        suffix = Path(output_uri).suffix.lower()
        codec = self.config.output.audio_codecs.get(suffix)
        if codec is None:
            raise ValueError(f"no audio codec configured for '{suffix}' outputs (output.audio_codecs)")
        # has_audio means audible sound: a silent original track is replaced, never mixed under.
        mix = bool(row["has_audio"]) and self.config.input.existing_audio == "mix"
        output = self.config.output
        with self.storage.staged_output(output_uri) as staged:
            notes = mux_track(
                local_input(row, self.storage),
                track,
                sample_rate,
                staged,
                audio_codec=codec,
                audio_bitrate=output.audio_bitrate,
                output_sample_rate=output.audio_sample_rate,
                language=output.audio_language,
                title=output.audio_title,
                mix_under_original_db=self.config.input.mix_gain_db if mix else None,
                video_codec=output.video_codec,
            )
        # What the output container could not hold as it was (converted or left out), for the manifest.
        row["notes"] = "; ".join(note for note in (str(row["notes"]), *notes) if note)

    def finish(self, row: dict) -> dict:
        """Journal the video, then drop its staged segments (they are kept until its row is written)."""
        result = super().finish(row)
        if int(row["segment_count"]) > 1 and result["status"] != "failed":
            self.staging(row).remove()
        return result
