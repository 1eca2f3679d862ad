"""Measure where the time goes: each stage alone, the dub pipeline end to end, and a sequential research loop.

    python -m jobs.bench --preset tiny|full [--videos N] [--seconds S] --out DIR

Models are built at the preset's size with random weights (speed does not depend on weight values): `tiny` is
configs/tiny.yaml's models, `full` the real architectures (CLIP ViT-B/32, the paper's mapper, AudioLDM
s-full-v2) run with configs/foley-cpu.yaml. N test videos (640x360, 25 fps) are rendered, then, in one run:

- each stage alone, in fresh processes laid out as its actor pool (workers x threads), model loading excluded;
- `jobs.dub` end to end over the same videos, on a local Ray (Ray's own start-up reported apart);
- the sequential baseline: the same models in one process, one video at a time, stages in a plain loop, no
  overlap and no batching, all cores for torch (what a research script does);
- A/B measurements of each optimisation the config can switch.

It prints a table and writes DIR/bench.json and DIR/stage_throughput.png. Ratios are only meaningful inside one
run: this machine is noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from foley.config import FoleyConfig, load_config
from foley.media import render_test_video
from foley.stage import DUB, batch_of, new_row, rows_of
from foley.storage import InputItem

ROOT = Path(__file__).resolve().parent.parent
WIDTH, HEIGHT, FPS = 640, 360, 25


@dataclass(frozen=True)
class Preset:
    config: str
    videos: int
    seconds: float


PRESETS = {
    "tiny": Preset(config="configs/tiny.yaml", videos=16, seconds=12.0),
    "full": Preset(config="configs/foley-cpu.yaml", videos=6, seconds=10.0),
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), required=True)
    parser.add_argument("--videos", type=int, default=None, help="test videos (default: tiny 16, full 6)")
    parser.add_argument("--seconds", type=float, default=None, help="length of each (default: tiny 12, full 10)")
    parser.add_argument("--out", type=Path, required=True, help="folder for models, videos and results")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")
    return parser.parse_args(argv)


# -- models and inputs --------------------------------------------------------------------------------------------
def build_models(preset: str, folder: Path) -> list[str]:
    """Random-weight models at the preset's size, saved once in their native formats; config overrides for them."""
    from foley.random_models import save_full_audioldm, save_full_mapper, save_tiny_models

    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        if preset == "tiny":
            save_tiny_models(folder)
        else:
            save_full_audioldm(folder / "audioldm")
            save_full_mapper(folder / "mapper")
        done.touch()
    if preset == "tiny":
        return [f"clip.model=local-dir:{folder / 'clip'}", f"mapper.checkpoint={folder / 'mapper'}",
                f"audioldm.model={folder / 'audioldm'}"]
    # ViT-B/32 with random weights needs no file: open_clip builds the architecture from its own config.
    return ["clip.model=ViT-B-32", "clip.pretrained=null", f"mapper.checkpoint={folder / 'mapper'}",
            f"audioldm.model={folder / 'audioldm'}"]


def render_videos(folder: Path, count: int, seconds: float) -> list[Path]:
    paths = [folder / f"clip{index:03d}.mp4" for index in range(count)]
    for path in paths:
        if not path.exists():
            render_test_video(path, seconds, WIDTH, HEIGHT, FPS)
    return paths


# -- one stage alone, in fresh processes --------------------------------------------------------------------------
def _peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not inherit the parent's peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _process_cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _stage_worker(stage: str, config: FoleyConfig, items: list, output_root: str) -> dict:
    """Runs in a fresh process: build the stage as its actor would, run it over `items`, measure it."""
    from workers.decode_embed import DecodeEmbed
    from workers.map import Map
    from workers.mux import Mux
    from workers.synthesize import Synthesize

    started = time.perf_counter()
    if stage in ("decode", "clip"):
        instance = DecodeEmbed(config)
    elif stage == "mux":
        instance = Mux(config, output_root)
    else:
        instance = {"map": Map, "synthesize": Synthesize}[stage](config)
    loaded, cpu_before = time.perf_counter(), _process_cpu_seconds()
    if stage == "decode":  # probe + decode of the sampled frames only; frames go on to the CLIP measurement
        from foley.media import probe
        from foley.windows import window_bounds_s

        outputs = []
        for row in items:
            path = Path(row["input_uri"])
            info = probe(path)
            windows = window_bounds_s(info.duration_s, config.window.seconds, config.window.overlap_seconds)
            frames = list(instance.decode_window_frames(path, info, windows))
            row.update(duration_s=info.duration_s, n_windows=len(windows), local_path=str(path))
            outputs.append((row, frames))
    elif stage == "clip":
        outputs = []
        for row, frames in items:
            row["clip_embeddings"] = np.concatenate([instance.window_means(group) for group in frames])
            outputs.append(row)
    else:
        batch_size = getattr(config.stages, stage).batch_size
        outputs = []
        for first in range(0, len(items), batch_size):
            outputs += rows_of(instance(batch_of(items[first : first + batch_size])))
    finished = time.perf_counter()
    return {"outputs": outputs, "load_s": loaded - started, "seconds": finished - loaded,
            "cpu_s": _process_cpu_seconds() - cpu_before,
            "peak_rss_mb": _peak_rss_mb()}


