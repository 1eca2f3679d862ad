"""Each stage alone: its public methods timed in fresh spawned processes laid out as its actor pool (workers x
threads), model loading excluded, each stage fed the previous one's outputs."""

from __future__ import annotations

import os
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from foley.config import FoleyConfig
from foley.pipeline.kinds import DUB
from foley.pipeline.rows import batch_of, new_row, rows_of
from foley.storage.inputs import InputItem
from workers.decode_embed import DecodeEmbed, record_windows
from workers.map import Map
from workers.mux import Mux
from workers.synthesize import Synthesize


def dub_rows(config: FoleyConfig, videos: list[Path], output_folder: Path) -> list[dict]:
    """The videos' rows as they enter the dub pipeline, with their outputs in `output_folder`."""
    return [new_row(InputItem(str(path), path.name), str(output_folder / path.name), config, DUB) for path in videos]


def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not inherit the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _process_cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _decode(instance: DecodeEmbed, rows: list[dict]) -> list[tuple[dict, list[np.ndarray]]]:
    """DecodeEmbed's probe, window plan and decode of the sampled frames only; the frames go on to `_embed`."""
    outputs = []
    for row in rows:
        path, info = instance.probe_input(row)
        windows = instance.plan_windows(path, info)
        record_windows(row, windows)
        outputs.append((row, list(instance.frames.window_frames(path, info, windows))))
    return outputs


def _embed(instance: DecodeEmbed, items: list[tuple[dict, list[np.ndarray]]]) -> list[dict]:
    """DecodeEmbed's CLIP embedding of each decoded group of windows."""
    outputs = []
    for row, frames in items:
        row["clip_embeddings"] = np.concatenate([instance.embed_frames(group) for group in frames])
        outputs.append(row)
    return outputs


def _stage_worker(stage: str, config: FoleyConfig, items: list, output_root: str) -> dict:
    """Runs in a fresh process: build the stage as its actor would, run it over `items`, measure it."""
    started = time.perf_counter()
    if stage in ("decode", "clip"):
        instance = DecodeEmbed(config)
    elif stage == "mux":
        instance = Mux(config, output_root)
    else:
        instance = {"map": Map, "synthesize": Synthesize}[stage](config)
    loaded, cpu_before = time.perf_counter(), _process_cpu_seconds()
    if stage == "decode":
        outputs = _decode(instance, items)
    elif stage == "clip":
        outputs = _embed(instance, items)
    else:
        batch_size = getattr(config.stages, stage).batch_size
        outputs = []
        for first in range(0, len(items), batch_size):
            outputs += rows_of(instance(batch_of(items[first : first + batch_size])))
    finished = time.perf_counter()
    return {
        "outputs": outputs,
        "load_s": loaded - started,
        "seconds": finished - loaded,
        "cpu_s": _process_cpu_seconds() - cpu_before,
        "peak_rss_mb": _peak_rss_mb(),
    }


def warm_processes(count: int) -> ProcessPoolExecutor:
    """Spawned processes that run one measurement after another: imports are paid once, not per measurement. For
    A/B rates only; a stage's peak memory is measured in fresh processes (see run_stage)."""
    return ProcessPoolExecutor(max_workers=count, mp_context=get_context("spawn"))


def run_stage(
    stage: str,
    config: FoleyConfig,
    items: list,
    workers: int,
    threads: int,
    output_root: Path,
    warm: ProcessPoolExecutor | None = None,
) -> dict:
    """The stage over `items`, split across `workers` processes of `threads` threads, all at once: fresh processes,
    so that the peak memory is this stage's own, or the `warm` ones (which must hold at least `workers`)."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # as Ray sets it for an actor; inherited by the spawned workers
    resources = "decode_embed" if stage in ("decode", "clip") else stage
    config = config.with_overrides(f"stages.{resources}.torch_threads={threads}")  # what the stage itself applies
    parts = [items[index::workers] for index in range(workers) if items[index::workers]]
    arguments = ([stage] * len(parts), [config] * len(parts), parts, [str(output_root)] * len(parts))
    if warm is not None:
        results = list(warm.map(_stage_worker, *arguments))
    else:
        with warm_processes(len(parts)) as fresh:
            results = list(fresh.map(_stage_worker, *arguments))
    position = {_input_uri(item): index for index, item in enumerate(items)}
    outputs = sorted(
        (output for result in results for output in result["outputs"]), key=lambda output: position[_input_uri(output)]
    )
    return {
        "outputs": outputs,
        "seconds": max(result["seconds"] for result in results),
        "load_s": max(result["load_s"] for result in results),
        "cpu_s": sum(result["cpu_s"] for result in results),
        "peak_rss_mb": max(result["peak_rss_mb"] for result in results),
        "workers": len(parts),
        "threads": threads,
    }


def _input_uri(item) -> str:
    """Items are rows, or (row, frames) pairs between the decode and CLIP measurements."""
    return (item[0] if isinstance(item, tuple) else item)["input_uri"]


def measure_stages(config: FoleyConfig, videos: list[Path], work: Path) -> dict:
    """Every stage alone, each fed the previous one's outputs, each laid out as its actor pool."""

    def pool(name: str) -> tuple[int, int]:
        resources = getattr(config.stages, name)
        return (
            resources.concurrency if isinstance(resources.concurrency, int) else resources.concurrency[1],
            resources.threads(),
        )

    rows = dub_rows(config, videos, work / "mux")
    decode = run_stage("decode", config, rows, *pool("decode_embed"), work)
    clip = run_stage("clip", config, decode["outputs"], *pool("decode_embed"), work)
    mapped = run_stage("map", config, clip["outputs"], *pool("map"), work)
    synthesized = run_stage("synthesize", config, mapped["outputs"], *pool("synthesize"), work)
    muxed = run_stage("mux", config, synthesized["outputs"], *pool("mux"), work)
    windows = sum(int(row["n_windows"]) for row in clip["outputs"])
    frames = windows * config.window.frames
    units = {
        "decode": ("frames", frames),
        "clip": ("frames", frames),
        "map": ("windows", windows),
        "synthesize": ("windows", windows),
        "mux": ("videos", len(videos)),
    }
    results = {}
    for name, measured in (
        ("decode", decode),
        ("clip", clip),
        ("map", mapped),
        ("synthesize", synthesized),
        ("mux", muxed),
    ):
        unit, count = units[name]
        results[name] = {
            key: measured[key] for key in ("seconds", "load_s", "cpu_s", "peak_rss_mb", "workers", "threads")
        }
        results[name].update(
            unit=unit, per_s=count / measured["seconds"], videos_per_s=len(videos) / measured["seconds"]
        )
    failed = [row["error"] for row in muxed["outputs"] if row["status"] != "ok"]
    if failed:
        raise RuntimeError(f"stage measurement failed: {failed[:3]}")
    return {"stages": results, "windows": windows, "frames": frames, "rows": synthesized["outputs"]}
