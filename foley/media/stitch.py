"""Turning per-window waveforms into one continuous track, a segment of windows at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from foley.media.windows import Window


@dataclass(frozen=True)
class TrackLayout:
    """Where each window's sound sits in the track, in samples.

    Window i's sound (`length` samples, generated from its start) plays over [starts[i], ends[i]), plus the fade
    into the next window: within a shot over their overlap, at a cut over `cut_crossfade` samples after it."""

    sample_rate: int
    length: int
    starts: tuple[int, ...]
    ends: tuple[int, ...]
    shots: tuple[int, ...]
    cut_crossfade: int
    total: int

    @classmethod
    def of(cls, windows: list[Window], duration_s: float, window_s: float, cut_crossfade_s: float, sample_rate: int):
        return cls(
            sample_rate=sample_rate,
            length=round(window_s * sample_rate),
            starts=tuple(round(w.start_s * sample_rate) for w in windows),
            ends=tuple(round(w.end_s * sample_rate) for w in windows),
            shots=tuple(w.shot for w in windows),
            cut_crossfade=round(cut_crossfade_s * sample_rate),
            total=max(1, round(duration_s * sample_rate)),
        )

    @property
    def count(self) -> int:
        return len(self.starts)

    def fade(self, index: int) -> tuple[int, int]:
        """(start, end) in samples of the crossfade from window `index` into window `index + 1`."""
        start = self.starts[index + 1]
        if self.shots[index] == self.shots[index + 1]:
            return start, self.ends[index]  # their overlap
        available = self.starts[index] + self.length - start  # what the window before the cut generated past it
        return start, start + max(0, min(self.cut_crossfade, available, self.ends[index + 1] - start))

    def envelope(self, index: int) -> np.ndarray:
        """Gain over the window's `length` samples: equal-power (sin/cos) ramps over its fades, 1 between, 0 after.

        In every fade the squared gains of the two windows sum to 1, so uncorrelated windows keep a constant
        loudness and no sample of the track is left uncovered."""
        start = self.starts[index]
        envelope = np.zeros(self.length, dtype=np.float64)
        stop = self.fade(index)[1] if index < self.count - 1 else self.ends[index]
        envelope[: stop - start] = 1.0
        if index > 0:
            fade_start, fade_end = self.fade(index - 1)
            envelope[fade_start - start : fade_end - start] = np.sin(_ramp(fade_end - fade_start))
        if index < self.count - 1:
            fade_start, fade_end = self.fade(index)
            envelope[fade_start - start : fade_end - start] *= np.cos(_ramp(fade_end - fade_start))
        return envelope


def _ramp(samples: int) -> np.ndarray:
    return (np.arange(samples, dtype=np.float64) + 0.5) / max(samples, 1) * (np.pi / 2)


class TrackBuilder:
    """Adds windows into the track as their segments arrive; only the track and one segment are in memory."""

    def __init__(self, layout: TrackLayout):
        self.layout = layout
        self.track = np.zeros(max(layout.starts[-1] + layout.length, layout.total), dtype=np.float32)

    def add(self, first_window: int, waveforms: np.ndarray) -> None:
        """Windows `first_window`, `first_window + 1`, ...: (windows, >= length) float32 waveforms."""
        layout = self.layout
        if waveforms.ndim != 2 or waveforms.shape[1] < layout.length or first_window + len(waveforms) > layout.count:
            raise ValueError(
                f"expected up to {layout.count - first_window} windows of at least {layout.length} samples from "
                f"window {first_window}, got an array of shape {waveforms.shape}"
            )
        for offset, waveform in enumerate(waveforms):
            index = first_window + offset
            start = layout.starts[index]
            self.track[start : start + layout.length] += (waveform[: layout.length] * layout.envelope(index)).astype(
                np.float32
            )

    def result(self) -> np.ndarray:
        return self.track[: self.layout.total]


def track_problem(track: np.ndarray, max_dc_fraction: float) -> str:
    """Why a generated track is no sound to publish, or '': samples that are not finite numbers (a NaN, an inf, or
    values beyond float32's range), or a track that is mostly a constant offset (a DC line, which peak
    normalisation would turn into a full-scale flat line). One pass over the track, no copy of it."""
    energy = float(np.dot(track, track)) if track.size else 0.0
    if not math.isfinite(energy):
        return "the generated audio holds samples that are not finite numbers (NaN, inf or overflow)"
    if energy > 0.0:
        dc_fraction = float(track.mean(dtype=np.float64)) ** 2 * track.size / energy
        if dc_fraction > max_dc_fraction:
            return f"the generated audio is {dc_fraction:.0%} constant offset (a DC line, not sound)"
    return ""


def normalize_peak(track: np.ndarray, peak_dbfs: float | None) -> np.ndarray:
    """Scale so the loudest sample sits at `peak_dbfs`, in place; a silent track stays silent."""
    peak = max(float(track.max()), -float(track.min())) if track.size else 0.0  # no |track| copy of an hour
    if peak_dbfs is not None and peak > 0.0:
        track *= np.float32(10 ** (peak_dbfs / 20) / peak)
    return track