def run_stage(stage: str, config: FoleyConfig, items: list, workers: int, threads: int,
              output_root: Path) -> dict:
    """The stage over `items`, split across `workers` processes of `threads` threads, all at once."""
    os.environ["OMP_NUM_THREADS"] = str(threads)  # as Ray sets it for an actor; inherited by the spawned workers
    resources = "decode_embed" if stage in ("decode", "clip") else stage
    config = config.with_overrides(f"stages.{resources}.torch_threads={threads}")  # what the stage itself applies
    parts = [items[index::workers] for index in range(workers) if items[index::workers]]
    with ProcessPoolExecutor(max_workers=len(parts), mp_context=get_context("spawn")) as pool:
        results = list(pool.map(_stage_worker, [stage] * len(parts), [config] * len(parts), parts,
                                [str(output_root)] * len(parts)))
    position = {_input_uri(item): index for index, item in enumerate(items)}
    outputs = sorted((output for result in results for output in result["outputs"]),
                     key=lambda output: position[_input_uri(output)])
    return {
        "outputs": outputs,
        "seconds": max(result["seconds"] for result in results),
        "load_s": max(result["load_s"] for result in results),
        "cpu_s": sum(result["cpu_s"] for result in results),
        "peak_rss_mb": max(result["peak_rss_mb"] for result in results),
        "workers": len(parts), "threads": threads,
    }


def _input_uri(item) -> str:
    """Items are rows, or (row, frames) pairs between the decode and CLIP measurements."""
    return (item[0] if isinstance(item, tuple) else item)["input_uri"]


def measure_stages(config: FoleyConfig, videos: list[Path], work: Path) -> dict:
    """Every stage alone, each fed the previous one's outputs, each laid out as its actor pool."""
    def pool(name: str) -> tuple[int, int]:
        resources = getattr(config.stages, name)
        return (resources.concurrency if isinstance(resources.concurrency, int) else resources.concurrency[1],
                resources.threads())

    rows = [new_row(InputItem(str(path), path.name), str(work / "mux" / path.name), config, DUB) for path in videos]
    decode = run_stage("decode", config, rows, *pool("decode_embed"), work)
    clip = run_stage("clip", config, decode["outputs"], *pool("decode_embed"), work)
    mapped = run_stage("map", config, clip["outputs"], *pool("map"), work)
    synthesized = run_stage("synthesize", config, mapped["outputs"], *pool("synthesize"), work)
    muxed = run_stage("mux", config, synthesized["outputs"], *pool("mux"), work)
    windows = sum(int(row["n_windows"]) for row in clip["outputs"])
    frames = windows * config.window.frames
    units = {"decode": ("frames", frames), "clip": ("frames", frames), "map": ("windows", windows),
             "synthesize": ("windows", windows), "mux": ("videos", len(videos))}
    results = {}
    for name, measured in (("decode", decode), ("clip", clip), ("map", mapped), ("synthesize", synthesized),
                           ("mux", muxed)):
        unit, count = units[name]
        results[name] = {key: measured[key] for key in ("seconds", "load_s", "cpu_s", "peak_rss_mb", "workers",
                                                        "threads")}
        results[name].update(unit=unit, per_s=count / measured["seconds"],
                             videos_per_s=len(videos) / measured["seconds"])
    failed = [row["error"] for row in muxed["outputs"] if row["status"] != "ok"]
    if failed:
        raise RuntimeError(f"stage measurement failed: {failed[:3]}")
    return {"stages": results, "windows": windows, "frames": frames, "rows": synthesized["outputs"]}


