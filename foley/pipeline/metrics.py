"""Job metrics for a cluster's Ray dashboard and Prometheus (ray.util.metrics), recorded by the last stage as each
video finishes: videos by status, windows made (their rate is windows per second), and seconds per stage.

Ray exports them as `ray_foley_videos_total`, `ray_foley_windows_total` and `ray_foley_stage_seconds`, tagged with
the job kind (dub, embed), the Ray job id and, for videos, the status.
"""

from __future__ import annotations

import ray
from ray.util.metrics import Counter, Histogram

# Buckets of seconds one stage spends on one video: from a quick mux to an hour-long film on a CPU.
STAGE_SECONDS_BUCKETS = [0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600]


class JobMetrics:
    def __init__(self, job: str, stages: tuple[str, ...]):
        self.stages = stages
        tags = {"job": job, "ray_job": ray.get_runtime_context().get_job_id()}
        self.videos = Counter("foley_videos", description="videos finished, by status", tag_keys=(*tags, "status"))
        self.windows = Counter(
            "foley_windows", description="windows made; their rate is windows per second", tag_keys=tuple(tags)
        )
        self.stage_seconds = Histogram(
            "foley_stage_seconds",
            description="seconds one stage spent on one video",
            boundaries=STAGE_SECONDS_BUCKETS,
            tag_keys=(*tags, "stage"),
        )
        for metric in (self.videos, self.windows, self.stage_seconds):
            metric.set_default_tags(tags)

    def record(self, row: dict) -> None:
        self.videos.inc(tags={"status": str(row["status"])})
        if windows := int(row["n_windows"]) if row["status"] == "ok" else 0:
            self.windows.inc(windows)
        for stage in self.stages:
            self.stage_seconds.observe(float(row[f"seconds_{stage}"]), tags={"stage": stage})
