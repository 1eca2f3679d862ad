"""The same clips as a folder of WebDataset shards and as loose files, dubbed side by side in one run.

    python -m jobs.bench.shards [--preset tiny|full] [--videos 16] [--seconds 6] [--per-shard 4] [--rounds 2] --out DIR

Each round runs `jobs.dub` once per layout, in alternating order, each in a fresh process with a local Ray of its
own, so the noise of this machine falls on both alike. While a run lasts, its process tree is sampled every
`--sample-s` seconds: the driver's peak resident memory, and the largest peak of any Ray worker process. Reported
per layout: the median wall time over the rounds, that time per sample, and the ratio of shards to loose files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import psutil

from jobs.bench.__main__ import PRESETS, RELAXED_CHECKS, ROOT, build_models, render_videos

LAYOUTS = ("loose", "shards")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench.shards", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--videos", type=int, default=16, help="clips, the same in both layouts")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each clip")
    parser.add_argument("--per-shard", type=int, default=4, help="samples per shard")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each layout, alternating")
    parser.add_argument("--sample-s", type=float, default=0.2, help="how often the memory is sampled")
    parser.add_argument("--out", type=Path, required=True, help="folder for models, clips and results")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")
    return parser.parse_args(argv)


def write_layouts(clips: list[Path], folder: Path, per_shard: int) -> dict[str, Path]:
    """The clips as loose files, and as shards of `per_shard` samples (each clip with a caption member)."""
    loose, shards = folder / "loose", folder / "shards"
    for layout in (loose, shards):
        layout.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        if not (loose / clip.name).exists():
            os.link(clip, loose / clip.name)
    for start in range(0, len(clips), per_shard):
        with tarfile.open(shards / f"shard-{start // per_shard:06d}.tar", "w") as shard:
            for clip in clips[start : start + per_shard]:
                shard.add(clip, arcname=clip.name)
                caption = tarfile.TarInfo(f"{clip.stem}.txt")
                text = b"a passing train"
                caption.size = len(text)
                shard.addfile(caption, io.BytesIO(text))
    return {"loose": loose, "shards": shards}


class TreeMemory:
    """Peak resident memory of a process (the driver) and of its descendants (Ray's workers), sampled."""

    def __init__(self, pid: int, every_s: float):
        self.root, self.every_s = psutil.Process(pid), every_s
        self.driver_mb = self.worker_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                self.driver_mb = max(self.driver_mb, self.root.memory_info().rss / 2**20)
                children = self.root.children(recursive=True)
            except psutil.Error:
                return  # the driver ended
            for child in children:
                try:
                    command = " ".join(child.cmdline())  # a Ray worker renames itself ray::<its actor>
                    if command.startswith("ray::") or "default_worker.py" in command:
                        self.worker_mb = max(self.worker_mb, child.memory_info().rss / 2**20)
                except psutil.Error:
                    continue  # a worker that ended between the listing and the reading

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def run_layout(source: Path, output: Path, config: Path, overrides: list[str], every_s: float) -> dict:
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}  # a local Ray of its own
    command = [sys.executable, "-m", "jobs.dub", "--input", str(source), "--output", str(output)]
    command += ["--config", str(config), "--force", *overrides]
    started = time.perf_counter()
    job = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    memory = TreeMemory(job.pid, every_s)
    said, _ = job.communicate()
    seconds = time.perf_counter() - started
    memory.stop()
    if job.returncode != 0:
        raise RuntimeError(f"jobs.dub on {source} exited with {job.returncode}:\n{said[-3000:]}")
    return {"seconds": seconds, "driver_mb": memory.driver_mb, "worker_mb": memory.worker_mb}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"building {args.preset} models and {args.videos} clips of {args.seconds:g} s ...", flush=True)
    overrides = [*build_models(args.preset, args.out / f"models-{args.preset}"), *RELAXED_CHECKS, *args.overrides]
    overrides += ["output.mode=both", "input.prompt_from=txt"]  # a shard's whole output; captions as prompts
    clips = render_videos(args.out / "videos", args.videos, args.seconds)[: args.videos]
    layouts = write_layouts(clips, args.out / f"layouts-{args.videos}-{args.per_shard}", args.per_shard)
    runs: dict[str, list[dict]] = {layout: [] for layout in LAYOUTS}
    for round_index in range(args.rounds):
        order = LAYOUTS if round_index % 2 == 0 else LAYOUTS[::-1]
        for layout in order:
            print(f"round {round_index + 1}/{args.rounds}: {layout} ...", flush=True)
            output = args.out / "work" / layout
            runs[layout].append(run_layout(layouts[layout], output, ROOT / preset.config, overrides, args.sample_s))
    summary = {
        layout: {
            "seconds": statistics.median(run["seconds"] for run in measured),
            "per_sample_s": statistics.median(run["seconds"] for run in measured) / args.videos,
            "driver_peak_mb": max(run["driver_mb"] for run in measured),
            "worker_peak_mb": max(run["worker_mb"] for run in measured),
        }
        for layout, measured in runs.items()
    }
    report = {"preset": args.preset, "videos": args.videos, "seconds": args.seconds, "per_shard": args.per_shard}
    report |= {"rounds": args.rounds, "layouts": summary, "runs": runs}
    (args.out / "shards.json").write_text(json.dumps(report, indent=2))
    print(table(summary))
    print(f"wrote {args.out / 'shards.json'}")
    return 0


def table(summary: dict[str, dict]) -> str:
    loose = summary["loose"]
    lines = [
        "| layout | wall s (median) | s per sample | vs loose | driver peak MB | largest worker peak MB |",
        "|---|---|---|---|---|---|",
    ]
    for layout, row in summary.items():
        lines.append(
            f"| {layout} | {row['seconds']:.1f} | {row['per_sample_s']:.2f} | "
            f"{row['seconds'] / loose['seconds']:.2f}x | {row['driver_peak_mb']:.0f} | {row['worker_peak_mb']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
