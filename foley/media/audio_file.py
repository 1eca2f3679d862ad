"""Sidecar sound files: the generated track on its own, lossless, for editors who mix it themselves."""

from __future__ import annotations

from pathlib import Path

import ffmpeg
import numpy as np

from foley.media.mux import run_with_track
from foley.media.verify import Planned

AUDIO_FILE_CODECS = {".flac": "flac", ".wav": "pcm_s16le"}


def write_audio_file(
    track: np.ndarray, sample_rate: int, output_path: Path, *, output_sample_rate: int, title: str
) -> None:
    """Write the mono `track` to `output_path`, FLAC or WAV by its suffix, resampled to `output_sample_rate`."""
    suffix = output_path.suffix.lower()
    if suffix not in AUDIO_FILE_CODECS:
        raise ValueError(
            f"cannot write a {suffix or 'suffixless'} sound file; supported: {', '.join(AUDIO_FILE_CODECS)}"
        )
    output = output_path.resolve()
    command = ffmpeg.input("pipe:", format="f32le", ac=1, ar=sample_rate).output(
        str(output), acodec=AUDIO_FILE_CODECS[suffix], ar=output_sample_rate, metadata=f"title={title}"
    )
    planned = Planned(("audio",), {0: len(track) / sample_rate})
    run_with_track(ffmpeg.compile(command, overwrite_output=True), output, [], track, "writing the sound file", planned)
