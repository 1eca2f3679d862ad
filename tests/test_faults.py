"""The dub job as infrastructure fails under it, end to end: S3 faults injected between the job and moto (a proxy on
loopback), a worker node lost mid-run, a full node cache and a full output disk (tmpfs), and a lease taken from a
running job. Nothing is lost, nothing unchecked is published, no traceback, and a re-run finishes the rest."""

from __future__ import annotations

import io
import os
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import SLOW_SYNTHESIS, dub_command, own_ray, run_dub, tiny_overrides
from foley.media.render import render_test_video
from media_checks import plays, streams
from processes import kill_whole_session, wait_for
from s3_faults import FAULTS, FaultyS3

CLIPS = {f"clip{index}.mp4": 2.0 + index % 3 for index in range(6)}


def s3_library(storage, bucket: str, folder: Path) -> dict[str, str]:
    """Six clips under s3://bucket/in/; their ETags, to show the inputs are never written."""
    for name, seconds in CLIPS.items():
        storage.publish(render_test_video(folder / name, seconds, 160, 120, 25), f"s3://{bucket}/in/{name}")
    return etags(storage, bucket, "in/")


def etags(storage, bucket: str, prefix: str) -> dict[str, str]:
    listed = storage.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return {obj["Key"]: f"{obj['ETag']}@{obj['LastModified']}" for obj in listed}


def outputs_play(storage, bucket: str, folder: Path) -> dict[str, bool]:
    """Every video the job published under out/ (not its own files), downloaded and played."""
    played = {}
    for key in etags(storage, bucket, "out/"):
        if key.endswith(".mp4") and "/_foley/" not in f"/{key}":
            local = folder / key.replace("/", "_")
            local.write_bytes(storage.read_bytes(f"s3://{bucket}/{key}"))
            played[key] = plays(local) and streams(local) == ["video", "audio"]
    return played


def manifest_rows(storage, bucket: str) -> dict[str, dict]:
    folded = storage.read_bytes(f"s3://{bucket}/out/_foley/manifest/manifest.parquet")
    return {row["relative_path"]: row for row in pq.read_table(io.BytesIO(folded)).to_pylist()}


def figures(fault: str, rows: dict[str, dict], played: dict[str, bool]) -> str:
    """The line docs/operations.md quotes: "at 5 % S3 faults, 6 videos, 0 failed, 0 corrupt"."""
    failed = sum(row["status"] == "failed" for row in rows.values())
    corrupt = sum(not plays for plays in played.values())
    return f"{fault}, {len(rows)} videos, {failed} failed, {corrupt} corrupt"


def leases_first_create(request) -> bool:
    return request.method == "PUT" and request.key.endswith("_foley/lease.json") and "if-none-match" in request.headers


