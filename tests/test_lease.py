"""One running job per output root: the lease a run takes before it plans, on local folders and in S3."""

import json
import subprocess
import sys
import threading
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


@pytest.mark.parametrize("content", [b"", b'{"run_id": "run-cut", "host": "h', b"not json at all"])
def test_an_empty_or_damaged_lease_file_is_taken_over(output_root, content, capsys):
    """What a full disk left (the create succeeded, the write did not), or a file cut short: taken as expired,
    never a block on every later run."""
    storage, root = output_root
    lease = OutputLease(storage, root, "run-new", SETTINGS)
    storage.write_bytes(lease.uri, content)
    lease.take()
    assert f"taking over {lease.uri} from a damaged lease: its file is damaged ({len(content)} bytes" in (
        capsys.readouterr().err
    )
    assert json.loads(storage.read_bytes(lease.uri))["run_id"] == "run-new"
    lease.give_back()
    assert not storage.exists(lease.uri)


def test_a_takeover_replaces_only_the_lease_it_judged_dead(output_root, monkeypatch):
    """Two runs find one dead lease; the first takes it over. The second, whose judgement was of the dead lease, must
    not replace the first's fresh one: its conditional write fails, it reads again, and is refused."""
    storage, root = output_root
    dead = {"run_id": "run-dead", "host": "another-host", "pid": 1, "renewed_at": time.time() - 3600}
    first = OutputLease(storage, root, "run-first", SETTINGS)
    second = OutputLease(storage, root, "run-second", SETTINGS)
    storage.write_bytes(first.uri, json.dumps(dead).encode())
    judge = OutputLease.holder_gone

    def first_takes_over_meanwhile(self, held):
        verdict = judge(self, held)
        if self is second and held["run_id"] == "run-dead" and first.version is None:
            first.take()  # between the second's read and its write
        return verdict

    monkeypatch.setattr(OutputLease, "holder_gone", first_takes_over_meanwhile)
    with pytest.raises(LeaseHeldError, match="in use by another run: run run-first"):
        second.take()
    assert json.loads(storage.read_bytes(first.uri))["run_id"] == "run-first"
    first.give_back()


def test_a_run_whose_lease_is_taken_stops(output_root):
    """A renewal that finds another run's lease calls on_lost (the job's driver stops there, exit 1) and leaves
    that run's lease alone."""
    storage, root = output_root
    lost = threading.Event()
    lease = OutputLease(storage, root, "run-1", SETTINGS, on_lost=lost.set)
    lease.take()
    other = {"run_id": "run-2", "host": "another-host", "pid": 1, "renewed_at": time.time()}
    storage.write_bytes(lease.uri, json.dumps(other).encode())
    assert lost.wait(30), "the renewal never noticed"
    assert "no longer held by this run: another run took it over or removed it" in lease.lost
    lease.give_back()
    assert json.loads(storage.read_bytes(lease.uri))["run_id"] == "run-2"
