import csv
import io
import pickle

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FAKE_SECRET
from foley.config import StorageConfig
from foley.storage.store import Storage
from foley.storage.uris import StorageError, UnsafePathError, join, safe_relative_path

EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi")


def test_local_listing_is_recursive_case_insensitive_and_sorted(tmp_path):
    for name in ("b.MP4", "a/c.mov", "a/d/e.webm", "notes.txt", ".hidden.mp4", "x.Avi"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = Storage(StorageConfig()).list_inputs(str(tmp_path), EXTENSIONS).items
    assert [item.relative_path for item in items] == ["a/c.mov", "a/d/e.webm", "b.MP4", "x.Avi"]
    assert all(item.uri.startswith(str(tmp_path)) for item in items)


@pytest.mark.parametrize("relative", ["../x.mp4", "a/../../x.mp4", "/etc/x.mp4", "..", "a\\..\\x.mp4", ""])
def test_paths_that_escape_the_output_root_are_refused(relative):
    with pytest.raises(UnsafePathError):
        join("s3://bucket/out/", relative)
    with pytest.raises(UnsafePathError):
        join("/srv/out", relative)


def test_safe_paths_are_normalised():
    assert safe_relative_path("a/./b//c.mp4") == "a/b/c.mp4"
    assert join("s3://bucket/out/", "a/b.mp4") == "s3://bucket/out/a/b.mp4"


def test_s3_listing_pages_past_1000_objects(bucket):
    name, storage = bucket
    for index in range(1003):
        storage.s3.put_object(Bucket=name, Key=f"lib/{index // 100:02d}/clip{index:04d}.mp4", Body=b"x")
    storage.s3.put_object(Bucket=name, Key="lib/readme.txt", Body=b"x")
    storage.s3.put_object(Bucket=name, Key="other/clip.mp4", Body=b"x")
    items = storage.list_inputs(f"s3://{name}/lib", EXTENSIONS).items
    assert len(items) == 1003
    assert items[0].relative_path == "00/clip0000.mp4" and items[0].uri == f"s3://{name}/lib/00/clip0000.mp4"


def test_list_files_choose_a_subset_and_keep_relative_paths(bucket, tmp_path):
    name, storage = bucket
    uris = [f"s3://{name}/lib/a/one.mp4", f"s3://{name}/lib/b/two.mov"]
    text = io.StringIO()
    csv.writer(text).writerows([["uri"], *[[u] for u in uris]])
    storage.write_bytes(f"s3://{name}/lists/subset.csv", text.getvalue().encode())
    items = storage.list_inputs(f"s3://{name}/lists/subset.csv", EXTENSIONS).items
    assert [(i.uri, i.relative_path) for i in items] == [(uris[0], "a/one.mp4"), (uris[1], "b/two.mov")]
    pq.write_table(pa.table({"uri": [str(tmp_path / "x" / "v.mp4")]}), tmp_path / "list.parquet")
    [item] = storage.list_inputs(str(tmp_path / "list.parquet"), EXTENSIONS).items
    assert item.relative_path == "v.mp4"
    (tmp_path / "empty.csv").write_text("uri\n")
    with pytest.raises(StorageError, match="holds no URIs"):
        storage.list_inputs(str(tmp_path / "empty.csv"), EXTENSIONS)


def test_s3_output_appears_only_when_complete_with_its_content_type(bucket):
    name, storage = bucket
    uri = f"s3://{name}/out/clip.mp4"
    with pytest.raises(RuntimeError), storage.staged_output(uri) as staged:
        staged.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert not storage.exists(uri)
    big = bytes(9 * 1024 * 1024)  # over boto3's multipart threshold: a completed multipart upload
    with storage.staged_output(uri) as staged:
        staged.write_bytes(big)
        assert not storage.exists(uri)
    head = storage.s3.head_object(Bucket=name, Key="out/clip.mp4")
    assert head["ContentType"] == "video/mp4" and head["ContentLength"] == len(big)


# What a browser needs to show, play or run each kind of file the job writes, instead of downloading it.
SERVED_AS = {
    "_foley/report/index.html": "text/html; charset=utf-8",
    "_foley/report/data/page-00000.js": "text/javascript; charset=utf-8",
    "_foley/report/media/0123/posters.jpg": "image/jpeg",
    "_foley/report/media/0123/spectrogram.png": "image/png",
    "_foley/evaluation/summary.json": "application/json; charset=utf-8",
    "_foley/manifest/manifest.parquet": "application/vnd.apache.parquet",
    "a/sidecar.flac": "audio/flac",
    "a/sidecar.wav": "audio/x-wav",
    "a/video.mp4": "video/mp4",
    "a/video.mov": "video/quicktime",
    "a/video.mkv": "video/x-matroska",
    "a/video.webm": "video/webm",
    "a/video.avi": "video/x-msvideo",
    "a/video.m4v": "video/x-m4v",
    "a/video.3gp": "video/3gpp",
    "a/video.TS": "video/mp2t",
    "a/video.mts": "video/mp2t",
    "a/video.m2ts": "video/mp2t",
    "a/video.mpg": "video/mpeg",
    "a/video.mpeg": "video/mpeg",
}


def test_every_file_the_job_writes_to_s3_is_served_with_its_content_type(bucket):
    name, storage = bucket
    for key in SERVED_AS:
        storage.write_bytes(f"s3://{name}/out/{key}", b"x")
    served = {key: storage.s3.get_object(Bucket=name, Key=f"out/{key}")["ContentType"] for key in SERVED_AS}
    assert served == SERVED_AS


def test_local_output_is_renamed_into_place(tmp_path):
    storage = Storage(StorageConfig())
    target = tmp_path / "deep" / "out.mp4"
    with storage.staged_output(str(target)) as staged:
        staged.write_bytes(b"done")
        assert staged.parent == target.parent and not target.exists()
    assert target.read_bytes() == b"done"
    (target.parent / ".out.partial-1234abcd.mp4").write_bytes(b"left by a killed run")
    assert storage.remove_partials(str(tmp_path)) == 1 and target.exists()


def test_weights_prefix_is_copied_once_per_node_and_content(bucket, tmp_path):
    name, storage = bucket
    storage = Storage(StorageConfig(endpoint_url=storage.config.endpoint_url, cache_dir=str(tmp_path)))
    storage.write_bytes(f"s3://{name}/models/m/a.json", b"{}")
    storage.write_bytes(f"s3://{name}/models/m/sub/b.bin", b"1")
    folder = storage.fetch_tree(f"s3://{name}/models/m/")
    assert (folder / "a.json").read_bytes() == b"{}" and (folder / "sub/b.bin").read_bytes() == b"1"
    copied_at = (folder / "a.json").stat().st_mtime_ns
    assert storage.fetch_tree(f"s3://{name}/models/m/") == folder  # reused, not refetched
    assert (folder / "a.json").stat().st_mtime_ns == copied_at
    storage.write_bytes(f"s3://{name}/models/m/sub/b.bin", b"2")  # retrained into the same prefix
    changed = storage.fetch_tree(f"s3://{name}/models/m/")
    assert changed != folder and (changed / "sub/b.bin").read_bytes() == b"2"


def test_errors_name_the_object_and_never_the_secret(bucket):
    name, storage = bucket
    with pytest.raises(StorageError) as caught:
        storage.read_bytes(f"s3://{name}/missing.mp4")
    assert f"s3://{name}/missing.mp4" in str(caught.value) and "NoSuchKey" in str(caught.value)
    assert FAKE_SECRET not in str(caught.value)
    clone = pickle.loads(pickle.dumps(storage))  # Ray ships stages' storage to workers: no client, no secrets
    assert clone._client is None and FAKE_SECRET.encode() not in pickle.dumps(storage)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_video_is_claimed_for_publication_exactly_once(where, tmp_path, request):
    """Of the segments racing to publish their video, exactly one wins; the winner's retried batch wins again."""
    import concurrent.futures

    from foley.pipeline.segments import SegmentStaging

    if where == "s3":
        name, storage = request.getfixturevalue("bucket")
        root = f"s3://{name}/out/_foley/segments/result"
    else:
        storage, root = Storage(StorageConfig()), str(tmp_path / "_foley/segments" / "result")
    staging = SegmentStaging(storage, root, [(index, index + 1) for index in range(8)])
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        won = list(pool.map(lambda segment: staging.claim(f"run/{segment}"), range(8)))
    assert won.count(True) == 1
    winner = won.index(True)
    assert staging.claim(f"run/{winner}") and not staging.claim(f"run/{(winner + 1) % 8}")
    staging.remove()
    assert not storage.list_prefix(root + "/")
