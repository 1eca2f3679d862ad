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
class WindowPlan:
    """The same windows in audio samples: `count` windows of `length`, every `hop`, over `total` samples."""

    sample_rate: int
    length: int
    hop: int
    count: int
    total: int

    @classmethod
    def for_video(cls, duration_s: float, window_s: float, overlap_s: float, sample_rate: int) -> WindowPlan:
        length = round(window_s * sample_rate)
        return cls(
            sample_rate=sample_rate,
            length=length,
            hop=length - round(overlap_s * sample_rate),
            count=window_count(duration_s, window_s, overlap_s),
            total=max(1, round(duration_s * sample_rate)),
        )

    @property
    def overlap(self) -> int:
        return self.length - self.hop

    def start(self, index: int) -> int:
        return index * self.hop


def sample_times(start_s: float, end_s: float, frames: int) -> list[float]:
    """The moments a window samples: the centre of each of `frames` equal slices of [start_s, end_s)."""
    span = max(end_s - start_s, 0.0)
    return [start_s + (i + 0.5) * span / frames for i in range(frames)]


def frame_indices(start_s: float, end_s: float, fps: float, frame_count: int, frames: int) -> list[int]:
    """The frames of a constant-frame-rate video shown at a window's sample times."""
    return [min(max(int(t * fps), 0), frame_count - 1) for t in sample_times(start_s, end_s, frames)]


def window_seed(global_seed: int, video_id: str, window_index: int, stream: str, sample_index: int = 0) -> int:
    """A 63-bit seed from (global seed, video, window, what it seeds, sample): re-runs draw the same noise."""
    key = f"{global_seed}/{video_id}/{window_index}/{stream}/{sample_index}".encode()
    return int.from_bytes(hashlib.sha256(key).digest()[:8], "little") & (2**63 - 1)