# -- the sequential research loop ---------------------------------------------------------------------------------
def _sequential_worker(config: FoleyConfig, videos: list[str], output_root: str) -> dict:
    from workers.decode_embed import DecodeEmbed
    from workers.map import Map
    from workers.mux import Mux
    from workers.synthesize import Synthesize

    started = time.perf_counter()
    stages = [DecodeEmbed(config), Map(config), Synthesize(config), Mux(config, output_root)]
    loaded = time.perf_counter()
    for path in videos:
        batch = batch_of([new_row(InputItem(path, Path(path).name), str(Path(output_root) / Path(path).name),
                                  config, DUB)])
        for stage in stages:
            batch = stage(batch)
        if batch["status"][0] != "ok":
            raise RuntimeError(f"sequential baseline failed: {batch['error'][0]}")
    return {"load_s": loaded - started, "loop_s": time.perf_counter() - loaded}


def measure_sequential(config: FoleyConfig, videos: list[Path], work: Path) -> dict:
    """One process, all cores for torch, one video at a time, one window per forward pass."""
    cores = os.cpu_count() or 1
    everything = [f"stages.{name}.torch_threads={cores}" for name in ("decode_embed", "map", "synthesize", "mux")]
    per_window = [f"stages.decode_embed.max_forward_batch={config.window.frames}",
                  "stages.map.max_forward_batch=1", "stages.synthesize.max_forward_batch=1"]
    sequential = config.with_overrides(*everything, *per_window)
    os.environ["OMP_NUM_THREADS"] = str(cores)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(_sequential_worker, sequential, [str(v) for v in videos], str(work / "sequential")).result()
    result["seconds"] = result["load_s"] + result["loop_s"]
    return result


# -- the pipeline end to end --------------------------------------------------------------------------------------
def measure_pipeline(config_path: Path, overrides: list[str], videos_folder: Path, work: Path) -> dict:
    """jobs.dub on a local Ray, in this process; Ray's start is timed apart (a cluster pays it once)."""
    os.environ.pop("RAY_ADDRESS", None)
    os.environ.pop("OMP_NUM_THREADS", None)
    started = time.perf_counter()
    from foley.job import connect_ray

    ray = connect_ray()
    ray_started = time.perf_counter()
    from jobs import dub

    output = work / "pipeline"
    shutil.rmtree(output, ignore_errors=True)
    job_started = time.time()
    code = dub.main(["--input", str(videos_folder), "--output", str(output), "--config", str(config_path),
                     "--force", *overrides])
    finished = time.perf_counter()
    ray.shutdown()
    if code != 0:
        raise RuntimeError(f"jobs.dub exited with {code}")
    # The manifest's times split the run into start-up (actors start and load their models, all at once) and the
    # rest (from the first video's decode to the last video's output).
    import pyarrow.parquet as pq

    rows = pq.read_table(output / "_manifest" / "manifest.parquet", columns=["started_at", "finished_at"])
    first_started = min(value.timestamp() for value in rows.column("started_at").to_pylist())
    last_finished = max(value.timestamp() for value in rows.column("finished_at").to_pylist())
    return {"ray_start_s": ray_started - started, "seconds": finished - ray_started,
            "startup_s": first_started - job_started, "after_startup_s": last_finished - first_started}


# -- optimisations, each A/B in this run ---------------------------------------------------------------------------
def ab(name: str, unit: str, baseline: tuple[str, float], optimized: tuple[str, float]) -> dict:
    return {"name": name, "unit": unit, "baseline": baseline[0], "baseline_per_s": baseline[1],
            "optimized": optimized[0], "optimized_per_s": optimized[1], "speedup": optimized[1] / baseline[1]}


