"""Draw the spectrogram of one dubbed video's generated track with its shot borders and window borders marked.

    python -m jobs.plot_windows --output DIR --video RELATIVE_PATH --figure FILE.png

The windows and shots come from the job's manifest (its `windows` column, read with its journal, so a run still
going or killed is read too); the sound from the published output.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from foley.config import StorageConfig
from foley.media.probe import decode_audio
from foley.media.spectrogram import spectrogram_png
from foley.media.windows import Window
from foley.pipeline.kinds import DUB
from foley.pipeline.manifest import Manifest
from foley.storage.store import Storage
from foley.storage.uris import StorageError

SAMPLE_RATE = 16000  # AudioLDM's rate: the generated track holds nothing above 8 kHz
FIGURE_INCHES = (9, 2.8)
COLUMNS = 600


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.plot_windows", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=Path, help="the output folder of a finished jobs.dub run")
    parser.add_argument("--video", required=True, help="the input's relative path, as in the manifest")
    parser.add_argument("--figure", required=True, type=Path)
    args = parser.parse_args(argv)
    try:
        rows = Manifest(str(args.output), Storage(StorageConfig()), DUB).current().values()
    except StorageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    row = next((row for row in rows if row["relative_path"] == args.video and row["status"] == "ok"), None)
    if row is None:
        print(f"error: the manifest under {args.output} has no finished row for {args.video}", file=sys.stderr)
        return 2
    windows = [Window(**window) for window in row["windows"]]
    audio = decode_audio(Path(row["output_uri"]), 0.0, row["duration_s"], SAMPLE_RATE)
    shots = windows[-1].shot + 1
    title = f"{args.video}: {shots} shots, {len(windows)} windows (cuts solid, other window borders dashed)"
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    args.figure.write_bytes(spectrogram_png(audio, SAMPLE_RATE, windows, title, FIGURE_INCHES, COLUMNS))
    print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
