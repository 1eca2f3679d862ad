"""Peak memory of the Mux stage for one long video, under both designs, side by side in one run.

    python -m jobs.bench.mux_memory [--seconds 3600] [--segment-windows 16] --out DIR

- whole: the video's every window arrives in one row (the design before segments): the row holds all waveforms;
- segments: the windows arrive as staged segments, and the track is assembled one segment at a time.

Each design runs in a fresh process that publishes the same video (a silent test clip of that length) with the same
random waveforms (speed and memory do not depend on their values); its peak resident memory (ru_maxrss) is
reported, with the same process's memory before the row arrives, so the difference is the stage's own cost.
ffmpeg runs in a child process of its own and is not counted.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from foley.config import FoleyConfig, load_config
from foley.media.render import render_test_video
from foley.media.windows import plan_windows
from foley.pipeline.kinds import DUB
from foley.pipeline.rows import batch_of, new_row, rows_of
from foley.pipeline.segments import ASSEMBLE_ONLY, SegmentStaging, segment_ranges
from foley.storage.inputs import InputItem
from foley.storage.store import Storage

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_RATE = 16000  # AudioLDM's


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def noise(rng: np.random.Generator, windows: int, length: int) -> np.ndarray:
    """Waveforms drawn in float32 directly: a float64 draw would double the peak being measured."""
    values = rng.random((windows, length), dtype=np.float32)
    values -= np.float32(0.5)
    return values


def publish_once(config: FoleyConfig, video: Path, out: Path, design: str, segment_windows: int) -> dict:
    """In a fresh process: build the row(s) as the design delivers them, publish, report memory."""
    from workers.mux import Mux  # noqa: PLC0415 - imported in the measured process only

    duration = float(config.input.max_duration_s)
    window = config.window
    windows = plan_windows([0.0, duration], window.seconds, window.overlap_seconds, window.cut_crossfade_seconds)
    length = round(window.seconds * SAMPLE_RATE)
    row = new_row(InputItem(str(video), video.name), str(out / design / video.name), config, DUB)
    row.update(
        duration_s=duration,
        n_windows=len(windows),
        windows=json.dumps([w.as_dict() for w in windows]),
        sample_rate=SAMPLE_RATE,
        run_id=design,
        staging_uri=str(out / f"staging-{design}"),
    )
    rng = np.random.default_rng(0)
    mux = Mux(config, str(out / design))
    if design == "segments":  # the earlier segments were staged by other rows; this one completes the video
        ranges = segment_ranges(len(windows), segment_windows)
        staging = SegmentStaging(Storage(config.storage), row["staging_uri"], ranges)
        for index, (first, end) in enumerate(ranges):
            info = {"first_window": first, "windows": end - first, "synthesize_worker": "bench", "run_id": design}
            info |= {f"seconds_{stage}": 0.0 for stage in ("decode_embed", "map", "synthesize")}
            staging.stage(index, noise(rng, end - first, length), info)
        row.update(segment=ASSEMBLE_ONLY, segment_count=len(ranges), segment_windows=segment_windows)
        before = peak_rss_mb()
    else:
        before = peak_rss_mb()
        row["waveforms"] = noise(rng, len(windows), length)
    [result] = rows_of(mux(batch_of([row])))  # as Ray Data calls the stage
    if result["status"] != "ok":
        raise RuntimeError(f"{design}: {result['error']}")
    return {"design": design, "windows": len(windows), "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench.mux_memory", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3600.0, help="length of the video")
    parser.add_argument("--segment-windows", type=int, default=16)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    config = load_config(
        ROOT / "configs/tiny.yaml", [f"input.max_duration_s={args.seconds}", f"storage.cache_dir={args.out / 'cache'}"]
    )
    video = render_test_video(args.out / "long.mp4", args.seconds, 160, 96, 1)
    results = []
    for design in ("whole", "segments"):  # each in a fresh process, one after the other
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            results.append(pool.submit(publish_once, config, video, args.out, design, args.segment_windows).result())
    for result in results:
        print(
            f"{result['design']:<9} {result['windows']} windows: peak {result['peak_rss_mb']:.0f} MB, "
            f"{result['peak_rss_mb'] - result['rss_before_mb']:.0f} MB over the process before the row arrived"
        )
    whole, segments = results
    print(f"segments / whole, peak: {segments['peak_rss_mb'] / whole['peak_rss_mb']:.2f}")
    (args.out / "mux_memory.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
