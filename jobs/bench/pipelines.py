"""Whole pipelines over the test videos: the sequential research loop in one spawned process, and `jobs.dub` end
to end on a local Ray in this process."""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pyarrow.parquet as pq

from foley.config import FoleyConfig
from foley.pipeline.kinds import DUB
from foley.pipeline.layout import MANIFEST_DIR
from foley.pipeline.ray_session import connect_ray
from foley.pipeline.rows import batch_of, new_row
from foley.storage.inputs import InputItem
from jobs import dub
from workers.decode_embed import DecodeEmbed
from workers.map import Map
from workers.mux import Mux
from workers.synthesize import Synthesize


def _sequential_worker(config: FoleyConfig, videos: list[str], output_root: str) -> dict:
    started = time.perf_counter()
    stages = [DecodeEmbed(config), Map(config), Synthesize(config), Mux(config, output_root)]
    loaded = time.perf_counter()
    for path in videos:
        batch = batch_of(
            [new_row(InputItem(path, Path(path).name), str(Path(output_root) / Path(path).name), config, DUB)]
        )
        for stage in stages:
            batch = stage(batch)
        if batch["status"][0] != "ok":
            raise RuntimeError(f"sequential baseline failed: {batch['error'][0]}")
    return {"load_s": loaded - started, "loop_s": time.perf_counter() - loaded}


def measure_sequential(config: FoleyConfig, videos: list[Path], work: Path) -> dict:
    """One process, all cores for torch, one video at a time, one window per forward pass."""
    cores = os.cpu_count() or 1
    everything = [f"stages.{name}.torch_threads={cores}" for name in ("decode_embed", "map", "synthesize", "mux")]
    per_window = [
        f"stages.decode_embed.max_forward_batch={config.window.frames}",
        "stages.map.max_forward_batch=1",
        "stages.synthesize.max_forward_batch=1",
    ]
    sequential = config.with_overrides(*everything, *per_window)
    os.environ["OMP_NUM_THREADS"] = str(cores)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(
            _sequential_worker, sequential, [str(v) for v in videos], str(work / "sequential")
        ).result()
    result["seconds"] = result["load_s"] + result["loop_s"]
    return result


def measure_pipeline(config_path: Path, overrides: list[str], videos_folder: Path, work: Path) -> dict:
    """jobs.dub on a local Ray, in this process; Ray's start is timed apart (a cluster pays it once)."""
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("OMP_NUM_THREADS", None)
    started = time.perf_counter()
    ray = connect_ray()
    ray_started = time.perf_counter()
    output = work / "pipeline"
    shutil.rmtree(output, ignore_errors=True)
    job_started = time.time()
    code = dub.main(
        ["--input", str(videos_folder), "--output", str(output), "--config", str(config_path), "--force", *overrides]
    )
    finished = time.perf_counter()
    ray.shutdown()
    if code != 0:
        raise RuntimeError(f"jobs.dub exited with {code}")
    # The manifest's times split the run into start-up (actors start and load their models, all at once) and the
    # rest (from the first video's decode to the last video's output).
    rows = pq.read_table(output / MANIFEST_DIR / "manifest.parquet", columns=["started_at", "finished_at"])
    first_started = min(value.timestamp() for value in rows.column("started_at").to_pylist())
    last_finished = max(value.timestamp() for value in rows.column("finished_at").to_pylist())
    return {
        "ray_start_s": ray_started - started,
        "seconds": finished - ray_started,
        "startup_s": first_started - job_started,
        "after_startup_s": last_finished - first_started,
    }
