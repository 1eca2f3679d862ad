"""How visible the stitches between windows are: spectral flux at the window borders against inside the windows.

Spectral flux (the summed rise of the magnitude spectrum from one frame to the next) is high wherever the sound
changes abruptly. The seam score compares its peaks over the crossfades between windows of one shot with its peaks
over stretches as long inside the windows: 1.0 means the borders cannot be told from the rest; a click or a jump
raises it. Borders at
shot cuts are left out, since the sound is meant to change there.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import stft

from foley.media.stitch import TrackLayout


def spectral_flux(track: np.ndarray, sample_rate: int, frame: int, hop: int) -> tuple[np.ndarray, np.ndarray]:
    """(centre time of each frame in seconds, flux into that frame)."""
    _, times, spectrum = stft(track, fs=sample_rate, nperseg=frame, noverlap=frame - hop, boundary=None, padded=False)
    magnitude = np.abs(spectrum)
    flux = np.maximum(np.diff(magnitude, axis=1), 0.0).sum(axis=0)
    return times[1:], flux


def seam_score(track: np.ndarray, layout: TrackLayout, frame: int, hop: int) -> float:
    """The peak spectral flux over each crossfade between windows of one shot, on average, divided by the peak over
    stretches of the same length inside the windows: a stitch shows as a peak (a click, a jump), however long its
    crossfade. NaN without such a crossfade."""
    fades = [layout.fade(i) for i in range(layout.count - 1) if layout.shots[i] == layout.shots[i + 1]]
    if not fades or len(track) < 2 * frame:
        return math.nan
    times, flux = spectral_flux(np.asarray(track, dtype=np.float64), layout.sample_rate, frame, hop)
    samples = times * layout.sample_rate
    at_border = np.zeros(len(flux), dtype=bool)
    border_peaks = []
    for start, end in fades:  # a frame touching the crossfade counts as on it
        touching = (samples + frame / 2 > start) & (samples - frame / 2 < end)
        border_peaks.append(flux[touching].max())
        at_border |= touching
    span = max(1, round(np.mean([end - start for start, end in fades]) / hop))
    inside = flux[~at_border]
    inside_peaks = [inside[i : i + span].max() for i in range(0, len(inside) - span + 1, span)]
    return float(np.mean(border_peaks) / np.mean(inside_peaks)) if inside_peaks else math.nan
