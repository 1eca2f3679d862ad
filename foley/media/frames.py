"""Which decoded frame shows at each moment a window samples, and how decord's frames must be turned to appear as
displayed (CLIP should see a phone video upright)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from foley.media.probe import VideoInfo
from foley.media.windows import frame_indices, sample_times

# How far (in frames) frame timestamps may stray from index / fps for a video to count as constant-frame-rate:
# containers round timestamps (Matroska to 1 ms: 0.15 frame even at 300 fps), while a variable rate or a dropped
# frame moves the frames after it by whole frames.
CFR_TOLERANCE_FRAMES = 0.25


def decord_turns_upright(info: VideoInfo) -> bool:
    """Whether decord returns this input's frames already turned as displayed.

    decord 0.6 (its wheel bundles libavformat 58) reads a rotation only as a "rotate" tag, which that libavformat
    makes from a mov/mp4 display matrix, and applies it before scaling. A display matrix in another container
    (newer ffprobes read some) reaches decord unnoticed; those frames are turned here instead, never twice.
    """
    return info.rotation_tagged or "mov" in info.container.split(",")


def quarter_turns_left(info: VideoInfo) -> int:
    """Counterclockwise quarter turns (np.rot90's k) that decord's frames still need to appear as displayed."""
    return 0 if decord_turns_upright(info) else info.rotation // 90


@dataclass(frozen=True)
class FrameSampler:
    """Which decoded frame shows at each wanted moment.

    A constant-frame-rate video keeps frame_indices' arithmetic (index = time x fps), so it samples exactly the
    frames it always did; any other video (variable rate, dropped frames) is sampled by each frame's own
    presentation time: the frame on screen at time t is the last one that starts at or before t.
    """

    starts: np.ndarray  # each frame's start in seconds, from the first frame
    fps: float  # > 0 only when every frame starts on the index / fps grid

    @classmethod
    def for_reader(cls, reader, info: VideoInfo) -> FrameSampler:
        count = len(reader)
        fps = reader.get_avg_fps() or info.fps
        try:
            starts = reader.get_frame_timestamp(np.arange(count))[:, 0].astype(np.float64)
        except Exception:  # noqa: BLE001 - decord raises its own error types; the rate still places the frames
            starts = np.full(count, np.nan)
        starts -= starts[0]
        if not (np.all(np.isfinite(starts)) and np.all(np.diff(starts) >= 0)):  # no usable timestamps: use a rate
            fps = fps or count / info.duration_s
            return cls(np.arange(count) / fps, fps)
        on_grid = fps > 0 and np.max(np.abs(starts - np.arange(count) / fps)) <= CFR_TOLERANCE_FRAMES / fps
        return cls(starts, fps if on_grid else 0.0)

    def indices(self, start_s: float, end_s: float, frames: int) -> list[int]:
        if self.fps > 0:
            return frame_indices(start_s, end_s, self.fps, len(self.starts), frames)
        on_screen = np.searchsorted(self.starts, np.asarray(sample_times(start_s, end_s, frames)), side="right") - 1
        return np.clip(on_screen, 0, len(self.starts) - 1).tolist()
