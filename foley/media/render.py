"""Synthetic test clips rendered with ffmpeg, for the demo, the tests and the benchmark (no media is committed)."""

from __future__ import annotations

from pathlib import Path

import ffmpeg

from foley.media.probe import MediaError, ffmpeg_reason


def render_test_video(
    path: Path, seconds: float, width: int, height: int, fps: float, with_audio: bool = False
) -> Path:
    """A synthetic clip (moving test pattern) for demos, tests and benchmarks; the codec follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    video = ffmpeg.input(f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}", f="lavfi")
    streams = [video]
    if with_audio:
        streams.append(ffmpeg.input(f"sine=frequency=440:sample_rate=48000:duration={seconds}", f="lavfi"))
    return _encode(streams, path, with_audio)


def render_film(path: Path, shots: list[tuple[str, float]], width: int, height: int, fps: float) -> Path:
    """A silent clip of several shots joined by hard cuts: (ffmpeg lavfi source, e.g. testsrc2, smptebars or
    mandelbrot; seconds) each, so the cuts fall at known times."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [
        ffmpeg.input(f"{source}=size={width}x{height}:rate={fps}", f="lavfi")
        .trim(duration=seconds)
        .setpts("PTS-STARTPTS")
        .filter("format", "yuv420p")
        for source, seconds in shots
    ]
    return _encode([ffmpeg.concat(*parts, v=1, a=0)], path, with_audio=False)


def _encode(streams: list, path: Path, with_audio: bool) -> Path:
    if path.suffix.lower() == ".webm":
        codecs = {"vcodec": "libvpx", "deadline": "realtime", "cpu-used": 8, "acodec": "libopus"}
    else:
        codecs = {"vcodec": "libx264", "preset": "ultrafast", "pix_fmt": "yuv420p", "acodec": "aac"}
    if not with_audio:
        codecs.pop("acodec")
    try:
        ffmpeg.output(*streams, str(path.resolve()), **codecs).run(  # absolute: a name never reads as an option
            capture_stdout=True, capture_stderr=True, overwrite_output=True
        )
    except ffmpeg.Error as exc:
        raise MediaError(f"rendering {path} failed (ffmpeg: {ffmpeg_reason(exc)})") from None
    return path
