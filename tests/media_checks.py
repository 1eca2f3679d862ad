"""What the tests ask of an output file, measured with ffprobe/ffmpeg."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np

from foley.media.windows import sample_times


def streams(path: Path) -> list[str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return [line.strip() for line in out.splitlines() if line.strip()]


def video_packets_md5(path: Path) -> str:
    """Hash of the first video stream's packets: equal before and after a stream-copy mux."""
    return subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:v:0",
            "-c",
            "copy",
            "-f",
            "streamhash",
            "-hash",
            "md5",
            "-",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def stream_duration(path: Path, selector: str) -> float:
    """End of the last packet of a stream (works for containers that store no per-stream duration)."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            selector,
            "-show_entries",
            "packet=pts_time,duration_time",
            "-of",
            "csv=p=0",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    ends = []
    for line in out.splitlines():
        parts = [p for p in line.strip().split(",") if p and p != "N/A"]
        if parts:
            ends.append(sum(float(p) for p in parts[:2]))
    return max(ends)


def plays(path: Path) -> bool:
    """Decodes from start to end with no error."""
    result = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True, text=True
    )
    return result.returncode == 0 and not result.stderr.strip()


def decoded_audio(path: Path, sample_rate: int = 16000) -> np.ndarray:
    raw = subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-f",
            "f32le",
            "-ac",
            "1",
            "-ar",
            str(sample_rate),
            "-",
        ],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype="<f4")


def ffprobe_facts(path: Path) -> dict:
    """ffprobe's JSON of the streams, chapters and container of a file."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-show_chapters", "-show_format", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)


def packets_md5(path: Path, selector: str) -> str:
    """Hash of one stream's packets (e.g. "v:1", "a:1"): equal before and after a stream-copy mux."""
    return subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", f"0:{selector}", "-c", "copy"]
        + ["-f", "streamhash", "-hash", "md5", "-"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def decoded_channels(path: Path) -> np.ndarray:
    """(samples, channels) float32 of the first audio stream, decoded in its own channel layout and rate."""
    channels = next(s["channels"] for s in ffprobe_facts(path)["streams"] if s["codec_type"] == "audio")
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:a:0", "-f", "f32le", "-"],
        check=True,
        capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype="<f4").reshape(-1, channels)


def track_name(stream: dict) -> str:
    """A stream's title: Matroska's title tag, or the handler name mov/mp4 keep it in."""
    tags = stream.get("tags", {})
    return tags.get("title") or tags.get("handler_name", "")


def frames_on_screen(start_s: float, end_s: float, fps: float, frame_count: int, frames: int) -> list[int]:
    """The frames of a constant-frame-rate video on screen at a window's sample moments, by index x rate (rounded
    first: a moment on a frame's start is that frame, whatever float error says)."""
    moments = sample_times(start_s, end_s, frames)
    return [min(max(math.floor(round(t * fps, 6)), 0), frame_count - 1) for t in moments]
