"""What ranked candidates cost: AudioLDM seconds per window with 1 and with N candidates, side by side in one run.

    python -m jobs.bench.candidates --preset tiny|full [--windows 2] [--candidates 3] --out DIR

With N candidates every window is generated N times in one forward pass (the windows x N samples batched), then
each sample is embedded by AudioLDM's CLAP audio branch and scored; both are timed, as the stage runs them. On a
CPU the forward pass costs about N times as much, since the cores are busy with one sample already; on a GPU a
batch of N fills it better, so the cost should grow less than N-fold until the GPU is full. jobs.bench runs the
same measurement (jobs.bench.cases.measure_candidates) among its A/B cases.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from foley.config import FoleyConfig, load_config
from foley.pipeline.kinds import DUB
from foley.pipeline.rows import new_row
from foley.storage.inputs import InputItem
from jobs.bench.cases import measure_candidates

ROOT = Path(__file__).resolve().parents[2]


def window_rows(config: FoleyConfig, count: int, clap_dim: int) -> list[dict]:
    """`count` one-window rows with random unit CLAP conditions, as the mapper hands them over."""
    rng = np.random.default_rng(0)
    rows = []
    for index in range(count):
        row = new_row(InputItem(f"window{index}.mp4", f"window{index}.mp4"), "", config, DUB)
        direction = rng.standard_normal((1, clap_dim)).astype(np.float32)
        row.update(
            duration_s=config.window.seconds,
            n_windows=1,
            windows=json.dumps([{"start_s": 0.0, "end_s": config.window.seconds, "shot": 0}]),
            clap_embeddings=direction / np.linalg.norm(direction),
        )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    from jobs.bench.__main__ import PRESETS, build_models  # noqa: PLC0415 - the bench's command line imports this module

    parser = argparse.ArgumentParser(prog="python -m jobs.bench.candidates", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--windows", type=int, default=2, help="windows generated together (default 2)")
    parser.add_argument("--candidates", type=int, default=3, help="candidates per window (default 3)")
    parser.add_argument("--out", type=Path, required=True, help="folder for models and results")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    overrides = [*build_models(args.preset, args.out / f"models-{args.preset}"), *args.overrides]
    config = load_config(ROOT / PRESETS[args.preset].config, overrides)
    cores = os.cpu_count() or 1
    clap_dim = 512  # AudioLDM s-full-v2's and the tiny models' CLAP space
    result = measure_candidates(
        config, window_rows(config, args.windows, clap_dim), args.out / "work", 1, cores, args.candidates
    )
    (args.out / "candidates.json").write_text(json.dumps(result, indent=2))
    for side in ("baseline", "optimized"):
        print(f"{result[side]:<45} {1 / result[f'{side}_per_s']:8.2f} s per window")
    print(
        f"cost ratio: {result['baseline_per_s'] / result['optimized_per_s']:.2f}x the seconds of one candidate "
        f"({args.windows} windows, {cores} cores, {config.audioldm.steps} steps)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
