"""Checking a written output as a reader would, before it is published.

ffmpeg's exit code is not enough: ffmpeg 5.1 writing an mp4 or mov with `+faststart`, or a Matroska file, on a
full disk exits 0 and leaves a file whose index is missing (it does not open) or whose last clusters are missing
(its header still claims the whole duration). So a written file is opened with ffprobe, its streams are compared
with what the writer planned, and every packet is read (demuxed, not decoded: a fraction of a second for ten
minutes of HD video) to measure how long each planned stream really runs.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from foley.media.probe import MediaError

# Encoders pad their last frame and prime their first (AAC: up to two frames of 1024 samples, 43 ms at 48 kHz;
# Opus 20 ms frames; MP2/MP3 1152 samples), so a stream runs a little longer or shorter than the samples it holds.
AUDIO_SLACK_S = 0.1
# A copied video stream ends with its last frame's duration, which the input's own duration may or may not count.
VIDEO_SLACK_S = 0.1
OUT_OF_SPACE = "No space left on device"


@dataclass(frozen=True)
class Planned:
    """What a writer put in a file: each output stream's kind in order, and the streams whose length is known."""

    kinds: tuple[str, ...]
    durations: dict[int, float] = field(default_factory=dict)  # output stream index -> seconds it must run
    frame_s: float = 0.0  # a video frame's duration: the extra slack of a video stream's length

    def slack(self, index: int) -> float:
        return VIDEO_SLACK_S + self.frame_s if self.kinds[index] == "video" else AUDIO_SLACK_S


def check_written(path: Path, planned: Planned, ffmpeg_log: str = "") -> None:
    """Raise MediaError unless `path` opens, holds exactly the planned streams, and each stream of known length
    runs that long. `ffmpeg_log` is what the writer printed: a full disk is named as such."""
    problem = _problem(path, planned)
    if not problem:
        return
    if OUT_OF_SPACE in ffmpeg_log or _out_of_space(path):
        raise out_of_space(path, problem)
    raise MediaError(f"the written file failed its check ({problem}); nothing was published. Run the job again")


def out_of_space(path: Path, problem: str) -> MediaError:
    """A file that could not be written whole because its disk is full, named with the folder and what is free."""
    free = shutil.disk_usage(path.parent).free
    return MediaError(
        f"no space left on the device holding {path.parent} ({free} bytes free) while writing {path.name}: "
        f"{problem}; nothing was published. Free space there (for s3:// outputs it is storage.cache_dir) and run "
        "the job again"
    )


def _out_of_space(path: Path) -> bool:
    """Whether the file's folder has (next to) nothing free: what a file cut short on a full disk leaves."""
    try:
        return shutil.disk_usage(path.parent).free < max(path.stat().st_size, 1 << 20)
    except OSError:
        return False


def _problem(path: Path, planned: Planned) -> str:
    try:
        kinds, spans, errors = _streams_and_spans(path)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror})"
    if kinds is None:
        return f"it does not open ({errors or 'ffprobe found no streams'})"
    planned_part, added = tuple(kinds[: len(planned.kinds)]), kinds[len(planned.kinds) :]
    if planned_part != planned.kinds or any(kind != "data" for kind in added):  # mov writes tmcd/chapters again
        return f"it holds the streams {', '.join(kinds) or 'none'}, not the planned {', '.join(planned.kinds)}"
    for index, seconds in planned.durations.items():
        first, end = spans.get(index, (0.0, 0.0))
        if abs((end - first) - seconds) > planned.slack(index):
            return f"its {kinds[index]} stream {index} runs {end - first:.2f} s, not {seconds:.2f} s"
    return ""


def _streams_and_spans(path: Path) -> tuple[list[str] | None, dict[int, tuple[float, float]], str]:
    """The kinds of the file's streams (None if it does not open), each stream's [first, end) packet time, and the
    last error line ffprobe printed."""
    result = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "stream=index,codec_type:packet=stream_index,pts_time,dts_time,duration_time",
            "-of",
            "csv",
            str(path.resolve()),
        ],
        capture_output=True,
        text=True,
    )
    errors = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    last_error = errors[-1] if errors else ""
    kinds: dict[int, str] = {}
    spans: dict[int, tuple[float, float]] = {}
    for line in result.stdout.splitlines():
        section, *cells = line.strip().split(",")
        if section == "stream" and len(cells) >= 2:
            kinds[int(cells[0])] = cells[1]
        elif section == "packet" and len(cells) >= 4:
            index, pts, dts, duration = int(cells[0]), _number(cells[1]), _number(cells[2]), _number(cells[3])
            moment = dts if pts is None else pts  # a packet at 0.0 s has its pts: 0.0 is not "no pts"
            if moment is None:
                continue
            first, end = spans.get(index, (moment, moment))
            spans[index] = (min(first, moment), max(end, moment + (duration or 0.0)))
    if result.returncode != 0 or not kinds:
        return None, {}, last_error
    return [kinds[index] for index in sorted(kinds)], spans, last_error


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
