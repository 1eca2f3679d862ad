"""Where windows start, which frames each window looks at, and the seed of every random draw."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass


def window_count(duration_s: float, window_s: float, overlap_s: float) -> int:
    """Fewest windows of `window_s`, each starting `window_s - overlap_s` after the last, that cover the video."""
    hop = window_s - overlap_s
    return max(1, math.ceil((duration_s - overlap_s) / hop - 1e-9))


def window_bounds_s(duration_s: float, window_s: float, overlap_s: float) -> list[tuple[float, float]]:
    """The part of the video each window looks at, in seconds; the last one may be shorter."""
    hop = window_s - overlap_s
    return [
        (i * hop, min(i * hop + window_s, duration_s)) for i in range(window_count(duration_s, window_s, overlap_s))
    ]


@dataclass(frozen=True)
class Window:
    """The part of the video a window looks at and whose sound it owns, in seconds, and the shot it lies in.

    Its sound is generated at full window length from `start_s`; the part after `end_s` only feeds the crossfade
    into the next window."""

    start_s: float
    end_s: float
    shot: int

    def as_dict(self) -> dict:
        return {"start_s": self.start_s, "end_s": self.end_s, "shot": self.shot}


def shot_borders(cuts_s: list[float], duration_s: float, min_shot_s: float) -> list[float]:
    """Shot borders [0, cut, ..., duration]: cuts closer than `min_shot_s` to the last kept border or to the end
    are dropped, so the short piece joins its neighbouring shot."""
    borders = [0.0]
    for cut in sorted(cuts_s):
        if cut - borders[-1] >= min_shot_s and duration_s - cut >= min_shot_s:
            borders.append(cut)
    return [*borders, duration_s]


def plan_windows(borders_s: list[float], window_s: float, overlap_s: float, cut_crossfade_s: float) -> list[Window]:
    """Windows per shot, none straddling a cut: a shot is tiled as a whole video would be, and a shot shorter than a
    window gets one window of its own. The last window of a shot that ends at a cut still has at least
    `cut_crossfade_s` of generated sound after the cut (an extra window is added where it would not), so the
    track can crossfade into the next shot."""
    windows: list[Window] = []
    last_shot = len(borders_s) - 2
    for shot, (start, end) in enumerate(zip(borders_s, borders_s[1:], strict=False)):
        tail = cut_crossfade_s if shot < last_shot else 0.0
        for offset, _ in window_bounds_s(end - start + tail, window_s, overlap_s):
            if start + offset < end:
                windows.append(Window(start + offset, min(start + offset + window_s, end), shot))
    return windows


def sample_times(start_s: float, end_s: float, frames: int) -> list[float]:
    """The moments a window samples: the centre of each of `frames` equal slices of [start_s, end_s)."""
    span = max(end_s - start_s, 0.0)
    return [start_s + (i + 0.5) * span / frames for i in range(frames)]


def window_seed(global_seed: int, video_id: str, window_index: int, stream: str, sample_index: int = 0) -> int:
    """A 63-bit seed from (global seed, video, window, what it seeds, sample): re-runs draw the same noise."""
    key = f"{global_seed}/{video_id}/{window_index}/{stream}/{sample_index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)
