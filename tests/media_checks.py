"""What the tests ask of an output file, measured with ffprobe/ffmpeg."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np


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
