"""Reading an input with ffprobe/ffmpeg (through ffmpeg-python): its facts, and the samples of its audio.

ffmpeg always runs from an argument list (ffmpeg-python builds one; no shell), and every file it reads gets an
absolute path, so a file name can neither inject commands nor pass for an option ("-i" is a valid file name).
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

# The level recorded for digital silence (every sample exactly 0), where ffmpeg reports -inf: a finite number, so
# it survives JSON and Parquet reports, and the dynamic range of 24-bit audio, below any real recording's noise.
DIGITAL_SILENCE_DBFS = -144.0

_PEAK_LEVEL = re.compile(r"Peak level dB:\s*(\S+)")


class MediaError(RuntimeError):
    """The input is not a usable video; the message says why in words a user can act on."""


@dataclass(frozen=True)
class StreamInfo:
    """One stream of the input, as the mux step needs it to decide what the output can keep."""

    index: int
    kind: str  # ffprobe's codec_type: video, audio, subtitle, data or attachment
    codec: str  # ffprobe's codec_name, or the codec tag (e.g. tmcd) for data streams ffmpeg has no codec for
    tag: str = ""  # the container's codec tag (mp4: avc1, tmcd, text, gpmd...); tells data streams apart
    attached_pic: bool = False  # a cover image stored as a one-frame video stream
    channels: int = 0
    channel_layout: str = ""
    language: str = ""
    rotation: int = 0  # see VideoInfo.rotation; only from a display matrix (what a muxer must write back)
    timecode: bool = False  # the stream carries a timecode tag (from which mov/mp4 muxers write a tmcd track)


@dataclass(frozen=True)
class VideoInfo:
    """Everything the pipeline needs to know about an input, read once."""

    duration_s: float
    fps: float  # 0.0 when the file states no usable rate; frames are then placed by their timestamps
    width: int  # as displayed: swapped for a quarter-turn rotation
    height: int
    video_codec: str
    rotation: int = 0  # degrees the player turns the decoded frames counterclockwise (0, 90, 180 or 270)
    rotation_tagged: bool = False  # the rotation is a "rotate" tag rather than a display matrix
    container: str = ""  # ffprobe's format_name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    audio_peak_dbfs: float = math.nan  # peak of the first audio stream; NaN without one (or not measured)
    streams: tuple[StreamInfo, ...] = ()
    chapters: int = 0
    video_index: int = 0  # the stream index of the video (the first that is not cover art)

    @property
    def audio_streams(self) -> int:
        return sum(stream.kind == "audio" for stream in self.streams)

    def has_sound(self, silence_threshold_dbfs: float) -> bool:
        """An audio stream whose peak reaches the threshold: a silent AAC track is no sound."""
        return not math.isnan(self.audio_peak_dbfs) and self.audio_peak_dbfs >= silence_threshold_dbfs


def ffmpeg_reason(exc: ffmpeg.Error) -> str:
    lines = [line.strip() for line in (exc.stderr or b"").decode(errors="replace").splitlines() if line.strip()]
    return lines[-1] if lines else "ffmpeg stopped without an error message (killed from outside?)"


def _rate(text: str | None) -> float:
    """ffprobe's "30000/1001" as frames per second; anything malformed or not positive ("30000/0", "0/0", "", "abc")
    is 0.0, meaning unknown."""
    numerator, _, denominator = (text or "").partition("/")
    try:
        rate = float(numerator) / float(denominator or 1)
    except (ValueError, ZeroDivisionError):
        return 0.0
    return rate if math.isfinite(rate) and rate > 0 else 0.0


def _stream_duration(path: Path, stream: dict) -> float:
    """The video stream's own length: its duration field, or else the span of its packets. (Matroska's DURATION tag
    and the container's duration count from time 0, not from the stream's first frame, so a file that starts later
    (trimmed, concatenated, broadcast) would seem longer by its start; the container's also covers an audio track
    that runs longer.) 0.0 when neither is known."""
    if stream.get("duration"):
        return float(stream["duration"])
    result = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", str(stream["index"])]
        + ["-show_entries", "packet=pts_time,dts_time,duration_time", "-of", "csv=p=0", str(path.resolve())],
        capture_output=True,
        text=True,
    )
    first, end = math.inf, -math.inf
    for line in result.stdout.splitlines():
        cells = [float(cell) if cell not in ("", "N/A") else None for cell in line.strip().split(",")[:3]]
        moment = cells[0] if cells[0] is not None else (cells[1] if len(cells) > 1 else None)
        if moment is not None:
            first, end = min(first, moment), max(end, moment + ((cells[2] if len(cells) > 2 else None) or 0.0))
    return max(end - first, 0.0) if math.isfinite(first) else 0.0


def _quarter_turns(degrees: float) -> int:
    """A rotation in degrees, snapped to 0, 90, 180 or 270."""
    return round(degrees / 90) % 4 * 90


def _matrix_rotation(stream: dict) -> int:
    """Counterclockwise degrees from the stream's display matrix, as ffprobe reports it."""
    for side_data in stream.get("side_data_list", []):
        if "rotation" in side_data:
            return _quarter_turns(float(side_data["rotation"]))
    return 0