@pytest.mark.slow  # own job: faults injected into its own run's S3
def test_at_5_percent_s3_faults_every_input_is_ok_and_a_rerun_redoes_only_what_was_harmed(
    tmp_path, tiny_models, ray_cluster, bucket, s3_endpoint
):
    name, storage = bucket
    inputs = s3_library(storage, name, tmp_path / "src")
    overrides = tiny_overrides(tiny_models, tmp_path / "cache")
    with FaultyS3(upstream=s3_endpoint, seed=5) as proxy:
        proxy.set_rates({"*": 0.05}, faults=FAULTS)  # every request kind, every fault
        proxy.add_rule(leases_first_create, fault="reset-after")  # the lease's create applied, its answer lost
        result = run_dub(
            ray_cluster, f"s3://{name}/in/", f"s3://{name}/out/", [*overrides, f"storage.endpoint_url={proxy.url}"]
        )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 ok, 0 failed" in result.stdout and "Traceback" not in result.stderr
    assert proxy.injected["reset-after"] >= 1 and sum(proxy.injected.values()) >= 3, proxy.injected
    assert not proxy.errors
    played = outputs_play(storage, name, tmp_path)
    assert played == {f"out/{clip}": True for clip in CLIPS}
    print(figures("at 5 % S3 faults", manifest_rows(storage, name), played), proxy.requests, dict(proxy.injected))
    assert etags(storage, name, "in/") == inputs  # no input written

    # Behind the job's back: an output cut short, and an empty lease file (what a full disk leaves).
    published = etags(storage, name, "out/")
    cut = storage.read_bytes(f"s3://{name}/out/clip3.mp4")
    storage.s3.put_object(Bucket=name, Key="out/clip3.mp4", Body=cut[: len(cut) // 2])
    storage.s3.put_object(Bucket=name, Key="out/_foley/lease.json", Body=b"")
    again = run_dub(
        ray_cluster, f"s3://{name}/in/", f"s3://{name}/out/", [*overrides, f"storage.endpoint_url={s3_endpoint}"]
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "from a damaged lease: its file is damaged (0 bytes" in again.stderr
    assert "1 finished output is missing or not the size it was published with" in again.stdout
    assert "6 inputs under" in again.stdout and "5 already done, 1 to process" in again.stdout
    assert outputs_play(storage, name, tmp_path)["out/clip3.mp4"]
    after = etags(storage, name, "out/")
    assert all(after[f"out/{clip}"] == published[f"out/{clip}"] for clip in CLIPS if clip != "clip3.mp4")


@pytest.mark.slow  # own job: faults injected into its own run's S3
def test_at_20_percent_s3_faults_the_job_never_fails_as_a_whole_and_a_rerun_completes_the_rest(
    tmp_path, tiny_models, ray_cluster, bucket, s3_endpoint
):
    name, storage = bucket
    s3_library(storage, name, tmp_path / "src")
    overrides = tiny_overrides(tiny_models, tmp_path / "cache")
    with FaultyS3(upstream=s3_endpoint, seed=20) as proxy:
        proxy.set_rates({"*": 0.2}, faults=FAULTS)
        first = run_dub(
            ray_cluster, f"s3://{name}/in/", f"s3://{name}/out/", [*overrides, f"storage.endpoint_url={proxy.url}"]
        )
    assert first.returncode in (0, 1), first.stdout[-3000:] + first.stderr[-3000:]
    assert "done in" in first.stdout and "Traceback" not in first.stderr
    played = outputs_play(storage, name, tmp_path)
    assert all(played.values())  # every output that exists plays
    rows = manifest_rows(storage, name)
    finished = {path for path, row in rows.items() if row["status"] == "ok"}
    published = etags(storage, name, "out/")

    again = run_dub(
        ray_cluster, f"s3://{name}/in/", f"s3://{name}/out/", [*overrides, f"storage.endpoint_url={s3_endpoint}"]
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{len(finished)} already done, {6 - len(finished)} to process" in again.stdout
    assert {row["status"] for row in manifest_rows(storage, name).values()} == {"ok"}
    assert outputs_play(storage, name, tmp_path) == {f"out/{clip}": True for clip in CLIPS}
    after = etags(storage, name, "out/")
    assert all(after[f"out/{path}"] == published[f"out/{path}"] for path in finished)  # nothing redone
    print(figures("at 20 % S3 faults", rows, played), f"({dict(proxy.injected)} injected); the re-run made the rest")


def synthesize_node(cluster, session: int | None = None):
    """The cluster node whose raylet runs the Synthesize actor (its worker process's parent)."""
    import psutil

    from processes import cmdline

    actor = next((p for p in psutil.process_iter() if "MapBatches(Synthesize)" in " ".join(cmdline(p))), None)
    if actor is None:
        return None
    parents = {parent.pid for parent in actor.parents()}
    return next((node for node in cluster.worker_nodes if node.all_processes["raylet"][0].process.pid in parents), None)


@pytest.mark.slow  # own job: many nodes: one of its own cluster's is killed
def test_a_worker_node_lost_mid_run_costs_no_input(tmp_path, tiny_models, bucket, s3_endpoint):
    """Needs a cluster of its own: one of its nodes is killed. Its raylet dies at once, as a lost machine's does,
    while the actor on it holds a batch."""
    from ray.cluster_utils import Cluster

    name, storage = bucket
    s3_library(storage, name, tmp_path / "src")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for index in range(2):
        cluster.add_node(num_cpus=2, env_vars={"FOLEY_CACHE_DIR": str(tmp_path / f"cache-{index}")})
    cluster.wait_for_nodes()
    overrides = [
        *tiny_overrides(tiny_models, tmp_path / "cache"),
        *SLOW_SYNTHESIS,
        f"storage.endpoint_url={s3_endpoint}",
    ]
    log = tmp_path / "job.log"
    try:
        with open(log, "w") as output:
            job = subprocess.Popen(
                dub_command(f"s3://{name}/in/", f"s3://{name}/out/", overrides),
                stdout=output,
                stderr=subprocess.STDOUT,
                env=os.environ | {"RAY_ADDRESS": cluster.address},
            )
        wait_for(
            lambda: storage.list_prefix(f"s3://{name}/out/_foley/manifest/rows/") or job.poll() is not None,
            600,
            "the first finished video",
        )
        assert job.poll() is None, log.read_text()[-3000:]
        victim = wait_for(lambda: synthesize_node(cluster), 120, "the node of the Synthesize actor")
        cluster.remove_node(victim, allow_graceful=False)
        job.wait(timeout=900)
    finally:
        cluster.shutdown()
    said = log.read_text()
    assert job.returncode == 0, said[-4000:]
    assert "6 ok, 0 failed" in said
    rows = manifest_rows(storage, name)
    assert {row["status"] for row in rows.values()} == {"ok"}
    played = outputs_play(storage, name, tmp_path)
    assert played == {f"out/{clip}": True for clip in CLIPS}
    print(figures("a worker node lost mid-run", rows, played))


def disk_library(folder: Path) -> dict[str, int]:
    """Three small clips and two large ones (about 70 and 660 kB): a large one and its output never fit together
    on the small disks below, a small one does."""
    sizes = {}
    for index in range(3):
        sizes[f"small{index}.mp4"] = render_test_video(folder / f"small{index}.mp4", 2.0, 160, 120, 25).stat().st_size
    for index in range(2):
        sizes[f"large{index}.mp4"] = render_test_video(folder / f"large{index}.mp4", 3.0, 640, 360, 25).stat().st_size
    return sizes


def check_full_disk_run(result: subprocess.CompletedProcess, rows: dict[str, dict], where: str) -> None:
    """What a full disk may cost: named failed rows, never a traceback or an exit of 2."""
    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stderr + result.stdout
    failed = {path: row["error"] for path, row in rows.items() if row["status"] == "failed"}
    assert failed, "the disk never filled up"
    for path, error in failed.items():
        assert f"no space left on the device holding {where}" in error, (path, error)
    assert all(rows[f"large{index}.mp4"]["status"] == "failed" for index in range(2))


@pytest.mark.slow  # own job: a full disk under its own run's cache
def test_a_full_node_cache_fails_the_inputs_it_touches_and_publishes_nothing_broken(
    tmp_path, tiny_models, ray_cluster, bucket, s3_endpoint, small_disk
):
    name, storage = bucket
    sizes = disk_library(tmp_path / "src")
    for clip in sizes:
        storage.publish(tmp_path / "src" / clip, f"s3://{name}/in/{clip}")
    cache = small_disk("cache", "900k")
    overrides = [*tiny_overrides(tiny_models, cache), f"storage.endpoint_url={s3_endpoint}"]
    first = run_dub(ray_cluster, f"s3://{name}/in/", f"s3://{name}/out/", overrides)
    rows = manifest_rows(storage, name)
    check_full_disk_run(first, rows, str(cache))
    played = outputs_play(storage, name, tmp_path)
    assert all(played.values())
    print(figures("a full node cache (900 kB tmpfs)", rows, played), "(each named); the re-run made the rest")
    finished = {path for path, row in rows.items() if row["status"] == "ok"}

    again = run_dub(  # with room in its cache
        ray_cluster,
        f"s3://{name}/in/",
        f"s3://{name}/out/",
        [*tiny_overrides(tiny_models, tmp_path / "big"), f"storage.endpoint_url={s3_endpoint}"],
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{len(finished)} already done, {len(sizes) - len(finished)} to process" in again.stdout
    assert outputs_play(storage, name, tmp_path) == {f"out/{clip}": True for clip in sizes}


@pytest.mark.slow  # own job: a full disk under its own run's output
def test_a_full_output_disk_fails_the_inputs_it_touches_and_leaves_no_bookkeeping_in_the_way(
    tmp_path, tiny_models, ray_cluster, small_disk
):
    sizes = disk_library(tmp_path / "in")
    out = small_disk("out", "600k")
    first = run_dub(ray_cluster, tmp_path / "in", out, tiny_overrides(tiny_models, tmp_path / "cache"))
    rows = {}
    if (out / "_foley/manifest/manifest.parquet").exists():
        rows = {
            row["relative_path"]: row for row in pq.read_table(out / "_foley/manifest/manifest.parquet").to_pylist()
        }
    else:  # the fold itself found no space: the rows wait in the journal, and the job said so
        assert "the manifest could not be brought up to date" in first.stderr
        from foley.config import StorageConfig
        from foley.pipeline.kinds import DUB
        from foley.pipeline.manifest import Manifest
        from foley.storage.store import Storage

        rows = {
            row["relative_path"]: row for row in Manifest(str(out), Storage(StorageConfig()), DUB).current().values()
        }
    check_full_disk_run(first, rows, str(out))
    assert not (out / "_foley/lease.json").exists()  # given back: the next run is not blocked
    assert not [path for path in out.rglob("*") if ".partial-" in path.name]
    played = {path.name: plays(path) for path in out.glob("*.mp4")}
    assert all(played.values())
    print(figures("a full output disk (600 kB tmpfs)", rows, played), "(each named); the re-run made the rest")
    finished = {path for path, row in rows.items() if row["status"] == "ok"}

    subprocess.run(["mount", "-o", "remount,size=100m", str(out)], check=True)  # space freed
    again = run_dub(ray_cluster, tmp_path / "in", out, tiny_overrides(tiny_models, tmp_path / "cache"))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"{len(finished)} already done, {len(sizes) - len(finished)} to process" in again.stdout
    assert all(plays(out / clip) for clip in sizes)


@pytest.mark.slow  # own job: two runs at once on one output
def test_a_run_whose_lease_is_taken_stops_writing_and_exits_non_zero(tmp_path, tiny_models):
    """Needs a job of its own to take the lease from while it runs."""
    import json

    for index in range(4):
        render_test_video(tmp_path / "in" / f"v{index}.mp4", 12.0, 160, 120, 25)
    out = tmp_path / "out"
    overrides = [
        *tiny_overrides(tiny_models, tmp_path / "cache"),
        *SLOW_SYNTHESIS,
        "lease.renew_s=1",
        "lease.expire_s=5",
    ]
    log = tmp_path / "job.log"
    with open(log, "w") as output:
        job = subprocess.Popen(
            dub_command(tmp_path / "in", out, overrides),
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=own_ray(os.environ),
        )
    try:
        wait_for(lambda: "[1/4] ok" in log.read_text() or job.poll() is not None, 600, "the first video")
        other = {"run_id": "run-elsewhere", "host": "another-host", "pid": 1, "renewed_at": time.time() + 60}
        (out / "_foley/lease.json").write_text(json.dumps(other))  # another run took it over (by its clock)
        job.wait(timeout=300)
    finally:
        kill_whole_session(job.pid)
    said = log.read_text()
    assert job.returncode == 1, said[-3000:]
    assert "is no longer held by this run: another run took it over or removed it" in said
    assert "This run stopped writing" in said and "Traceback" not in said
    assert "[4/4]" not in said  # it stopped at once, not at the end
    assert json.loads((out / "_foley/lease.json").read_text())["run_id"] == "run-elsewhere"  # left to its holder
    assert not (out / "_foley/manifest/manifest.parquet").exists()  # it folded nothing
