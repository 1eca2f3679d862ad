"""A small picture of a generated track: its spectrogram with the shot cuts and the other window borders marked.

Any length of track gives a picture of at most `columns` columns, each the mean power of a few FFT frames spread
over its stretch, so an hour costs no more memory than a minute. Saved as a quantized PNG (a fifth of the bytes).
"""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from foley.media.windows import Window  # noqa: E402

FFT_SIZE = 256  # 16 ms at AudioLDM's 16 kHz
FRAMES_PER_COLUMN = 4
PALETTE_COLOURS = 64
FLOOR = 1e-10  # power floor before taking decibels (silence)


def column_power(track: np.ndarray, sample_rate: int, columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(times, frequencies, power[frequency, column]): FRAMES_PER_COLUMN frames averaged per column."""
    columns = max(1, min(columns, len(track) // (FFT_SIZE * FRAMES_PER_COLUMN)))
    starts = np.linspace(0, max(len(track) - FFT_SIZE, 0), columns * FRAMES_PER_COLUMN).astype(int)
    frames = np.stack([track[start : start + FFT_SIZE] for start in starts]) * np.hanning(FFT_SIZE)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    power = power.reshape(columns, FRAMES_PER_COLUMN, -1).mean(axis=1).T
    times = (starts.reshape(columns, FRAMES_PER_COLUMN).mean(axis=1) + FFT_SIZE / 2) / sample_rate
    return times, np.fft.rfftfreq(FFT_SIZE, 1 / sample_rate), power


def spectrogram_png(
    track: np.ndarray,
    sample_rate: int,
    windows: list[Window],
    title: str,
    size_inches: tuple[float, float],
    columns: int,
    dpi: int = 80,
) -> bytes:
    times, frequencies, power = column_power(np.asarray(track, dtype=np.float32), sample_rate, columns)
    figure, axis = plt.subplots(figsize=size_inches)
    axis.pcolormesh(times, frequencies / 1000, 10 * np.log10(power + FLOOR), shading="auto", cmap="magma")
    for index, window in enumerate(windows):
        if index and window.shot != windows[index - 1].shot:
            axis.axvline(window.start_s, color="cyan", linewidth=2, label="cut" if index == 1 else None)
        elif index:
            axis.axvline(window.start_s, color="white", linestyle="--", linewidth=1)
    axis.set(xlabel="seconds", ylabel="kHz", title=title)
    if any(index and w.shot != windows[index - 1].shot for index, w in enumerate(windows)):
        axis.legend(loc="upper right")
    rendered, sink = io.BytesIO(), io.BytesIO()
    figure.savefig(rendered, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(figure)
    Image.open(rendered).quantize(PALETTE_COLOURS).save(sink, format="png", optimize=True)
    return sink.getvalue()