def measure_optimisations(config: FoleyConfig, videos: list[Path], measured: dict, work: Path,
                          preset: str) -> list[dict]:
    cores = os.cpu_count() or 1
    stages = measured["stages"]
    rows = [new_row(InputItem(str(path), path.name), str(work / "ab" / path.name), config, DUB) for path in videos]
    results = []

    slow_decode = config.with_overrides("decode.frames=all", "decode.size=native")
    decoded = run_stage("decode", slow_decode, rows, 1, 1, work)
    results.append(ab("decode only the sampled frames, scaled in the decoder", "videos/s",
                      ("every frame at native size", len(videos) / decoded["seconds"]),
                      ("sampled frames at CLIP size", stages["decode"]["videos_per_s"])))

    reencode = run_stage("mux", config.with_overrides("output.video_codec=libx264"), measured["rows"], 1, 1,
                         work / "ab-reencode")
    results.append(ab("mux with the video stream copied", "videos/s",
                      ("re-encode video (libx264)", len(videos) / reencode["seconds"]),
                      ("stream copy", stages["mux"]["videos_per_s"])))

    sample = measured["rows"][: 4 if preset == "tiny" else 2]
    sample_windows = sum(int(row["n_windows"]) for row in sample)

    def synth_rate(settings: FoleyConfig, workers: int, threads: int) -> float:
        return sample_windows / run_stage("synthesize", settings, sample, workers, threads, work)["seconds"]

    one_by_one = config.with_overrides("stages.synthesize.max_forward_batch=1",
                                f"stages.synthesize.batch_size={len(sample)}")
    batched = config.with_overrides(f"stages.synthesize.max_forward_batch={sample_windows}",
                             f"stages.synthesize.batch_size={len(sample)}")
    results.append(ab("AudioLDM windows batched across videos", "windows/s",
                      ("1 window per forward", synth_rate(one_by_one, 1, cores)),
                      (f"{sample_windows} windows per forward", synth_rate(batched, 1, cores))))
    results.append(ab("AudioLDM as parallel single-thread actors", "windows/s",
                      (f"1 process x {cores} threads", synth_rate(one_by_one, 1, cores)),
                      (f"{cores} processes x 1 thread", synth_rate(one_by_one, cores, 1))))
    results.append(ab("AudioLDM: DPM-Solver++ with fewer steps", "windows/s",
                      ("DDIM, 25 steps", synth_rate(one_by_one.with_overrides("audioldm.scheduler=ddim",
                                                                   "audioldm.steps=25"), 1, cores)),
                      (f"DPM-Solver++, {config.audioldm.steps} steps",
                       synth_rate(one_by_one.with_overrides("audioldm.scheduler=dpmsolver++"), 1, cores))))
    results.append(ab("AudioLDM attention kernels", "windows/s",
                      ("classic matmul-softmax", synth_rate(one_by_one.with_overrides("audioldm.attention=classic"),
                                                             1, cores)),
                      ("SDPA", synth_rate(one_by_one.with_overrides("audioldm.attention=sdpa"), 1, cores))))
    mapper_rows = [dict(row) for row in measured["rows"]]
    slow_mapper = run_stage("map", config.with_overrides("mapper.steps=50", "mapper.scheduler=ddpm"), mapper_rows,
                            1, cores, work)
    fast_mapper = run_stage("map", config, mapper_rows, 1, cores, work)
    results.append(ab("mapper: DDIM with fewer steps", "windows/s",
                      ("DDPM, 50 steps", measured["windows"] / slow_mapper["seconds"]),
                      (f"{config.mapper.scheduler.upper()}, {config.mapper.steps} steps",
                       measured["windows"] / fast_mapper["seconds"])))
    return results


def measure_pipeline_layout(config: FoleyConfig, config_path: Path, overrides: list[str], videos_folder: Path,
                            work: Path, pipeline: dict) -> dict:
    """One AudioLDM actor of all cores against the config's actors, inside the pipeline, where Ray's processes and
    the other stages take slices of the cores and threads that wait on each other lose most. Rates are taken after
    start-up, so that the second actor's extra model load does not count."""
    cores = os.cpu_count() or 1
    videos = len(list(videos_folder.iterdir()))
    one_actor = measure_pipeline(config_path, [*overrides, "stages.synthesize.concurrency=1",
                                               f"stages.synthesize.torch_threads={cores}",
                                               f"stages.synthesize.num_cpus={cores / 2:g}"],
                                 videos_folder, work)
    layout = f"{config.stages.synthesize.concurrency} actors x {config.stages.synthesize.threads()} thread(s)"
    return ab("AudioLDM actors inside the pipeline (after start-up)", "videos/s",
              (f"1 actor x {cores} threads", videos / one_actor["after_startup_s"]),
              (layout, videos / pipeline["after_startup_s"]))


