"""ffprobe/ffmpeg through ffmpeg-python: reading a video's facts, muxing a track in, rendering test clips.

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


def _ffmpeg_reason(exc: ffmpeg.Error) -> str:
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
        raise MediaError(f"not a readable video (ffprobe: {_ffmpeg_reason(exc)})") from None
    streams = facts.get("streams", [])
    video = next((s for s in streams if s.get("codec_type") == "video"
                  and not s.get("disposition", {}).get("attached_pic")), None)
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
        source["v:0"], audio, str(output_path),
        vcodec=video_codec, acodec=audio_codec, audio_bitrate=audio_bitrate, ar=output_sample_rate, ac=1,
        map_metadata=0, **container_flags,
    )
    try:
        command.run(input=np.ascontiguousarray(track, dtype="<f4").tobytes(),
                    capture_stdout=True, capture_stderr=True, overwrite_output=True)
    except ffmpeg.Error as exc:
        raise MediaError(f"muxing failed (ffmpeg: {_ffmpeg_reason(exc)})") from None


def decode_audio(path: Path, start_s: float, duration_s: float, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of the first audio stream over [start_s, start_s + duration_s), resampled."""
    try:
        raw, _ = (
            ffmpeg.input(str(path), ss=start_s, t=duration_s)
            .output("pipe:", format="f32le", ac=1, ar=sample_rate, map="0:a:0")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        raise MediaError(f"its audio could not be decoded (ffmpeg: {_ffmpeg_reason(exc)})") from None
    samples = np.frombuffer(raw, dtype="<f4")
    if samples.size == 0:
        raise MediaError(f"has no audio between {start_s:.2f} s and {start_s + duration_s:.2f} s")
    return samples


def render_test_video(path: Path, seconds: float, width: int, height: int, fps: float,
                      with_audio: bool = False) -> Path:
    """A synthetic clip (moving test pattern) for demos, tests and benchmarks; the codec follows the extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    video = ffmpeg.input(f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}", f="lavfi")
    streams = [video]
    if with_audio:
        streams.append(ffmpeg.input(f"sine=frequency=440:sample_rate=48000:duration={seconds}", f="lavfi"))
    if path.suffix.lower() == ".webm":
        codecs = {"vcodec": "libvpx", "deadline": "realtime", "cpu-used": 8, "acodec": "libopus"}
    else:
        codecs = {"vcodec": "libx264", "preset": "ultrafast", "pix_fmt": "yuv420p", "acodec": "aac"}
    if not with_audio:
        codecs.pop("acodec")
    try:
        ffmpeg.output(*streams, str(path), **codecs).run(capture_stdout=True, capture_stderr=True,
                                                        overwrite_output=True)
    except ffmpeg.Error as exc:
        raise MediaError(f"rendering {path} failed (ffmpeg: {_ffmpeg_reason(exc)})") from None
    return path
