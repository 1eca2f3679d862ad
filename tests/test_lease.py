"""One running job per output root: the lease a run takes before it plans, on local folders and in S3."""

import json
import subprocess
import sys
import time

import pytest

from foley.config import LeaseConfig, StorageConfig
from foley.pipeline.lease import LeaseHeldError, OutputLease
from foley.storage.store import Storage
from processes import wait_for

SETTINGS = LeaseConfig(renew_s=0.2, expire_s=60)


@pytest.fixture(params=["local", "s3"])
def output_root(request, tmp_path):
    if request.param == "s3":
        name, storage = request.getfixturevalue("bucket")
        return storage, f"s3://{name}/out"
    return Storage(StorageConfig()), str(tmp_path / "out")


def test_a_second_run_is_refused_while_the_first_holds_the_output(output_root):
    storage, root = output_root
    first, second = OutputLease(storage, root, "run-1", SETTINGS), OutputLease(storage, root, "run-2", SETTINGS)
    first.take()
    with pytest.raises(LeaseHeldError) as refused:
        second.take()
    message = str(refused.value)
    assert f"{root} is in use by another run: run run-1 on host {first.holder['host']}" in message
    assert f"started {first.holder['started_at']}" in message and "wait for that run to end" in message
    renewed = json.loads(storage.read_bytes(first.uri))["renewed_at"]
    wait_for(lambda: json.loads(storage.read_bytes(first.uri))["renewed_at"] > renewed, 30, "a renewal")
    first.give_back()
    second.take()  # free again
    assert json.loads(storage.read_bytes(second.uri))["run_id"] == "run-2"
    first.give_back()  # not its lease any more: nothing removed
    assert storage.exists(second.uri)
    second.give_back()
    assert not storage.exists(second.uri)


def test_a_lease_whose_holder_cannot_be_running_is_taken_over(output_root, capsys):
    storage, root = output_root
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lease = OutputLease(storage, root, "run-new", SETTINGS)
    # A killed job on this host: its process is gone, so its lease is taken at once.
    killed = lease.holder | {"run_id": "run-killed", "pid": int(ended.stdout), "renewed_at": time.time()}
    storage.write_bytes(lease.uri, json.dumps(killed).encode())
    lease.take()
    said = capsys.readouterr().err
    assert f"from run run-killed: its process {int(ended.stdout)} on this host has ended" in said, said
    lease.give_back()
    # A run on another host: held while renewed, taken once silent for lease.expire_s.
    elsewhere = {"run_id": "run-far", "host": "another-host", "pid": 1, "started_at": "2026-12-01T00:00:00+00:00"}
    storage.write_bytes(lease.uri, json.dumps(elsewhere | {"renewed_at": time.time()}).encode())
    with pytest.raises(LeaseHeldError, match="run run-far on host another-host"):
        lease.take()
    storage.write_bytes(lease.uri, json.dumps(elsewhere | {"renewed_at": time.time() - 61}).encode())
    lease.take()
    assert "it was not renewed for 61 s" in capsys.readouterr().err
    lease.give_back()


def test_the_dub_job_refuses_an_output_another_run_holds_before_writing_anything(tmp_path, tiny_models):
    """The job as a user runs it, while another run (here this test's process) holds the output: exit 2, the
    holder named, nothing planned, cleaned or written under the output but the holder's lease."""
    from conftest import dub_command, tiny_overrides
    from foley.media.render import render_test_video

    render_test_video(tmp_path / "in" / "a.mp4", 1.0, 64, 48, 10)
    holder = OutputLease(Storage(StorageConfig()), str(tmp_path / "out"), "run-at-work", SETTINGS)
    holder.take()
    (tmp_path / "out" / ".a.mp4.partial-89abcdef.mp4").write_bytes(b"the holder's upload in progress")
    try:
        refused = subprocess.run(
            dub_command(tmp_path / "in", tmp_path / "out", tiny_overrides(tiny_models, tmp_path / "cache")),
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        holder.give_back()
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert f"{tmp_path / 'out'} is in use by another run: run run-at-work on host" in refused.stderr
    # Only the holder's files: its upload, and the lock beside its lease that its renewals and give-back took.
    written = sorted(p.name for p in (tmp_path / "out").rglob("*"))
    assert written == [".a.mp4.partial-89abcdef.mp4", "_foley", "lease.json.lock"]
