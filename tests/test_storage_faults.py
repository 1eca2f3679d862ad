"""Storage as infrastructure fails: S3 connections reset and bodies cut short (the fault-injecting proxy between
the client and moto), uploads that do not arrive as sent, and full disks (a small tmpfs). Nothing is published
unchecked, a transient fault is retried, and what still fails names the place and what to do."""

from __future__ import annotations

import json
import os
from pathlib import Path

import ffmpeg
import numpy as np
import pytest

from conftest import fill
from foley.config import LeaseConfig, StorageConfig
from foley.media.probe import MediaError
from foley.media.render import render_test_video
from foley.pipeline.lease import OutputLease
from foley.storage.store import Storage
from foley.storage.uris import StorageError
from media_checks import plays
from s3_faults import FaultyS3


@pytest.fixture
def faulty(bucket, s3_endpoint):
    """(bucket name, a Storage whose S3 calls cross the proxy, the proxy)."""
    name, _ = bucket
    with FaultyS3(upstream=s3_endpoint, seed=1) as proxy:
        yield name, Storage(StorageConfig(endpoint_url=proxy.url, retry_base_s=0.01)), proxy
    assert not proxy.errors, proxy.errors


def test_a_body_cut_short_is_read_again(faulty):
    name, storage, proxy = faulty
    storage.write_bytes(f"s3://{name}/rows/a.parquet", bytes(range(256)) * 4096)
    proxy.add_rule(lambda request: request.method == "GET" and request.key == "rows/a.parquet", fault="cut", times=2)
    assert storage.read_bytes(f"s3://{name}/rows/a.parquet") == bytes(range(256)) * 4096
    assert proxy.injected["cut"] == 2  # botocore does not retry a streamed body; Storage.read_bytes does


def test_a_reset_after_the_leases_conditional_write_still_holds_the_lease(faulty):
    """botocore retries the PUT whose answer was lost; the retry fails If-None-Match on the run's own record, which
    the run recognises: it holds the lease instead of refusing itself."""
    name, storage, proxy = faulty
    proxy.add_rule(
        lambda request: request.method == "PUT" and request.key.endswith("_foley/lease.json")
        and "if-none-match" in request.headers,
        fault="reset-after",
    )  # fmt: skip
    lease = OutputLease(storage, f"s3://{name}/out", "run-1", LeaseConfig(renew_s=30, expire_s=600))
    lease.take()
    assert proxy.injected["reset-after"] == 1
    assert json.loads(storage.read_bytes(lease.uri))["run_id"] == "run-1"
    lease.give_back()
    assert not storage.exists(lease.uri)


def test_an_upload_that_does_not_arrive_as_sent_is_removed_and_fails(bucket, tmp_path, monkeypatch):
    name, storage = bucket
    video = render_test_video(tmp_path / "clip.mp4", 1.0, 64, 48, 10)
    real_upload = storage.s3.upload_file

    def truncating(local, bucket_name, key, *args, **kwargs):  # what a broken proxy or client might do
        half = tmp_path / "half"
        half.write_bytes(Path(local).read_bytes()[:1000])
        real_upload(str(half), bucket_name, key, *args, **kwargs)

    monkeypatch.setattr(storage.s3, "upload_file", truncating)
    with pytest.raises(StorageError, match="failed its check: 1000 bytes arrived of"):
        storage.publish(video, f"s3://{name}/out/clip.mp4")
    assert not storage.exists(f"s3://{name}/out/clip.mp4")


def test_a_multipart_upload_is_checked_against_its_parts(bucket, tmp_path):
    name, storage = bucket
    storage = Storage(StorageConfig(endpoint_url=storage.config.endpoint_url, multipart_mb=5))
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(11 * 2**20))  # three parts of 5 MiB
    assert storage.publish(big, f"s3://{name}/out/big.bin") == big.stat().st_size
    head = storage.s3.head_object(Bucket=name, Key="out/big.bin")
    assert head["ETag"].strip('"').endswith("-3")


def test_a_full_disk_fails_a_write_by_name_and_leaves_nothing(small_disk):
    disk = small_disk("disk", "256k")
    fill(disk, 4096)
    storage = Storage(StorageConfig())
    with pytest.raises(StorageError, match=f"no space left on the device holding {disk}"):
        storage.write_bytes(str(disk / "_foley/manifest/rows/batch.parquet"), b"x" * 100_000)
    assert not [path for path in disk.rglob("*") if path.is_file() and path.name != "filler.bin"]
    # An exclusive create (the lease) on a full disk leaves no empty file that would block the next run.
    with pytest.raises(StorageError, match="no space left"):
        storage.create_exclusive(str(disk / "_foley/lease.json"), b"x" * 100_000)
    assert not (disk / "_foley/lease.json").exists()


