"""`ray job submit` end to end: a real local Ray head, the job's code shipped with --working-dir, and the videos,
the outputs and the model weights all in an S3-protocol server on loopback."""

import io
import re
import shlex
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import FAKE_SECRET, ROOT
from foley.media.render import render_test_video
from media_checks import plays, stream_duration, streams, video_packets_md5
from ray_heads import RAY, TOKEN_FILE, head_env, start_head, stop_head


def upload_tree(storage, folder: Path, prefix: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            storage.publish(path, f"{prefix}/{path.relative_to(folder).as_posix()}")


def strangers(env: dict, tmp_path: Path) -> dict[str, dict]:
    """Client environments the head must refuse: no token mode, no token at all, a wrong token. (A client in token
    mode with no token at all stops by itself, before asking the head anything.)"""
    plain = {key: value for key, value in env.items() if not key.startswith("RAY_AUTH")}
    home = tmp_path / "stranger-home"  # no ~/.ray/auth_token there
    home.mkdir(exist_ok=True)
    return {
        "no RAY_AUTH_MODE": plain,
        "no token": plain | {"HOME": str(home)},
        "wrong token": plain | {"HOME": str(home), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64},
    }


def assert_refused_without_the_token(address: str, env: dict, tmp_path: Path) -> None:
    with pytest.raises(urllib.error.HTTPError) as refused:  # the REST API itself, no client library involved
        urllib.request.urlopen(f"{address}/api/jobs/", timeout=30)
    assert refused.value.code == 401 and "Missing authentication token" in refused.value.read().decode()
    for why, stranger in strangers(env, tmp_path).items():
        listing = subprocess.run(
            [RAY, "job", "list", "--address", address], capture_output=True, text=True, env=stranger, timeout=120
        )
        out = listing.stdout + listing.stderr
        assert listing.returncode != 0, f"{why}: a client without the token was let in:\n{out[-2000:]}"
        assert ("Authentication required" in out and "Unauthorized" in out) or (
            "Authentication failed" in out and "Invalid authentication token" in out
        ), f"{why}: {out[-2000:]}"
        assert TOKEN_FILE.read_text().strip() not in out


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


def readme_entrypoint(name: str, s3_endpoint: str, node_cache: Path) -> list[str]:
    """The `ray job submit` example of docs/cluster.md (the README's, tests/test_readme.py checks) as written, with
    the tiny models its next paragraph says to add: the dub job over s3://<name>/silent/ into s3://<name>/foley/, its
    models in the bucket too. Only the bucket's name, the loopback endpoint and the node cache are the test's own."""
    page = (ROOT / "docs" / "cluster.md").read_text()
    section = page.split("Weights under `s3://`", 1)[1]
    [command] = re.findall(r"```bash\n(RAY_AUTH_MODE=token ray job submit .*?)```", section, re.S)
    words = shlex.split(command.replace("\\\n", " "))
    assert words[:8] == [
        "RAY_AUTH_MODE=token",
        "ray",
        "job",
        "submit",
        "--address",
        "http://HEAD:8265",
        "--working-dir",
        ".",
    ]
    entrypoint = words[words.index("--") + 1 :]
    [tiny_keys] = re.findall(
        r"then add `(clip\.model=[^`]+)` with `--config configs/tiny\.yaml`", " ".join(section.split())
    )
    tiny_keys = tiny_keys.split()
    named = {key.split("=", 1)[0] for key in tiny_keys}
    entrypoint = [word for word in entrypoint if word.split("=", 1)[0] not in named] + tiny_keys
    entrypoint[entrypoint.index("--config") + 1] = "configs/tiny.yaml"
    return [word.replace("s3://library/", f"s3://{name}/") for word in entrypoint] + [
        f"storage.endpoint_url={s3_endpoint}",
        f"storage.cache_dir={node_cache}",
    ]


def submit(address: str, env: dict, job_id: str, entrypoint: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
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
            *entrypoint,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def run_to_the_end(address: str, env: dict, entrypoint: list[str]) -> tuple[str, str]:
    """Submit the job, wait for it to end; (its final status, its logs)."""
    deadline = time.monotonic() + 180
    while True:
        job_id = f"foley-test-{uuid.uuid4().hex[:8]}"
        submitted = submit(address, env, job_id, entrypoint)
        # A head just started may not have its job agent yet (slow on a busy machine); Ray says to try again.
        if "No available agent to submit job" not in submitted.stderr or time.monotonic() > deadline:
            break
        time.sleep(3)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    deadline = time.monotonic() + 600
    while (status := job_status(address, env, job_id)) == "RUNNING" and time.monotonic() < deadline:
        time.sleep(2)
    logs = subprocess.run(
        [RAY, "job", "logs", "--address", address, job_id], capture_output=True, text=True, env=env, timeout=60
    ).stdout
    return status, logs


def put_inputs_and_models(storage, name: str, tiny_models: dict[str, Path], tmp_path: Path) -> dict:
    for model, folder in tiny_models.items():
        upload_tree(storage, folder, f"s3://{name}/models/tiny/{model}")
    clips = {"a.mp4": (3.0, 320, 240, 25), "b/c.mov": (12.0, 256, 144, 30), "b/d.webm": (4.0, 240, 160, 25)}
    for relative, (seconds, width, height, fps) in clips.items():
        storage.publish(
            render_test_video(tmp_path / "src" / relative, seconds, width, height, fps),
            f"s3://{name}/silent/{relative}",
        )
    return clips


@pytest.mark.slow  # own job: ray job submit, as a user submits a job
def test_ray_job_submit_dubs_a_bucket(tmp_path, bucket, s3_endpoint, tiny_models, ray_cluster):
    name, storage = bucket
    address, env = ray_cluster.dashboard, head_env() | {"RAY_AUTH_MODE": "token"}
    clips = put_inputs_and_models(storage, name, tiny_models, tmp_path)
    entrypoint = readme_entrypoint(name, s3_endpoint, tmp_path / "node-cache")

    # The head runs with token authentication: a client without the token is refused, and submits nothing.
    assert_refused_without_the_token(address, env, tmp_path)
    refused_id = f"foley-refused-{uuid.uuid4().hex[:8]}"
    refused = submit(address, strangers(env, tmp_path)["no RAY_AUTH_MODE"], refused_id, entrypoint)
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert "Authentication required" in refused.stderr + refused.stdout, refused.stdout + refused.stderr
    assert "Unauthorized" in refused.stderr + refused.stdout

    status, logs = run_to_the_end(address, env, entrypoint)
    assert status == "SUCCEEDED", logs[-3000:]
    assert "3 ok, 0 failed, 0 skipped" in logs
    assert FAKE_SECRET not in logs
    assert TOKEN_FILE.read_text().strip() not in logs
    listed = subprocess.run(
        [RAY, "job", "list", "--address", address], capture_output=True, text=True, env=env, timeout=120
    )
    assert listed.returncode == 0 and refused_id not in listed.stdout, listed.stdout + listed.stderr

    for relative in clips:
        result = tmp_path / "result" / relative
        result.parent.mkdir(parents=True, exist_ok=True)
        result.write_bytes(storage.read_bytes(f"s3://{name}/foley/{relative}"))
        assert plays(result) and streams(result) == ["video", "audio"]
        assert video_packets_md5(result) == video_packets_md5(tmp_path / "src" / relative)
        assert abs(stream_duration(result, "a:0") - stream_duration(result, "v:0")) < 0.1
    head = storage.s3.head_object(Bucket=name, Key="foley/a.mp4")
    assert head["ContentType"] == "video/mp4"
    report = storage.s3.list_objects_v2(Bucket=name, Prefix="foley/_foley/report/")["Contents"]
    served = {
        obj["Key"].rsplit(".", 1)[-1]: storage.s3.get_object(Bucket=name, Key=obj["Key"])["ContentType"]
        for obj in report
    }
    assert served == {
        "html": "text/html; charset=utf-8",
        "js": "text/javascript; charset=utf-8",
        "jpg": "image/jpeg",
        "png": "image/png",
    }  # the report opens in a browser straight from the bucket
    manifest = pq.read_table(io.BytesIO(storage.read_bytes(f"s3://{name}/foley/_foley/manifest/manifest.parquet")))
    rows = manifest.to_pylist()
    assert sorted(row["relative_path"] for row in rows) == sorted(clips)
    assert {row["status"] for row in rows} == {"ok"}
    assert all(FAKE_SECRET not in str(value) for row in rows for value in row.values())


def output_objects(storage, name: str) -> dict[str, tuple]:
    """Every object under foley/ but the manifest and the report (which each run writes again from the manifest):
    (ETag, LastModified)."""
    listing = storage.s3.list_objects_v2(Bucket=name, Prefix="foley/")
    return {
        obj["Key"]: (obj["ETag"], obj["LastModified"])
        for obj in listing.get("Contents", [])
        if not obj["Key"].startswith(("foley/_foley/manifest/", "foley/_foley/report/"))
    }


def dubbed(outputs: dict[str, tuple]) -> list[str]:
    """The dubbed videos among the output objects (not the job's own folders, such as the kept conditions)."""
    return sorted(key for key in outputs if not key.startswith("foley/_"))


def manifest_rows(storage, name: str) -> dict[str, dict]:
    table = pq.read_table(io.BytesIO(storage.read_bytes(f"s3://{name}/foley/_foley/manifest/manifest.parquet")))
    return {row["relative_path"]: row for row in table.to_pylist()}


@pytest.mark.slow  # own job: fresh heads and a fresh working dir
def test_ray_job_submit_working_dir_run_on_two_fresh_heads_does_nothing_the_second_time(
    tmp_path, bucket, s3_endpoint, tiny_models
):
    """A cluster restarted (or another one) gets the same --working-dir unpacked under a new session directory:
    the same job over the same inputs must find everything already done."""
    name, storage = bucket
    clips = put_inputs_and_models(storage, name, tiny_models, tmp_path)
    entrypoint = readme_entrypoint(name, s3_endpoint, tmp_path / "node-cache")
    env = head_env()
    temp_dir = f"/tmp/ray-submit-{uuid.uuid4().hex[:6]}"  # the same for both heads, as for a restarted cluster

    head = start_head(env, temp_dir)
    try:
        status, first_logs = run_to_the_end(head.dashboard, env | {"RAY_AUTH_MODE": "token"}, entrypoint)
    finally:
        stop_head(head.sid)
    assert status == "SUCCEEDED", first_logs[-3000:]
    assert "0 already done, 3 to process" in first_logs and "3 ok, 0 failed, 0 skipped" in first_logs
    outputs, rows = output_objects(storage, name), manifest_rows(storage, name)
    assert dubbed(outputs) == sorted(f"foley/{relative}" for relative in clips)
    assert sorted(rows) == sorted(clips) and {row["status"] for row in rows.values()} == {"ok"}

    head = start_head(env, temp_dir)
    try:
        assert_refused_without_the_token(head.dashboard, env, tmp_path)  # the second head is no less protected
        status, second_logs = run_to_the_end(head.dashboard, env | {"RAY_AUTH_MODE": "token"}, entrypoint)
    finally:
        stop_head(head.sid)
    assert status == "SUCCEEDED", second_logs[-3000:]
    plans = [line for logs in (first_logs, second_logs) for line in logs.splitlines() if " to process" in line]
    assert "3 already done, 0 to process" in second_logs, "the second run redid work:\n" + "\n".join(plans)
    assert "0 ok, 0 failed, 0 skipped, 3 already done" in second_logs, second_logs[-3000:]
    assert output_objects(storage, name) == outputs, "an output object was written again"
    again = manifest_rows(storage, name)
    assert sorted(again) == sorted(clips)
    for relative, row in rows.items():
        assert again[relative]["finished_at"] == row["finished_at"], relative
        assert again[relative]["config_hash"] == row["config_hash"], relative
