"""The A/B cases: each optimisation the config can switch, measured against its slow alternative in this run."""

from __future__ import annotations

import os
from pathlib import Path

from foley.config import FoleyConfig
from jobs.bench.pipelines import measure_pipeline
from jobs.bench.stages import dub_rows, run_stage, warm_processes

CANDIDATES = 3  # the comparison: one sample per window, or three ranked by CLAP


def ab(name: str, unit: str, baseline: tuple[str, float], optimized: tuple[str, float]) -> dict:
    return {
        "name": name,
        "unit": unit,
        "baseline": baseline[0],
        "baseline_per_s": baseline[1],
        "optimized": optimized[0],
        "optimized_per_s": optimized[1],
        "speedup": optimized[1] / baseline[1],
    }


def measure_optimisations(
    config: FoleyConfig, videos: list[Path], measured: dict, work: Path, preset: str
) -> list[dict]:
    cores = os.cpu_count() or 1
    with warm_processes(cores) as warm:  # every case times the same stage code: import it once per process
        return _measure_optimisations(config, videos, measured, work, preset, cores, warm)


def _measure_optimisations(
    config: FoleyConfig, videos: list[Path], measured: dict, work: Path, preset: str, cores: int, warm
) -> list[dict]:
    stages = measured["stages"]
    rows = dub_rows(config, videos, work / "ab")
    results = []

    slow_decode = config.with_overrides("decode.frames=all", "decode.size=native")
    decoded = run_stage("decode", slow_decode, rows, 1, 1, work, warm)
    results.append(
        ab(
            "decode only the sampled frames, scaled in the decoder",
            "videos/s",
            ("every frame at native size", len(videos) / decoded["seconds"]),
            ("sampled frames at CLIP size", stages["decode"]["videos_per_s"]),
        )
    )

    reencode = run_stage(
        "mux", config.with_overrides("output.video_codec=libx264"), measured["rows"], 1, 1, work / "ab-reencode", warm
    )
    results.append(
        ab(
            "mux with the video stream copied",
            "videos/s",
            ("re-encode video (libx264)", len(videos) / reencode["seconds"]),
            ("stream copy", stages["mux"]["videos_per_s"]),
        )
    )

    sample = measured["rows"][: 4 if preset == "tiny" else 2]
    sample_windows = sum(int(row["n_windows"]) for row in sample)

    def synth_rate(settings: FoleyConfig, workers: int, threads: int) -> float:
        return sample_windows / run_stage("synthesize", settings, sample, workers, threads, work, warm)["seconds"]

    one_by_one = config.with_overrides(
        "stages.synthesize.max_forward_batch=1", f"stages.synthesize.batch_size={len(sample)}"
    )
    batched = config.with_overrides(
        f"stages.synthesize.max_forward_batch={sample_windows}", f"stages.synthesize.batch_size={len(sample)}"
    )
    results.append(
        ab(
            "AudioLDM windows batched across videos",
            "windows/s",
            ("1 window per forward", synth_rate(one_by_one, 1, cores)),
            (f"{sample_windows} windows per forward", synth_rate(batched, 1, cores)),
        )
    )
    results.append(
        ab(
            "AudioLDM as parallel single-thread actors",
            "windows/s",
            (f"1 process x {cores} threads", synth_rate(one_by_one, 1, cores)),
            (f"{cores} processes x 1 thread", synth_rate(one_by_one, cores, 1)),
        )
    )
    results.append(
        ab(
            "AudioLDM: DPM-Solver++ with fewer steps",
            "windows/s",
            (
                "DDIM, 25 steps",
                synth_rate(one_by_one.with_overrides("audioldm.scheduler=ddim", "audioldm.steps=25"), 1, cores),
            ),
            (
                f"DPM-Solver++, {config.audioldm.steps} steps",
                synth_rate(one_by_one.with_overrides("audioldm.scheduler=dpmsolver++"), 1, cores),
            ),
        )
    )
    results.append(
        ab(
            "AudioLDM attention kernels",
            "windows/s",
            ("classic matmul-softmax", synth_rate(one_by_one.with_overrides("audioldm.attention=classic"), 1, cores)),
            ("SDPA", synth_rate(one_by_one.with_overrides("audioldm.attention=sdpa"), 1, cores)),
        )
    )
    results.append(measure_candidates(config, sample, work, 1, cores, CANDIDATES, warm))
    mapper_rows = [dict(row) for row in measured["rows"]]
    slow_mapper = run_stage(
        "map", config.with_overrides("mapper.steps=50", "mapper.scheduler=ddpm"), mapper_rows, 1, cores, work, warm
    )
    fast_mapper = run_stage("map", config, mapper_rows, 1, cores, work, warm)
    results.append(
        ab(
            "mapper: DDIM with fewer steps",
            "windows/s",
            ("DDPM, 50 steps", measured["windows"] / slow_mapper["seconds"]),
            (
                f"{config.mapper.scheduler.upper()}, {config.mapper.steps} steps",
                measured["windows"] / fast_mapper["seconds"],
            ),
        )
    )
    return results


def measure_candidates(
    config: FoleyConfig, rows: list[dict], work: Path, workers: int, threads: int, candidates: int, warm=None
) -> dict:
    """Windows per second of the synthesis stage with 1 and with `candidates` per window, every window of `rows`
    in one forward pass (in the `warm` processes, if given)."""
    windows = sum(len(row["clap_embeddings"]) for row in rows)
    batched = config.with_overrides(
        f"stages.synthesize.max_forward_batch={windows}", f"stages.synthesize.batch_size={len(rows)}"
    )

    def rate(settings: FoleyConfig) -> float:
        return windows / run_stage("synthesize", settings, rows, workers, threads, work, warm)["seconds"]

    return ab(
        f"cost of {candidates} candidates per window, ranked by CLAP",
        "windows/s",
        ("1 candidate", rate(batched)),
        (
            f"{candidates} candidates in one forward + CLAP",
            rate(batched.with_overrides(f"audioldm.candidates={candidates}")),
        ),
    )


def measure_pipeline_layout(
    config: FoleyConfig, config_path: Path, overrides: list[str], videos_folder: Path, work: Path, pipeline: dict
) -> dict:
    """One AudioLDM actor of all cores against the config's actors, inside the pipeline, where Ray's processes and
    the other stages take slices of the cores and threads that wait on each other lose most. Rates are taken after
    start-up, so that the second actor's extra model load does not count."""
    cores = os.cpu_count() or 1
    videos = len(list(videos_folder.iterdir()))
    one_actor = measure_pipeline(
        config_path,
        [
            *overrides,
            "stages.synthesize.concurrency=1",
            f"stages.synthesize.torch_threads={cores}",
            f"stages.synthesize.num_cpus={cores / 2:g}",
        ],
        videos_folder,
        work,
    )
    layout = f"{config.stages.synthesize.concurrency} actors x {config.stages.synthesize.threads()} thread(s)"
    return ab(
        "AudioLDM actors inside the pipeline (after start-up)",
        "videos/s",
        (f"1 actor x {cores} threads", videos / one_actor["after_startup_s"]),
        (layout, videos / pipeline["after_startup_s"]),
    )
