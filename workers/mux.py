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

import io
import json
import time
from pathlib import Path

import numpy as np

from foley.media.audio_file import AUDIO_FILE_CODECS, write_audio_file
from foley.media.mux import mux_track
from foley.media.spectrogram import spectrogram_png
from foley.media.still import render_still_video
from foley.media.stitch import TrackBuilder, TrackLayout, normalize_peak, track_problem
from foley.pipeline.attempts import bounded_crashes
from foley.pipeline.evaluation import conditions_uri, drop_other_conditions
from foley.pipeline.kinds import DUB
from foley.pipeline.report_assets import SPECTROGRAM
from foley.pipeline.rows import batch_of, fail, is_pending, row_windows, rows_of, window_notes
from foley.pipeline.segments import ASSEMBLE_ONLY, SegmentStaging, segment_ranges
from foley.pipeline.stage import FinalStage, local_input, summary
from foley.storage.uris import StorageError, join

TIMED_STAGES = ("decode_embed", "map", "synthesize")  # what a segment's staged info records of its making


class Mux(FinalStage):
    kind = DUB
    stage = "mux"

    @bounded_crashes()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        summaries = []
        for row in rows_of(batch):
            if is_pending(row) and row["segment_count"] > 1:
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
        segment = row["segment"]
        if segment != ASSEMBLE_ONLY:
            info = {
                "first_window": row["first_window"],
                "windows": len(row["waveforms"]),
                "synthesize_worker": row["synthesize_worker"],
                "run_id": row["run_id"],
                "window_notes": window_notes(row),
                **{f"seconds_{stage}": row[f"seconds_{stage}"] for stage in TIMED_STAGES},
            }
            staging.stage(segment, row["waveforms"], info)
            self.keep_conditions(row)
        if len(staging.staged()) < staging.count:
            return False
        return staging.claim(f"{row['run_id']}/{segment}")

    def staging(self, row: dict) -> SegmentStaging:
        ranges = segment_ranges(row["n_windows"], row["segment_windows"] or None)
        return SegmentStaging(self.storage, row["staging_uri"], ranges)

    def publish(self, row: dict) -> list[int]:
        window = self.config.window
        layout = TrackLayout.of(
            row_windows(row),
            row["duration_s"],
            window.seconds,
            window.cut_crossfade_seconds,
            row["sample_rate"],
        )
        if row["segment_count"] == 1:
            self.keep_conditions(row)
        ranges = segment_ranges(row["n_windows"], row["segment_windows"] or None)
        drop_other_conditions(self.storage, self.output_root, row["result_id"], {first for first, _ in ranges})
        tracks = self.assemble(row, layout)
        for track in tracks:
            if problem := track_problem(track, self.config.output.max_dc_fraction):
                raise ValueError(
                    f"{problem}; nothing was written. Check the condition weights (conditions.*_weight) and the "
                    "models, then run again"
                )
        tracks = [normalize_peak(track, self.config.output.peak_dbfs) for track in tracks]
        sizes = []
        for output_uri in json.loads(row["outputs"]):
            with self.storage.staged_output(output_uri) as staged:
                self.write(row, tracks, layout.sample_rate, staged)  # checked as a reader would (media.verify)
                sizes.append(staged.stat().st_size)
        if row["report_uri"]:  # drawn from the track in memory: nothing is decoded again
            self.keep_spectrogram(row, tracks[0], layout.sample_rate)
        return sizes

    def keep_spectrogram(self, row: dict, track: np.ndarray, sample_rate: int) -> None:
        """The report's picture of the track; the outputs are published already, so a failure is only noted."""
        report = self.config.report
        picture = spectrogram_png(
            track,
            sample_rate,
            row_windows(row),
            "",  # the page names the video in the browser's fonts, any script; matplotlib's would show boxes
            report.spectrogram_inches,
            report.spectrogram_columns,
        )
        try:
            self.storage.write_bytes(join(row["report_uri"], SPECTROGRAM), picture)
        except StorageError as exc:
            row["notes"] = "; ".join(filter(None, (row["notes"], f"no spectrogram in the report: {exc}")))

    def keep_conditions(self, row: dict) -> None:
        """The conditions AudioLDM read for the row's windows, for jobs.evaluate's CLAP scores."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(row["clap_embeddings"], dtype=np.float32))
        self.storage.write_bytes(
            conditions_uri(self.output_root, row["result_id"], row["first_window"]), buffer.getvalue()
        )

    def assemble(self, row: dict, layout: TrackLayout) -> list[np.ndarray]:
        """The video's tracks: the kept one, then the runners-up best first when the windows carry them."""
        if row["segment_count"] == 1:
            return build_tracks(layout, [(0, row["waveforms"])])
        staging, infos = self.staging(row), []

        def segments():  # loaded one at a time: only the tracks and one segment are in memory
            for index in range(staging.count):
                waveforms, info = staging.load(index)
                infos.append(info)
                yield info["first_window"], waveforms

        tracks = build_tracks(layout, segments())
        row["segments"] = json.dumps([{k: v for k, v in info.items() if k != "window_notes"} for info in infos])
        notes = [note for info in infos for note in padded(info["window_notes"], info["windows"])]
        row["window_notes"] = json.dumps(notes) if any(notes) else ""
        for stage in TIMED_STAGES:  # the video's time is the sum of its segments' (this one's is staged too)
            row[f"seconds_{stage}"] = sum(info[f"seconds_{stage}"] for info in infos)
        return tracks

    def write(self, row: dict, tracks: list[np.ndarray], sample_rate: int, staged: Path) -> None:
        """One output file: a sidecar sound file, an image's still video, or the input video with the tracks."""
        output = self.config.output
        suffix = staged.suffix.lower()
        if suffix in AUDIO_FILE_CODECS:
            write_audio_file(
                tracks[0], sample_rate, staged, output_sample_rate=output.audio_sample_rate, title=output.audio_title
            )
        elif row["image"]:
            render_still_video(
                local_input(row, self.storage),
                tracks[0],
                sample_rate,
                staged,
                seconds=row["duration_s"],
                fps=output.image_fps,
                video_codec=output.image_video_codec,
                audio_codec=self.audio_codec(suffix),
                audio_bitrate=output.audio_bitrate,
                output_sample_rate=output.audio_sample_rate,
                language=output.audio_language,
                title=output.audio_title,
            )
        else:
            self.mux(row, tracks, sample_rate, staged)

    def audio_codec(self, suffix: str) -> str:
        codec = self.config.output.audio_codecs.get(suffix)
        if codec is None:
            raise ValueError(f"no audio codec configured for '{suffix}' outputs (output.audio_codecs)")
        return codec

    def mux(self, row: dict, tracks: list[np.ndarray], sample_rate: int, staged: Path) -> None:
        # has_audio means audible sound: a silent original track is replaced, never mixed under.
        mix = row["has_audio"] and self.config.input.existing_audio == "mix"
        output = self.config.output
        notes = mux_track(
            local_input(row, self.storage),
            tracks[0],
            sample_rate,
            staged,
            audio_codec=self.audio_codec(staged.suffix.lower()),
            audio_bitrate=output.audio_bitrate,
            output_sample_rate=output.audio_sample_rate,
            language=output.audio_language,
            title=output.audio_title,
            mix_under_original_db=self.config.input.mix_gain_db if mix else None,
            video_codec=output.video_codec,
            alternates=[(track, output.alternate_title.format(rank=rank)) for rank, track in enumerate(tracks[1:], 2)],
        )
        # What the output container could not hold as it was (converted or left out), for the manifest.
        row["notes"] = "; ".join(note for note in (row["notes"], *notes) if note)

    def finish(self, row: dict) -> dict:
        """Journal the video, then drop its staged segments (they are kept until its row is written)."""
        result = super().finish(row)
        if row["segment_count"] > 1 and result["status"] != "failed":
            self.staging(row).remove()
        return result


def build_tracks(layout: TrackLayout, parts) -> list[np.ndarray]:
    """Stitch (first window, waveforms) parts into tracks: one, or one per candidate rank when the waveforms are
    (windows, ranks, samples). Parts may be a generator, so that one segment at a time is in memory."""
    builders: list[TrackBuilder] = []
    for first_window, waveforms in parts:
        ranked = waveforms if waveforms.ndim == 3 else waveforms[:, None]
        builders = builders or [TrackBuilder(layout) for _ in range(ranked.shape[1])]
        for builder, rank in zip(builders, range(ranked.shape[1]), strict=True):
            builder.add(first_window, ranked[:, rank])
    return [builder.result() for builder in builders] or [TrackBuilder(layout).result()]


def padded(notes: list[dict], windows: int) -> list[dict]:
    return notes + [{} for _ in range(windows - len(notes))]
