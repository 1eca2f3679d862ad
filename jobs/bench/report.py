"""The report: bench.json's summary of the measurements, the printed table and the stage throughput chart."""

from __future__ import annotations

import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # render to PNG bytes, never to a display
import matplotlib.pyplot as plt
import numpy as np

from foley.config import FoleyConfig


def summarise(
    preset: str,
    config: FoleyConfig,
    videos: list[Path],
    seconds: float,
    measured: dict,
    sequential: dict,
    pipeline: dict,
    optimisations: list[dict],
    *,
    width: int,
    height: int,
    fps: int,
) -> dict:
    """`width`, `height` and `fps` are the test videos' format."""
    stages = measured["stages"]
    bottleneck = min(stages, key=lambda name: stages[name]["videos_per_s"])
    e2e = len(videos) / pipeline["seconds"]
    video_minutes = len(videos) * seconds / 60
    return {
        "preset": preset,
        "videos": len(videos),
        "video_seconds": seconds,
        "windows": measured["windows"],
        "resolution": f"{width}x{height}",
        "fps": fps,
        "cpus": os.cpu_count(),
        "audioldm_steps": config.audioldm.steps,
        "audioldm_scheduler": config.audioldm.scheduler,
        "mapper_steps": config.mapper.steps,
        "mapper_scheduler": config.mapper.scheduler,
        "stages": stages,
        "e2e_seconds": pipeline["seconds"],
        "ray_start_seconds": pipeline["ray_start_s"],
        "e2e_videos_per_s": e2e,
        "sequential_seconds": sequential["seconds"],
        "sequential_model_load_seconds": sequential["load_s"],
        "sequential_videos_per_s": len(videos) / sequential["seconds"],
        "speedup_vs_sequential": sequential["seconds"] / pipeline["seconds"],
        "bottleneck_stage": bottleneck,
        "bottleneck_videos_per_s": stages[bottleneck]["videos_per_s"],
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
    ahead = (
        f"pipeline ahead from {report['break_even_videos']} videos (projected)"
        if report["break_even_videos"]
        else "pipeline never ahead at these per-video rates"
    )
    lines = [f"{'stage':<11}{'throughput':>22}{'videos/s':>11}{'load s':>9}{'peak MB':>9}{'pool':>8}"]
    for name, stage in report["stages"].items():
        lines.append(
            f"{name:<11}{stage['per_s']:>13.2f} {stage['unit'] + '/s':>8}{stage['videos_per_s']:>11.3f}"
            f"{stage['load_s']:>9.1f}{stage['peak_rss_mb']:>9.0f}{stage['workers']:>4}x{stage['threads']}"
        )
    lines += [
        f"end to end (jobs.dub) : {report['e2e_videos_per_s']:.3f} videos/s ({report['e2e_seconds']:.1f} s; Ray start "
        f"{report['ray_start_seconds']:.1f} s apart)",
        f"sequential baseline   : {report['sequential_videos_per_s']:.3f} videos/s ({report['sequential_seconds']:.1f} "
        f"s, of which model loading {report['sequential_model_load_seconds']:.1f} s)",
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
        lines.append(
            f"  {entry['name']}: {entry['baseline']} {entry['baseline_per_s']:.3f} -> {entry['optimized']} "
            f"{entry['optimized_per_s']:.3f} {entry['unit']} ({entry['speedup']:.2f}x)"
        )
    return "\n".join(lines)


def chart(report: dict) -> bytes:
    names = [*report["stages"], "end to end", "sequential"]
    values = [stage["videos_per_s"] for stage in report["stages"].values()]
    values += [report["e2e_videos_per_s"], report["sequential_videos_per_s"]]
    figure, axis = plt.subplots(figsize=(8, 4))
    colours = ["tab:blue"] * len(report["stages"]) + ["tab:green", "tab:grey"]
    colours[list(report["stages"]).index(report["bottleneck_stage"])] = "tab:red"
    axis.barh(names[::-1], values[::-1], color=colours[::-1])
    axis.set_xscale("log")
    axis.set(
        xlabel="videos per second (log scale)",
        title=f"{report['preset']} preset: {report['videos']} x {report['video_seconds']:g}-s videos, "
        f"{report['cpus']} CPUs",
    )
    for y, value in enumerate(values[::-1]):
        axis.text(value, y, f" {value:.3g}", va="center")
    sink = io.BytesIO()
    figure.savefig(sink, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return sink.getvalue()