def _tagged_rotation(stream: dict) -> int:
    """Counterclockwise degrees from an old-style "rotate" tag, which counts clockwise (any case: ROTATE in mkv)."""
    tags = {key.lower(): value for key, value in stream.get("tags", {}).items()}
    try:
        return _quarter_turns(-float(tags.get("rotate", 0)))
    except ValueError:
        return 0


def _stream_info(stream: dict) -> StreamInfo:
    tags = stream.get("tags", {})
    return StreamInfo(
        index=int(stream["index"]),
        kind=str(stream.get("codec_type", "data")),
        codec=str(stream.get("codec_name") or stream.get("codec_tag_string") or "unknown"),
        tag=str(stream.get("codec_tag_string", "")),
        attached_pic=bool(stream.get("disposition", {}).get("attached_pic")),
        channels=int(stream.get("channels") or 0),
        channel_layout=str(stream.get("channel_layout") or ""),
        language=str(tags.get("language", "")),
        rotation=_matrix_rotation(stream),
        timecode="timecode" in tags,
    )


def probe(path: Path, measure_audio: bool = True) -> VideoInfo:
    """The input's facts; `measure_audio` also decodes the first audio stream to measure its peak level."""
    size = path.stat().st_size
    if size == 0:
        raise MediaError("the file is empty (0 bytes); re-export or re-upload it")
    try:
        facts = ffmpeg.probe(str(path.resolve()), show_chapters=None)
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
    duration = _stream_duration(path, video) or float(facts.get("format", {}).get("duration") or 0.0)
    if duration <= 0:
        raise MediaError("has no usable duration; the file may be truncated")
    # avg_frame_rate can be malformed or 0/0 (variable-rate files); r_frame_rate is the stream's base rate.
    fps = _rate(video.get("avg_frame_rate")) or _rate(video.get("r_frame_rate"))
    matrix_rotation = _matrix_rotation(video)
    rotation = matrix_rotation or _tagged_rotation(video)
    width, height = int(video.get("width") or 0), int(video.get("height") or 0)
    if rotation in (90, 270):
        width, height = height, width
    infos = tuple(_stream_info(stream) for stream in streams)
    first_audio = next((stream for stream in infos if stream.kind == "audio"), None)
    peak = measure_peak_dbfs(path, first_audio.index) if measure_audio and first_audio else math.nan
    return VideoInfo(
        duration_s=duration,
        fps=fps,
        width=width,
        height=height,
        video_codec=str(video.get("codec_name", "?")),
        rotation=rotation,
        rotation_tagged=bool(rotation) and not matrix_rotation,
        container=str(facts.get("format", {}).get("format_name", "")),
        audio_peak_dbfs=peak,
        streams=infos,
        chapters=len(facts.get("chapters", [])),
        video_index=int(video.get("index", 0)),
    )


def measure_peak_dbfs(path: Path, stream_index: int) -> float:
    """Peak level of one audio stream over its whole length, in dBFS (DIGITAL_SILENCE_DBFS for all-zero samples)."""
    command = (
        ffmpeg.input(str(path.resolve()))[str(stream_index)]
        .filter("astats", measure_perchannel="none", measure_overall="Peak_level")
        .output("-", format="null")
        .global_args("-hide_banner", "-nostats")
    )
    try:
        _, log = command.run(capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        raise MediaError(
            f"its audio could not be decoded to measure its level (ffmpeg: {ffmpeg_reason(exc)})"
        ) from None
    levels = _PEAK_LEVEL.findall(log.decode(errors="replace"))
    peak = float(levels[-1]) if levels else -math.inf  # no samples at all: nothing to hear
    return max(peak, DIGITAL_SILENCE_DBFS)


def decode_audio(path: Path, start_s: float, duration_s: float, sample_rate: int) -> np.ndarray:
    """Mono float32 samples of the first audio stream over [start_s, start_s + duration_s), resampled."""
    try:
        raw, _ = (
            ffmpeg.input(str(path.resolve()), ss=start_s, t=duration_s)
            .output("pipe:", format="f32le", ac=1, ar=sample_rate, map="0:a:0")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as exc:
        raise MediaError(f"its audio could not be decoded (ffmpeg: {ffmpeg_reason(exc)})") from None
    samples = np.frombuffer(raw, dtype="<f4")
    if samples.size == 0:
        raise MediaError(f"has no audio between {start_s:.2f} s and {start_s + duration_s:.2f} s")
    return samples