# -- report -------------------------------------------------------------------------------------------------------
def summarise(preset: str, config: FoleyConfig, videos: list[Path], seconds: float, measured: dict,
              sequential: dict, pipeline: dict, optimisations: list[dict]) -> dict:
    stages = measured["stages"]
    bottleneck = min(stages, key=lambda name: stages[name]["videos_per_s"])
    e2e = len(videos) / pipeline["seconds"]
    video_minutes = len(videos) * seconds / 60
    return {
        "preset": preset, "videos": len(videos), "video_seconds": seconds, "windows": measured["windows"],
        "resolution": f"{WIDTH}x{HEIGHT}", "fps": FPS, "cpus": os.cpu_count(),
        "audioldm_steps": config.audioldm.steps, "audioldm_scheduler": config.audioldm.scheduler,
        "mapper_steps": config.mapper.steps, "mapper_scheduler": config.mapper.scheduler,
        "stages": stages,
        "e2e_seconds": pipeline["seconds"], "ray_start_seconds": pipeline["ray_start_s"],
        "e2e_videos_per_s": e2e,
        "sequential_seconds": sequential["seconds"], "sequential_model_load_seconds": sequential["load_s"],
        "sequential_videos_per_s": len(videos) / sequential["seconds"],
        "speedup_vs_sequential": sequential["seconds"] / pipeline["seconds"],
        "bottleneck_stage": bottleneck, "bottleneck_videos_per_s": stages[bottleneck]["videos_per_s"],
        "pipeline_efficiency": e2e / stages[bottleneck]["videos_per_s"],
        "pipeline_overhead_ms_per_video": 1000 * (pipeline["seconds"] - sequential["seconds"]) / len(videos),
        **after_startup(len(videos), pipeline, sequential, stages[bottleneck]["videos_per_s"]),
        "cpu_s_per_video_minute": (stages["decode"]["cpu_s"] + stages["mux"]["cpu_s"]) / video_minutes,
        "peak_rss_mb": {name: stage["peak_rss_mb"] for name, stage in stages.items()},
        "optimisations": optimisations,
    }


def after_startup(videos: int, pipeline: dict, sequential: dict, bottleneck_videos_per_s: float) -> dict:
    """The same comparison without the one-off costs: the pipeline's actor start-up, the loop's model loading.

    Both are fixed per run, so on a long run only the per-video rates count. `break_even_videos` projects, from
    these measured fixed and per-video costs, the run length from which the pipeline is ahead (null: never).
    """
    pipeline_fixed = pipeline["seconds"] - pipeline["after_startup_s"]
    pipeline_per_video = pipeline["after_startup_s"] / videos
    sequential_per_video = sequential["loop_s"] / videos
    gain_per_video = sequential_per_video - pipeline_per_video
    extra_fixed = pipeline_fixed - sequential["load_s"]
    if extra_fixed <= 0:
        break_even = 1
    else:
        break_even = int(np.ceil(extra_fixed / gain_per_video)) if gain_per_video > 0 else None
    return {
        "pipeline_startup_s": pipeline["startup_s"],
        "e2e_after_startup_videos_per_s": 1 / pipeline_per_video,
        "sequential_after_load_videos_per_s": 1 / sequential_per_video,
        "speedup_after_startup": sequential_per_video / pipeline_per_video,
        "pipeline_efficiency_after_startup": (1 / pipeline_per_video) / bottleneck_videos_per_s,
        "break_even_videos": break_even,
    }


