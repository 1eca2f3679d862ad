"""Stage 4: windows -> one track -> the muxed output video, published atomically, and its manifest row.

INPUT  rows with waveforms (n_windows x samples) and sample_rate; failed or skipped rows pass through.
OUTPUT one manifest row per video (status ok | failed | skipped), journalled as soon as the video is done.

The windows are stitched with equal-power crossfades over their overlaps and trimmed to the video's duration;
every stream of the input but the audio it replaces is kept (video copied untouched), and only the audio is
encoded (mixed under the input's own sound when input.existing_audio=mix). What the output container cannot
hold is converted or left out, and said in the row's notes. The video is read again from the node-local copy
when it is still there, instead of travelling through the object store.
"""

from __future__ import annotations

from pathlib import Path

from foley.media.mux import mux_track
from foley.media.stitch import normalize_peak, stitch_windows
from foley.media.windows import WindowPlan
from foley.pipeline.kinds import DUB
from foley.pipeline.stage import FinalStage, local_input


class Mux(FinalStage):
    kind = DUB
    stage = "mux"

    def publish(self, row: dict) -> None:
        window = self.config.window
        plan = WindowPlan.for_video(
            float(row["duration_s"]), window.seconds, window.overlap_seconds, int(row["sample_rate"])
        )
        track = normalize_peak(stitch_windows(row["waveforms"], plan), self.config.output.peak_dbfs)
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
                plan.sample_rate,
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
