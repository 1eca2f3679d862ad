"""Turning per-window waveforms into one continuous track."""

from __future__ import annotations

import numpy as np

from foley.media.windows import WindowPlan


def crossfade_envelopes(plan: WindowPlan) -> list[np.ndarray]:
    """Gain per sample for each window: equal-power (sin/cos) ramps over the overlaps, 1 elsewhere.

    In every overlap the squared gains sum to 1, so uncorrelated windows keep a constant loudness and no sample
    of the track is left uncovered.
    """
    theta = (np.arange(plan.overlap, dtype=np.float64) + 0.5) / max(plan.overlap, 1) * (np.pi / 2)
    fade_in, fade_out = np.sin(theta), np.cos(theta)
    envelopes = []
    for index in range(plan.count):
        envelope = np.ones(plan.length, dtype=np.float64)
        if plan.overlap and index > 0:
            envelope[: plan.overlap] = fade_in
        if plan.overlap and index < plan.count - 1:
            envelope[plan.length - plan.overlap :] = fade_out
        envelopes.append(envelope)
    return envelopes


def stitch_windows(waveforms: np.ndarray, plan: WindowPlan) -> np.ndarray:
    """(count, >=length) waveforms -> one float32 track of exactly plan.total samples."""
    if waveforms.shape[0] != plan.count or waveforms.shape[1] < plan.length:
        raise ValueError(
            f"expected {plan.count} windows of at least {plan.length} samples, got array of shape {waveforms.shape}"
        )
    track = np.zeros(max(plan.start(plan.count - 1) + plan.length, plan.total), dtype=np.float64)
    for index, envelope in enumerate(crossfade_envelopes(plan)):
        start = plan.start(index)
        track[start : start + plan.length] += waveforms[index, : plan.length] * envelope
    return track[: plan.total].astype(np.float32)


def normalize_peak(track: np.ndarray, peak_dbfs: float | None) -> np.ndarray:
    """Scale so the loudest sample sits at `peak_dbfs`; a silent track stays silent."""
    peak = float(np.max(np.abs(track))) if track.size else 0.0
    if peak_dbfs is None or peak == 0.0:
        return track
    return (track * (10 ** (peak_dbfs / 20) / peak)).astype(np.float32)
