"""WebDataset shards in, shards out: each sample an input of its own, every member kept byte for byte and in order,
the generated sound (and the muxed video) in the output shard, captions as prompts."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest

from conftest import plan_dub, run_dub, tiny_overrides
from foley.storage.shards import Member, member_of, sample_key
from libraries import (
    SHARD_A,
    SHARD_BROKEN,
    SHARD_OK,
    clip_bytes,
    shard_members,
    write_shard,
)
from media_checks import decoded_audio, plays, stream_duration, streams, video_packets_md5

pytestmark = pytest.mark.slow


def manifest_rows(output) -> dict[str, dict]:
    return {row["relative_path"]: row for row in pq.read_table(output / "_foley/manifest/manifest.parquet").to_pylist()}


def test_the_key_is_the_name_up_to_the_first_dot_as_webdataset_reads_it():
    assert sample_key("000123.mp4") == "000123"
    assert sample_key("clips/000123.left.mp4") == "clips/000123"
    assert member_of("/data/a #1.mp4", "size:3:mtime:4") is None  # a '#' in a file's name is no member
    uri = "s3://b/part/shard.tar#clips/x.y.mp4"
    from foley.storage.shards import member_identity

    assert member_of(uri, member_identity("etag:e:size:9", Member("clips/x.y.mp4", 512, 40))) == (
        "s3://b/part/shard.tar",
        Member("clips/x.y.mp4", 512, 40),
    )


def test_output_shards_hold_every_member_in_order_with_the_muxed_video_and_its_sound(shard_run, tmp_path):
    root, members = shard_run.root, shard_run.facts["members"]
    assert shard_run.returncode == 1, shard_run.stdout + shard_run.stderr  # the broken sample failed
    assert "3 ok, 1 failed, 0 skipped" in shard_run.stdout
    assert "shards: 2 published, 0 already published" in shard_run.stdout
    assert f"1 file left out: 1 shard samples without a video (input.extensions), e.g. {SHARD_A}#000003" in (
        shard_run.stdout
    )
    for shard, written in members.items():
        written = [(name, bytes.fromhex(data)) for name, data in written]
        out = shard_members(root / "out" / shard)
        ok = {path.split("#")[1] for path in SHARD_OK if path.startswith(shard)}
        expected_names = []
        for name, _ in written:
            expected_names.append(name)
            key = sample_key(name)
            last = [n for n, _ in written if sample_key(n) == key][-1]
            if name == last and f"{key}.mp4" in ok:
                expected_names.append(f"{key}.flac")  # after the sample's members
        assert [name for name, _ in out] == expected_names
        by_name = dict(out)
        for name, data in written:
            if name not in ok:  # every member but a dubbed video, byte for byte (the broken one too)
                assert by_name[name] == data, name
                continue
            original, muxed = tmp_path / f"in-{name}", tmp_path / f"out-{name}"
            original.write_bytes(data)
            muxed.write_bytes(by_name[name])
            assert plays(muxed) and streams(muxed) == ["video", "audio"]
            assert video_packets_md5(muxed) == video_packets_md5(original)  # the picture untouched
            sound = tmp_path / f"{sample_key(name)}.flac"
            sound.write_bytes(by_name[f"{sample_key(name)}.flac"])
            seconds = stream_duration(original, "v:0")
            assert abs(len(decoded_audio(sound)) / 16000 - seconds) < 0.1
    assert not (root / "out/part/shard-000000.tar.partial").exists()


def test_each_sample_has_its_row_named_shard_and_member_with_its_caption_and_a_broken_one_fails_alone(shard_run):
    rows = manifest_rows(shard_run.root / "out")
    assert set(rows) == {*SHARD_OK, SHARD_BROKEN}
    for path, caption in SHARD_OK.items():
        row = rows[path]
        assert row["status"] == "ok" and row["input_uri"] == str(shard_run.root / "in" / path)
        assert json.loads(row["conditions"]).get("prompt") == caption  # the .txt member, or the job's (none)
    broken = rows[SHARD_BROKEN]
    assert broken["status"] == "failed" and broken["outputs"] == []
    assert str(shard_run.root / "in" / SHARD_BROKEN) in broken["error"] and "not a readable video" in broken["error"]
    # The report lists each sample by the same name, and plays its sound.
    report = (shard_run.root / "out/_foley/report/data/page-00000.js").read_text()
    entries = {entry["path"]: entry for entry in json.loads(report[report.index("[") : report.rindex("]") + 1])}
    assert set(entries) == set(rows)
    audio = entries[f"{SHARD_A}#000000.mp4"]["audio"]
    assert audio.endswith(".flac") and entries[SHARD_BROKEN]["audio"] is None


def test_a_rerun_leaves_unchanged_shards_alone_makes_a_new_one_and_redoes_a_changed_one_whole(
    tmp_path, tiny_models, ray_cluster, bucket
):
    """Own jobs: the second run is the point; on S3, where a sample is read by ranged GETs. Captions from a JSON
    field; the sound alone, so every input member stays byte for byte."""
    name, storage = bucket
    local, caption = tmp_path / "dataset", lambda text: json.dumps({"caption": text}).encode()
    first = {
        shard: write_shard(local / shard, [(f"{key}.mp4", clip_bytes(tmp_path, 2.0)), (f"{key}.json", caption(key))])
        for shard, key in (("a.tar", "k1"), ("b.tar", "k2"))
    }
    for shard in first:
        storage.s3.upload_file(str(local / shard), name, f"in/{shard}")
    settings = [*tiny_overrides(tiny_models, tmp_path / "cache"), "output.mode=audio", "input.prompt_from=json:caption"]
    settings.append(f"storage.endpoint_url={storage.config.endpoint_url}")
    source, output = f"s3://{name}/in/", f"s3://{name}/out/"
    result = run_dub(ray_cluster, source, output, settings)
    assert result.returncode == 0, result.stdout + result.stderr
    published = {shard: storage.read_bytes(f"{output}{shard}") for shard in first}
    assert [n for n, _ in shard_members(published["a.tar"])] == ["k1.mp4", "k1.json", "k1.flac"]
    assert shard_members(published["a.tar"])[:2] == first["a.tar"]
    assert json.loads(storage.read_bytes(f"{output}_foley/shards/a.tar.json"))["members"] == 3

    changed = [first["b.tar"][0], ("k2.json", caption("thunder"))]  # a new caption: the shard's content changed
    write_shard(local / "b.tar", changed)
    write_shard(local / "c.tar", [("k3.mp4", clip_bytes(tmp_path, 2.0))])  # added to the dataset later
    for shard in ("b.tar", "c.tar"):
        storage.s3.upload_file(str(local / shard), name, f"in/{shard}")
    again = run_dub(ray_cluster, source, output, settings)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 already done, 2 to process" in again.stdout
    assert "shards: 2 published, 1 already published" in again.stdout
    assert storage.read_bytes(f"{output}a.tar") == published["a.tar"]  # unchanged, untouched
    assert shard_members(storage.read_bytes(f"{output}b.tar"))[:2] == changed
    assert [n for n, _ in shard_members(storage.read_bytes(f"{output}c.tar"))] == ["k3.mp4", "k3.flac"]
    rows = {row["relative_path"]: row for row in pq.read_table(io.BytesIO(
        storage.read_bytes(f"{output}_foley/manifest/manifest.parquet"))).to_pylist()}  # fmt: skip
    assert json.loads(rows["b.tar#k2.mp4"]["conditions"])["prompt"] == "thunder"
    assert json.loads(rows["a.tar#k1.mp4"]["conditions"])["prompt"] == "k1"


def test_samples_finished_before_a_kill_are_kept_and_the_shard_waits_for_the_rest(tmp_path, tiny_config):
    """The plan alone, in-process: a run killed after one sample of a shard leaves that sample's row and staged
    sound, and no output shard; the next plan takes only the other sample."""
    from conftest import finish_rows

    write_shard(tmp_path / "in/s.tar", [("a.mp4", clip_bytes(tmp_path, 1.0)), ("b.mp4", clip_bytes(tmp_path, 1.0))])
    config = tiny_config.with_overrides("output.mode=audio")
    rows = plan_dub(tmp_path / "in", tmp_path / "out", config)
    assert [row["relative_path"] for row in rows] == ["s.tar#a.mp4", "s.tar#b.mp4"]
    assert json.loads(rows[0]["outputs"]) == [str(tmp_path / "out/_foley/samples/s.tar/a.flac")]
    finish_rows(tmp_path / "out", config, rows[:1])  # the first sample finished, then the job was killed
    assert not (tmp_path / "out/s.tar").exists()
    left = plan_dub(tmp_path / "in", tmp_path / "out", config)
    assert [row["relative_path"] for row in left] == ["s.tar#b.mp4"]
