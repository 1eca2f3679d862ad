"""Where a video cuts from one shot to the next, found by ffmpeg's scdet filter on frames scaled down first.

scdet scores how much each frame differs from the one before (0-100) and reports the frames whose score reaches the
threshold: the first frame of each new shot. Chosen over PySceneDetect by measuring both on synthetic films with
known cuts (docs/performance.md, "The cut detector"): the same CPU time (decoding dominates both), every cut to the
frame once the minimum shot length drops the frame after a cut into fast motion (which scdet also flags), and no
dependency beyond the ffmpeg the project already runs (PySceneDetect needs OpenCV, about 230 MB).
"""

from __future__ import annotations

import re
from pathlib import Path

import ffmpeg

from foley.media.probe import MediaError

_CUT = re.compile(r"lavfi\.scd\.score:\s*([0-9.]+),\s*lavfi\.scd\.time:\s*([0-9.]+)")


def detect_cuts(path: Path, threshold: float, width: int, threads: int = 1) -> list[float]:
    """Times (s, from the first frame, as the frame sampler counts) at which a new shot starts."""
    command = (
        ffmpeg.input(str(path), threads=threads)
        .video.filter("setpts", "PTS-STARTPTS")
        .filter("scale", width, -2)
        .filter("scdet", threshold=threshold)
        .output("-", format="null")
        .global_args("-hide_banner", "-nostats", "-loglevel", "info")
    )
    try:
        _, stderr = command.run(capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise MediaError(f"ffmpeg could not scan it for shot cuts ({tail[0][:200]})") from None
    return sorted(float(time) for _, time in _CUT.findall(stderr.decode(errors="replace")))
