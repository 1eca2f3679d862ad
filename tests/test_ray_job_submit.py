"""`ray job submit` end to end: a real local Ray head, the job's code shipped with --working-dir, and the videos,
the outputs and the model weights all in an S3-protocol server on loopback."""

import io
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import FAKE_SECRET, ROOT
from foley.media.render import render_test_video
from media_checks import plays, stream_duration, streams, video_packets_md5

RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def upload_tree(storage, folder: Path, prefix: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            storage.publish(path, f"{prefix}/{path.relative_to(folder).as_posix()}")


@pytest.fixture
def ray_head(tmp_path):
    """`ray start --head` on 127.0.0.1 with its own ports and temp dir; token authentication stays on."""
    dashboard = free_port()
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    temp_dir = f"/tmp/ray-submit-{uuid.uuid4().hex[:6]}"
    subprocess.run(
        [
            RAY,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={free_port()}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={free_port()}",
            "--num-cpus=2",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        check=True,
        capture_output=True,
        env=env,
        timeout=120,
    )
    try:
        yield f"http://127.0.0.1:{dashboard}", env | {"RAY_AUTH_MODE": "token"}
    finally:
        subprocess.run([RAY, "stop", "--force"], capture_output=True, env=env, timeout=120)


def job_status(address: str, env: dict, job_id: str) -> str:
    result = subprocess.run(
        [RAY, "job", "status", "--address", address, "--log-style", "record", job_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    out = result.stdout + result.stderr
    for word, status in (("succeeded", "SUCCEEDED"), ("failed", "FAILED"), ("stopped", "STOPPED")):
        if f"Job '{job_id}' {word}" in out or f"Job '{job_id}' was {word}" in out:
            return status
    return "RUNNING"


@pytest.mark.slow
def test_ray_job_submit_dubs_a_bucket(tmp_path, bucket, s3_endpoint, tiny_models, ray_head):
    name, storage = bucket
    address, env = ray_head
    for model, folder in tiny_models.items():
        upload_tree(storage, folder, f"s3://{name}/models/{model}")
    clips = {"a.mp4": (3.0, 320, 240, 25), "b/c.mov": (12.0, 256, 144, 30), "b/d.webm": (4.0, 240, 160, 25)}
    for relative, (seconds, width, height, fps) in clips.items():
        storage.publish(
            render_test_video(tmp_path / "src" / relative, seconds, width, height, fps),
            f"s3://{name}/silent/{relative}",
        )

    job_id = f"foley-test-{uuid.uuid4().hex[:8]}"
    submit = subprocess.run(
        [
            RAY,
            "job",
            "submit",
            "--address",
            address,
            "--working-dir",
            str(ROOT),
            "--submission-id",
            job_id,
            "--no-wait",
            "--",
            "python",
            "-m",
            "jobs.dub",
            "--input",
            f"s3://{name}/silent/",
            "--output",
            f"s3://{name}/foley/",
            "--config",
            "configs/tiny.yaml",
            f"storage.endpoint_url={s3_endpoint}",
            f"clip.model=local-dir:s3://{name}/models/clip",
            f"mapper.checkpoint=s3://{name}/models/mapper",
            f"audioldm.model=s3://{name}/models/audioldm",
            f"storage.cache_dir={tmp_path / 'node-cache'}",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert submit.returncode == 0, submit.stdout + submit.stderr

    deadline = time.monotonic() + 600
    while (status := job_status(address, env, job_id)) == "RUNNING" and time.monotonic() < deadline:
        time.sleep(2)
    logs = subprocess.run(
        [RAY, "job", "logs", "--address", address, job_id], capture_output=True, text=True, env=env, timeout=60
    ).stdout
    assert status == "SUCCEEDED", logs[-3000:]
    assert "3 ok, 0 failed, 0 skipped" in logs
    assert FAKE_SECRET not in logs

    for relative in clips:
        result = tmp_path / "result" / relative
        result.parent.mkdir(parents=True, exist_ok=True)
        result.write_bytes(storage.read_bytes(f"s3://{name}/foley/{relative}"))
        assert plays(result) and streams(result) == ["video", "audio"]
        assert video_packets_md5(result) == video_packets_md5(tmp_path / "src" / relative)
        assert abs(stream_duration(result, "a:0") - stream_duration(result, "v:0")) < 0.1
    head = storage.s3.head_object(Bucket=name, Key="foley/a.mp4")
    assert head["ContentType"] == "video/mp4"
    manifest = pq.read_table(io.BytesIO(storage.read_bytes(f"s3://{name}/foley/_manifest/manifest.parquet")))
    rows = manifest.to_pylist()
    assert sorted(row["relative_path"] for row in rows) == sorted(clips)
    assert {row["status"] for row in rows} == {"ok"}
    assert all(FAKE_SECRET not in str(value) for row in rows for value in row.values())
