"""What a running job shows: its per-video lines (rate and ETA), and metrics for a cluster's dashboard."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from conftest import own_ray
from foley.pipeline.progress import pace_line

RECORD_AND_SCRAPE = """
import socket, sys, time, urllib.request
import ray
from foley.pipeline.kinds import DUB
from foley.pipeline.metrics import JobMetrics

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
ray.init(num_cpus=1, _metrics_export_port=port, include_dashboard=False)


@ray.remote(num_cpus=0)
class LastStage:  # records as the last stage of a job does, once per finished video
    def __init__(self):
        self.metrics = JobMetrics("dub", DUB.stages)

    def finish(self, row):
        self.metrics.record(row)


stage = LastStage.remote()
ok = {"status": "ok", "n_windows": 3, **{f"seconds_{name}": 1.5 for name in DUB.stages}}
ray.get([stage.finish.remote(ok), stage.finish.remote(ok), stage.finish.remote(ok | {"status": "failed"})])
deadline = time.time() + 90
while time.time() < deadline:  # Ray exports every few seconds
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    if "foley_windows" in text and "foley_videos" in text:
        break
    time.sleep(2)
print(text)
"""


def test_progress_lines_say_the_rate_and_the_time_left():
    assert pace_line(1, 10, 30.0) == "2.0 videos/min, ETA 4m30s"
    assert pace_line(3, 10_000, 60.0) == "3.0 videos/min, ETA 55h32m"
    assert pace_line(10, 10, 300.0) == "2.0 videos/min"  # done: nothing left to wait for


@pytest.mark.slow
def test_job_metrics_reach_prometheus():
    scraped = subprocess.run(
        [sys.executable, "-c", RECORD_AND_SCRAPE],
        capture_output=True,
        text=True,
        timeout=300,
        env=own_ray(os.environ),  # a Ray of its own: its counters must hold this test's records only
    )
    assert scraped.returncode == 0, scraped.stderr

    def value(metric: str, **labels) -> float:
        for line in scraped.stdout.splitlines():
            if line.startswith(metric + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
        raise AssertionError(f"{metric} {labels} not exported:\n{scraped.stdout[-3000:]}")

    assert value("ray_foley_videos_total", job="dub", status="ok") == 2
    assert value("ray_foley_videos_total", job="dub", status="failed") == 1
    assert value("ray_foley_windows_total", job="dub") == 6  # windows of the ok videos
    assert value("ray_foley_stage_seconds_count", job="dub", stage="synthesize") == 3
    assert re.search(r'ray_foley_stage_seconds_sum\{[^}]*stage="mux"[^}]*\} 4\.5', scraped.stdout)
