"""Reading an input with ffprobe/ffmpeg (through ffmpeg-python): its facts, and the samples of its audio.

ffmpeg always runs from an argument list (ffmpeg-python builds one; no shell), so file names cannot inject commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np


class MediaError(RuntimeError):
    """The input is not a usable video; the message says why in words a user can act on."""


@dataclass(frozen=True)
class VideoInfo:
    duration_s: float
    fps: float
    width: int
    height: int
    has_audio: bool
    video_codec: str


def ffmpeg_reason(exc: ffmpeg.Error) -> str:
    lines = [line.strip() for line in (exc.stderr or b"").decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "ffmpeg stopped without an error message (killed from outside?)"


def _rate(text: str | None) -> float:
    if not text or text in ("0/0", "0"):
        return 0.0
    numerator, _, denominator = text.partition("/")
    return float(numerator) / float(denominator or 1)


def _stream_duration(stream: dict) -> float:
    """The video stream's own length: its duration field, or Matroska's DURATION tag (HH:MM:SS.fraction).
    The container's duration is only a fallback: it also covers an audio track that runs longer."""
    if stream.get("duration"):
        return float(stream["duration"])
    tag = stream.get("tags", {}).get("DURATION", "")
    if tag.count(":") == 2:
        hours, minutes, seconds = tag.split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    return 0.0


def probe(path: Path) -> VideoInfo:
    size = path.stat().st_size
    if size == 0:
        raise MediaError("the file is empty (0 bytes); re-export or re-upload it")
    try:
        facts = ffmpeg.probe(str(path))
    except ffmpeg.Error as exc:
        raise MediaError(f"not a readable video (ffprobe: {ffmpeg_reason(exc)})") from None
    streams = facts.get("streams", [])
    video = next(
        (s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")),
        None,
    )
    if video is None:
        kinds = sorted({s.get("codec_type", "?") for s in streams}) or ["none"]
        raise MediaError(f"has no video stream (streams found: {', '.join(kinds)})")
    duration = _stream_duration(video) or float(facts.get("format", {}).get("duration") or 0.0)
    if duration <= 0:
        raise MediaError("has no usable duration; the file may be truncated")
    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    return VideoInfo(
        duration_s=duration,
        fps=fps,
        width=int(video.get("width") or 0),
        height=int(video.get("height") or 0),
        has_audio=any(s.get("codec_type") == "audio" for s in streams),
        video_codec=str(video.get("codec_name", "?")),
    )


def decode_audio(path: Path, start_s: float, duration_s: float, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of the first audio stream over [start_s, start_s + duration_s), resampled."""
    try:
        raw, _ = (
            ffmpeg.input(str(path), ss=start_s, t=duration_s)
            .output("pipe:", format="f32le", ac=1, ar=sample_rate, map="0:a:0")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        raise MediaError(f"its audio could not be decoded (ffmpeg: {ffmpeg_reason(exc)})") from None
    samples = np.frombuffer(raw, dtype="<f4")
    if samples.size == 0:
        raise MediaError(f"has no audio between {start_s:.2f} s and {start_s + duration_s:.2f} s")
    return samples