@pytest.mark.parametrize("suffix", [".mp4", ".mkv", ".mov"])
def test_a_mux_on_a_full_disk_fails_and_publishes_nothing(small_disk, tmp_path, suffix):
    """ffmpeg 5.1 exits 0 writing an mp4 or mov with +faststart, or a Matroska file, on a full disk; the written
    file is checked as a reader would, and the failure says it is the disk."""
    from foley.media.mux import mux_track

    video = render_test_video(tmp_path / f"in{suffix}", 6.0, 320, 240, 25)
    disk = small_disk("out", "1m")
    fill(disk, video.stat().st_size // 2)
    storage = Storage(StorageConfig())
    track = np.sin(np.arange(6 * 16000) / 7).astype(np.float32) * 0.3
    full = pytest.raises(MediaError, match=f"no space left on the device holding {disk}")
    with full, storage.staged_output(str(disk / f"clip{suffix}")) as staged:
        mux_track(video, track, 16000, staged, "aac", "128k", 48000, language="und", title="Generated")
    assert not [path for path in disk.rglob("*") if path.name != "filler.bin"]


def test_a_file_cut_short_fails_its_check(tmp_path):
    """What a disk filling up halfway leaves in Matroska: the header still claims the whole duration."""
    from foley.media.verify import Planned, check_written

    whole = render_test_video(tmp_path / "whole.mkv", 6.0, 320, 240, 25, with_audio=True)
    check_written(whole, Planned(("video", "audio"), {0: 6.0, 1: 6.0}, frame_s=0.04))
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 2 // 3])
    assert plays(whole) and not plays(cut)
    with pytest.raises(MediaError, match="its video stream 0 runs"):
        check_written(cut, Planned(("video", "audio"), {0: 6.0, 1: 6.0}, frame_s=0.04))
    with pytest.raises(MediaError, match="holds the streams video, audio, not the planned video"):
        check_written(whole, Planned(("video",)))


def test_a_stream_whose_first_frame_is_shown_at_zero_runs_from_zero(tmp_path):
    """x264 at 1 fps with B-frames decodes its first frames before 0 (negative dts): the length counts from the
    first frame shown (pts 0.0), so a still image's 3 s video is 3 s, not 5."""
    from foley.media.still import render_still_video

    photo = tmp_path / "photo.png"
    ffmpeg.input("testsrc2=size=200x150", f="lavfi").output(str(photo), vframes=1).run(quiet=True)
    track = np.sin(np.arange(3 * 16000) / 7).astype(np.float32) * 0.3
    output = tmp_path / "photo.mp4"
    render_still_video(
        photo, track, 16000, output, seconds=3.0, fps=1.0, video_codec="libx264", audio_codec="aac",
        audio_bitrate="128k", output_sample_rate=48000, language="und", title="Generated",
    )  # fmt: skip
    assert plays(output)


def test_a_name_near_the_file_systems_limit_is_published(tmp_path):
    """The partial file's name is shortened where the final name, which the file system allows, leaves no room."""
    from foley.storage.publish import is_partial_name, temporary_sibling

    name = "é" * 123 + ".mp4"  # 250 bytes in UTF-8
    target = tmp_path / name
    sibling = temporary_sibling(target)
    assert len(sibling.name.encode()) <= 255 and is_partial_name(sibling.name) and sibling.suffix == ".mp4"
    storage = Storage(StorageConfig())
    with storage.staged_output(str(target)) as staged:
        staged.write_bytes(b"done")
    assert target.read_bytes() == b"done"


def test_an_output_shard_whose_source_read_breaks_is_written_again_whole_or_named(faulty, tmp_path):
    """A shard streams from S3 while its output is written: a body cut short restarts the shard, and a source that
    keeps breaking leaves no output shard and a problem that names it, not a crashed job."""
    import pyarrow as pa

    from foley.pipeline.shards import ShardWork, publish_shards
    from foley.storage.inputs import InputItem
    from libraries import shard_members, write_shard

    name, storage, proxy = faulty
    members = write_shard(tmp_path / "s.tar", [("a.mp4", os.urandom(300_000)), ("a.txt", b"rain")])
    storage.s3.upload_file(str(tmp_path / "s.tar"), name, "in/s.tar")
    shard = InputItem(f"s3://{name}/in/s.tar", "s.tar", storage.identity(f"s3://{name}/in/s.tar"))
    sample = f"{shard.uri}#a.mp4"
    reading_the_shard = lambda request: request.method == "GET" and request.key == "in/s.tar"  # noqa: E731

    def publish(output: str):
        staged = f"{output}_foley/samples/s.tar/a.flac"
        storage.write_bytes(staged, b"the sound")
        manifest = pa.table({"input_uri": [sample], "result_id": ["r1"], "status": ["ok"], "outputs": [[staged]]})
        return publish_shards(storage, output, [ShardWork(shard, {"a.mp4": (sample, "r1")})], manifest)

    proxy.add_rule(reading_the_shard, fault="cut", times=2)
    outcome = publish(f"s3://{name}/out/")
    assert outcome.published == ["s.tar"] and proxy.injected["cut"] == 2
    assert shard_members(storage.read_bytes(f"s3://{name}/out/s.tar")) == [*members, ("a.flac", b"the sound")]

    proxy.add_rule(reading_the_shard, fault="cut", times=None)
    outcome = publish(f"s3://{name}/broken/")
    assert outcome.published == [] and len(outcome.problems) == 1
    assert shard.uri in outcome.problems[0] and "run the job again" in outcome.problems[0]
    assert not storage.exists(f"s3://{name}/broken/s.tar")
    proxy.clear()
