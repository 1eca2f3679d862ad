"""Draw the spectrogram of one dubbed video's generated track with its shot borders and window borders marked.

    python -m jobs.plot_windows --output DIR --video RELATIVE_PATH --figure FILE.png

The windows and shots come from the job's manifest (its `windows` column); the sound from the published output.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from PIL import Image  # noqa: E402
from scipy.signal import spectrogram  # noqa: E402

from foley.media.probe import decode_audio  # noqa: E402
from foley.media.windows import Window  # noqa: E402

SAMPLE_RATE = 16000  # AudioLDM's rate: the generated track holds nothing above 8 kHz
FFT_SIZE = 256  # 16 ms
FRAMES_PER_COLUMN = 4  # 64 ms per column of the image
PALETTE_COLOURS = 64


def plot(audio: np.ndarray, windows: list[Window], title: str) -> bytes:
    frequencies, times, power = spectrogram(audio, fs=SAMPLE_RATE, nperseg=FFT_SIZE, noverlap=0)
    columns = power.shape[1] // FRAMES_PER_COLUMN * FRAMES_PER_COLUMN  # averaged in time: a small, legible image
    power = power[:, :columns].reshape(len(frequencies), -1, FRAMES_PER_COLUMN).mean(axis=2)
    times = times[:columns].reshape(-1, FRAMES_PER_COLUMN).mean(axis=1)
    figure, axis = plt.subplots(figsize=(9, 2.8))
    axis.pcolormesh(times, frequencies / 1000, 10 * np.log10(power + 1e-10), shading="auto", cmap="magma")
    for index, window in enumerate(windows):
        if index and window.shot != windows[index - 1].shot:
            axis.axvline(window.start_s, color="cyan", linewidth=2, label="cut" if index == 1 else None)
        elif index:
            axis.axvline(window.start_s, color="white", linestyle="--", linewidth=1)
    axis.set(xlabel="seconds", ylabel="kHz", title=title)
    axis.legend(loc="upper right")
    rendered, sink = io.BytesIO(), io.BytesIO()
    figure.savefig(rendered, format="png", dpi=80, bbox_inches="tight")
    plt.close(figure)
    Image.open(rendered).quantize(PALETTE_COLOURS).save(sink, format="png", optimize=True)  # a fifth of the bytes
    return sink.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.plot_windows", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=Path, help="the output folder of a finished jobs.dub run")
    parser.add_argument("--video", required=True, help="the input's relative path, as in the manifest")
    parser.add_argument("--figure", required=True, type=Path)
    args = parser.parse_args(argv)
    rows = pq.read_table(args.output / "_manifest" / "manifest.parquet").to_pylist()
    row = next((row for row in rows if row["relative_path"] == args.video and row["status"] == "ok"), None)
    if row is None:
        print(f"error: the manifest under {args.output} has no finished row for {args.video}", file=sys.stderr)
        return 2
    windows = [Window(**window) for window in row["windows"]]
    audio = decode_audio(Path(row["output_uri"]), 0.0, row["duration_s"], SAMPLE_RATE)
    shots = windows[-1].shot + 1
    title = f"{args.video}: {shots} shots, {len(windows)} windows (cuts solid, other window borders dashed)"
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    args.figure.write_bytes(plot(audio, windows, title))
    print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
