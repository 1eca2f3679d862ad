"""Muxing a generated track into a copy of the input video (ffmpeg through ffmpeg-python, never a shell)."""

from __future__ import annotations

from pathlib import Path

import ffmpeg
import numpy as np

from foley.media.probe import MediaError, ffmpeg_reason


def mux_track(
    video_path: Path,
    track: np.ndarray,
    sample_rate: int,
    output_path: Path,
    audio_codec: str,
    audio_bitrate: str,
    output_sample_rate: int,
    mix_under_original_db: float | None = None,
    video_codec: str = "copy",
) -> None:
    """Write `output_path`: the first video stream copied bit for bit (unless `video_codec` names an encoder),
    plus `track` encoded as the only audio.

    With `mix_under_original_db` the input's own first audio stream is kept and the generated track is mixed
    under it at that gain; the mix lasts exactly as long as the generated track.
    """
    source = ffmpeg.input(str(video_path))
    audio = ffmpeg.input("pipe:", format="f32le", ac=1, ar=sample_rate).audio
    if mix_under_original_db is not None:
        generated = audio.filter("volume", f"{mix_under_original_db}dB")
        audio = ffmpeg.filter([generated, source["a:0"]], "amix", inputs=2, duration="first", normalize=0)
    container_flags = {"movflags": "+faststart"} if output_path.suffix.lower() in (".mp4", ".mov") else {}
    command = ffmpeg.output(
        source["v:0"],
        audio,
        str(output_path),
        vcodec=video_codec,
        acodec=audio_codec,
        audio_bitrate=audio_bitrate,
        ar=output_sample_rate,
        ac=1,
        map_metadata=0,
        **container_flags,
    )
    try:
        command.run(
            input=np.ascontiguousarray(track, dtype="<f4").tobytes(),
            capture_stdout=True,
            capture_stderr=True,
            overwrite_output=True,
        )
    except ffmpeg.Error as exc:
        raise MediaError(f"muxing failed (ffmpeg: {ffmpeg_reason(exc)})") from None
