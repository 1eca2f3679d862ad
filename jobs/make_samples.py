"""Render a folder of silent sample videos (test patterns) of assorted sizes, frame rates, lengths and containers.

python -m jobs.make_samples [--output samples]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from foley.media.render import render_film, render_test_video

# (relative path, seconds, width, height, fps): one clip longer than two 10.24-s windows, several containers.
SAMPLES = (
    ("street.mp4", 4.0, 320, 240, 25),
    ("beach/waves.mov", 6.5, 256, 144, 30),
    ("beach/long_walk.mp4", 23.0, 320, 180, 24),
    ("kitchen.mkv", 3.2, 160, 120, 15),
    ("forest.webm", 5.0, 240, 160, 25),
)
# A clip of three shots with hard cuts at 4 s and 18 s: its windows follow the shots (the long middle shot is tiled).
THREE_SHOTS = ("three_shots.mp4", (("testsrc2", 4.0), ("smptebars", 14.0), ("mandelbrot", 5.0)), 320, 180, 25)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.make_samples", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="samples", type=Path)
    args = parser.parse_args(argv)
    for relative, seconds, width, height, fps in SAMPLES:
        path = render_test_video(args.output / relative, seconds, width, height, fps)
        print(f"{path}  {seconds:.1f} s  {width}x{height} @ {fps} fps")
    relative, shots, width, height, fps = THREE_SHOTS
    path = render_film(args.output / relative, list(shots), width, height, fps)
    print(f"{path}  {sum(seconds for _, seconds in shots):.1f} s  {width}x{height} @ {fps} fps, {len(shots)} shots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
