"""The benchmark runs and writes well-formed output. No timing is asserted here: timings belong to the benchmark."""

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT

REQUIRED = {
    "videos": int,
    "e2e_videos_per_s": float,
    "sequential_videos_per_s": float,
    "speedup_vs_sequential": float,
    "bottleneck_stage": str,
    "bottleneck_videos_per_s": float,
    "pipeline_efficiency": float,
    "cpu_s_per_video_minute": float,
    "peak_rss_mb": dict,
    "pipeline_startup_s": float,
    "speedup_after_startup": float,
    "pipeline_efficiency_after_startup": float,
}


@pytest.mark.slow  # own job: the bench's own runs, as a user runs it
def test_bench_tiny_writes_bench_json_and_a_chart(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.bench",
            "--preset",
            "tiny",
            "--videos",
            "2",
            "--seconds",
            "3",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    for key, kind in REQUIRED.items():
        assert isinstance(report[key], kind), key
    assert report["videos"] == 2 and report["bottleneck_stage"] in report["stages"]
    assert set(report["stages"]) == {"decode", "clip", "map", "synthesize", "mux"}
    assert set(report["peak_rss_mb"]) == set(report["stages"])
    for stage in report["stages"].values():
        assert stage["per_s"] > 0 and math.isfinite(stage["per_s"]) and stage["peak_rss_mb"] > 0
    assert all(entry["speedup"] > 0 for entry in report["optimisations"])
    assert (tmp_path / "stage_throughput.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "speedup vs sequential" in result.stdout
    assert report["relaxed_checks"] == ["output.max_dc_fraction=1"] and "relaxed for the bench" in result.stdout


@pytest.mark.slow  # real-size architectures (random weights), built here: what the full bench runs, on one window
def test_the_full_presets_stages_run_on_one_short_window(tmp_path):
    """Each stage of `python -m jobs.bench --preset full` alone, as the bench measures it, at 1 sampling step on one
    window: a change that breaks the full bench (as the output check once did) fails here, not on a user's run."""
    from foley.config import load_config
    from jobs.bench.__main__ import PRESETS, RELAXED_CHECKS, ROOT, build_models, render_videos
    from jobs.bench.stages import measure_stages

    short = ["audioldm.steps=1", "mapper.steps=1", "window.seconds=2.56", "window.overlap_seconds=0.32"]
    overrides = [*build_models("full", tmp_path / "models"), *RELAXED_CHECKS, *short]
    config = load_config(ROOT / PRESETS["full"].config, overrides)
    measured = measure_stages(config, render_videos(tmp_path / "videos", 1, 2.0), tmp_path / "work")
    assert measured["windows"] == 1 and set(measured["stages"]) == {"decode", "clip", "map", "synthesize", "mux"}
    assert all(stage["per_s"] > 0 for stage in measured["stages"].values())
    assert measured["rows"][0]["waveforms"].shape == (1, round(2.56 * 16000))