def table(report: dict) -> str:
    ahead = (f"pipeline ahead from {report['break_even_videos']} videos (projected)" if report["break_even_videos"]
             else "pipeline never ahead at these per-video rates")
    lines = [f"{'stage':<11}{'throughput':>22}{'videos/s':>11}{'load s':>9}{'peak MB':>9}{'pool':>8}"]
    for name, stage in report["stages"].items():
        lines.append(f"{name:<11}{stage['per_s']:>13.2f} {stage['unit'] + '/s':>8}{stage['videos_per_s']:>11.3f}"
                     f"{stage['load_s']:>9.1f}{stage['peak_rss_mb']:>9.0f}{stage['workers']:>4}x{stage['threads']}")
    lines += [
        f"end to end (jobs.dub) : {report['e2e_videos_per_s']:.3f} videos/s ({report['e2e_seconds']:.1f} s; Ray start "
        f"{report['ray_start_seconds']:.1f} s apart)",
        f"sequential baseline   : {report['sequential_videos_per_s']:.3f} videos/s ({report['sequential_seconds']:.1f} s,"
        f" of which model loading {report['sequential_model_load_seconds']:.1f} s)",
        f"speedup vs sequential : {report['speedup_vs_sequential']:.2f}x",
        f"bottleneck            : {report['bottleneck_stage']} at {report['bottleneck_videos_per_s']:.3f} videos/s; "
        f"pipeline efficiency {report['pipeline_efficiency']:.2f}",
        f"pipeline overhead     : {report['pipeline_overhead_ms_per_video']:+.0f} ms per video vs the loop",
        f"after start-up        : pipeline {report['e2e_after_startup_videos_per_s']:.3f} videos/s (start-up "
        f"{report['pipeline_startup_s']:.1f} s), loop {report['sequential_after_load_videos_per_s']:.3f} videos/s: "
        f"speedup {report['speedup_after_startup']:.2f}x, efficiency {report['pipeline_efficiency_after_startup']:.2f},"
        f" {ahead}",
        f"decode + mux CPU      : {report['cpu_s_per_video_minute']:.2f} CPU-s per video minute",
        "optimisations (A/B in this run):",
    ]
    for entry in report["optimisations"]:
        lines.append(f"  {entry['name']}: {entry['baseline']} {entry['baseline_per_s']:.3f} -> {entry['optimized']} "
                     f"{entry['optimized_per_s']:.3f} {entry['unit']} ({entry['speedup']:.2f}x)")
    return "\n".join(lines)


def chart(report: dict) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [*report["stages"], "end to end", "sequential"]
    values = [stage["videos_per_s"] for stage in report["stages"].values()]
    values += [report["e2e_videos_per_s"], report["sequential_videos_per_s"]]
    figure, axis = plt.subplots(figsize=(8, 4))
    colours = ["tab:blue"] * len(report["stages"]) + ["tab:green", "tab:grey"]
    colours[list(report["stages"]).index(report["bottleneck_stage"])] = "tab:red"
    axis.barh(names[::-1], values[::-1], color=colours[::-1])
    axis.set_xscale("log")
    axis.set(xlabel="videos per second (log scale)",
             title=f"{report['preset']} preset: {report['videos']} x {report['video_seconds']:g}-s videos, "
                   f"{report['cpus']} CPUs")
    for y, value in enumerate(values[::-1]):
        axis.text(value, y, f" {value:.3g}", va="center")
    sink = io.BytesIO()
    figure.savefig(sink, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return sink.getvalue()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    preset = PRESETS[args.preset]
    count, seconds = args.videos or preset.videos, args.seconds or preset.seconds
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.out / "work"
    shutil.rmtree(work, ignore_errors=True)
    print(f"building {args.preset} models and {count} test videos of {seconds:g} s ...", flush=True)
    overrides = [*build_models(args.preset, args.out / f"models-{args.preset}"), *args.overrides]
    config_path = ROOT / preset.config
    config = load_config(config_path, overrides)
    videos = render_videos(args.out / "videos", count, seconds)
    videos_folder = args.out / "videos-selected"
    shutil.rmtree(videos_folder, ignore_errors=True)
    videos_folder.mkdir()
    for video in videos:  # exactly these N videos, even if the folder holds more from an earlier run
        os.link(video, videos_folder / video.name)
    videos = sorted(videos_folder.iterdir())

    print("each stage alone ...", flush=True)
    measured = measure_stages(config, videos, work)
    print("sequential baseline ...", flush=True)
    sequential = measure_sequential(config, videos, work)
    print("end to end (jobs.dub) ...", flush=True)
    pipeline = measure_pipeline(config_path, overrides, videos_folder, work)
    print("optimisations ...", flush=True)
    optimisations = measure_optimisations(config, videos, measured, work, args.preset)
    if isinstance(config.stages.synthesize.concurrency, int) and config.stages.synthesize.concurrency > 1:
        print("AudioLDM actor layout inside the pipeline ...", flush=True)
        optimisations.append(measure_pipeline_layout(config, config_path, overrides, videos_folder, work, pipeline))

    report = summarise(args.preset, config, videos, seconds, measured, sequential, pipeline, optimisations)
    (args.out / "bench.json").write_text(json.dumps(report, indent=2))
    (args.out / "stage_throughput.png").write_bytes(chart(report))
    print(table(report))
    print(f"wrote {args.out / 'bench.json'} and {args.out / 'stage_throughput.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
