"""What a library holds besides plain videos: lists saved by spreadsheets, links, files the job does not take, names
the job uses itself, and one object of a bucket. Each problem fails its own input with a message, or the whole job
before it starts; none is dropped without a word."""

import csv
import io
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, tiny_overrides
from foley.config import StorageConfig
from foley.pipeline.conditions import CONDITION_COLUMNS
from foley.pipeline.kinds import DUB
from foley.pipeline.manifest import Manifest
from foley.pipeline.report import relative_link
from foley.storage.store import Storage
from foley.storage.uris import StorageError

EXTENSIONS = (".mp4", ".webm")


def listing(source, columns=CONDITION_COLUMNS):
    return Storage(StorageConfig()).list_inputs(str(source), EXTENSIONS, columns)


def write_csv(path, rows, encoding="utf-8"):
    text = io.StringIO()
    csv.writer(text).writerows(rows)
    path.write_bytes(text.getvalue().encode(encoding))
    return path


def test_a_spreadsheets_utf8_list_with_a_byte_order_mark_keeps_its_header_and_prompts(tmp_path):
    videos = [tmp_path / "lib" / "a.mp4", tmp_path / "lib" / "b" / "c.mp4"]
    rows = [["uri", "prompt"], [str(videos[0]), "rain on a café roof"], [str(videos[1]), ""]]
    items = listing(write_csv(tmp_path / "list.csv", rows, encoding="utf-8-sig")).items
    assert [(item.relative_path, item.columns, item.problem) for item in items] == [
        ("a.mp4", (("prompt", "rain on a café roof"),), ""),
        ("b/c.mp4", (), ""),
    ]


def test_a_list_that_is_not_utf8_is_refused_up_front(tmp_path, tiny_models, capsys):
    from jobs.dub import main

    source = write_csv(tmp_path / "list.csv", [["uri", "prompt"], ["a.mp4", "café"]], encoding="latin-1")
    message = r"list\.csv is not UTF-8 text \(byte 0xe9 at offset 21\); save the list as UTF-8"
    with pytest.raises(StorageError, match=message):
        listing(source)
    arguments = ["--input", str(source), "--output", str(tmp_path / "out"), "--config", str(ROOT / "configs/tiny.yaml")]
    assert main([*arguments, *tiny_overrides(tiny_models, tmp_path / "cache")]) == 2  # a setup error, no traceback
    assert "save the list as UTF-8" in capsys.readouterr().err


def test_a_bad_cell_fails_its_own_line_and_the_others_keep_their_paths(tmp_path):
    good = tmp_path / "lib" / "x" / "good.mp4"
    rows = [["uri"], ["s3://bucket"], ["s3:///x.mp4"], ["https://example.com/v.mp4"], [str(good)], ["s3://b/dir/"]]
    items = listing(write_csv(tmp_path / "list.csv", rows)).items
    assert [(item.uri, item.relative_path) for item in items if not item.problem] == [(str(good), "good.mp4")]
    problems = {item.uri: item.problem for item in items if item.problem}
    source = tmp_path / "list.csv"
    assert problems == {
        f"{source} line 2": "'s3://bucket' names a bucket or a folder, not an object; give the key of one video",
        f"{source} line 3": "'s3:///x.mp4' names no bucket; give s3://BUCKET/KEY",
        f"{source} line 4": "'https://example.com/v.mp4' is neither a local path nor an s3:// URI",
        f"{source} line 6": "'s3://b/dir/' names a bucket or a folder, not an object; give the key of one video",
    }


def test_a_line_with_more_cells_than_the_header_fails_alone(tmp_path):
    rows = [["uri", "prompt"], ["a.mp4", "rain", "wind"], ["b.mp4", "sea"]]
    items = listing(write_csv(tmp_path / "list.csv", rows)).items
    assert [item.problem for item in items] == ["", "it has 3 cells, but the header names 2 columns"]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([["uri", "promt"], ["a.mp4", "rain"]], r"columns this job does not know: promt; the columns it knows: uri, "),
        ([["url", "prompt"], ["a.mp4", "rain"]], r"has no 'uri' column \(columns found: url, prompt\)"),
        ([["a.mp4", "rain"]], r"more than one column but no header row"),
    ],
)
def test_a_list_whose_columns_cannot_be_read_right_is_refused_up_front(tmp_path, rows, message):
    with pytest.raises(StorageError, match=message):
        listing(write_csv(tmp_path / "list.csv", rows))


def test_a_job_without_conditions_takes_no_condition_column(tmp_path):
    pq.write_table(pa.table({"uri": ["a.mp4"], "prompt": ["rain"]}), tmp_path / "list.parquet")
    with pytest.raises(StorageError, match="does not know: prompt; the columns it knows: uri, relative_path$"):
        listing(tmp_path / "list.parquet", columns=())


def test_links_are_inputs_at_their_own_paths_and_bad_links_fail_alone(tmp_path):
    library, elsewhere = tmp_path / "lib", tmp_path / "elsewhere"
    (library / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (library / "a.mp4").write_bytes(b"a video")
    (elsewhere / "far.mp4").write_bytes(b"another")
    os.symlink(library / "a.mp4", library / "alias.mp4")
    os.symlink("../a.mp4", library / "sub" / "relative-alias.mp4")
    os.symlink(elsewhere / "far.mp4", library / "outside.mp4")
    os.symlink(library / "gone.mp4", library / "broken.mp4")
    os.symlink(library / "loop-b.mp4", library / "loop-a.mp4")
    os.symlink(library / "loop-a.mp4", library / "loop-b.mp4")
    os.symlink(elsewhere, library / "folder-link")
    (library / "notes.txt").write_text("x")

    found = listing(library)
    by_path = {item.relative_path: item for item in found.items}
    assert sorted(by_path) == [
        "a.mp4", "alias.mp4", "broken.mp4", "loop-a.mp4", "loop-b.mp4", "outside.mp4", "sub/relative-alias.mp4"
    ]  # fmt: skip
    for alias in ("alias.mp4", "sub/relative-alias.mp4"):  # its own input, with the content it points to
        assert by_path[alias].uri == str(library / alias) and not by_path[alias].problem
        assert by_path[alias].identity == by_path["a.mp4"].identity
    assert "outside the input folder" in by_path["outside.mp4"].problem
    assert by_path["broken.mp4"].problem.startswith(f"it is a broken link (to {library / 'gone.mp4'})")
    assert "loops" in by_path["loop-a.mp4"].problem and "loops" in by_path["loop-b.mp4"].problem
    assert found.left_out == {"links to folders": ["folder-link"], ".txt": ["notes.txt"]}
    assert found.left_out_line() == (
        "2 files left out: 1 links to folders, 1 .txt (input.extensions), e.g. folder-link, notes.txt"
    )


def test_one_s3_object_is_one_input(bucket):
    name, storage = bucket
    storage.s3.put_object(Bucket=name, Key="lib/take.mp4", Body=b"x")
    storage.s3.put_object(Bucket=name, Key="lib/take.mp4.txt", Body=b"x")
    [item] = storage.list_inputs(f"s3://{name}/lib/take.mp4", EXTENSIONS).items
    assert (item.uri, item.relative_path) == (f"s3://{name}/lib/take.mp4", "take.mp4")
    assert item.identity.startswith("etag:")
    assert storage.list_inputs(f"s3://{name}/lib/none.mp4", EXTENSIONS).items == []


def test_a_lists_s3_identities_come_from_listing_their_folders_not_a_head_each(bucket, tmp_path):
    """60 URIs in one folder (beside a subfolder of 1,500 objects it must not page through) and 3 in another:
    one listing request and 3 HEADs (made in parallel), not 63 HEADs one at a time. A missing object gets no
    identity, so its row fails later naming it."""
    name, storage = bucket
    for index in range(60):
        storage.s3.put_object(Bucket=name, Key=f"big/v{index:02d}.mp4", Body=f"video {index}".encode())
    for index in range(1500):
        storage.s3.put_object(Bucket=name, Key=f"big/archive/old{index}.mp4", Body=b"x")
    for key in ("small/a.mp4", "small/b.mp4"):
        storage.s3.put_object(Bucket=name, Key=key, Body=key.encode())
    wanted = [f"s3://{name}/big/v{index:02d}.mp4" for index in range(60)]
    wanted += [f"s3://{name}/small/a.mp4", f"s3://{name}/small/b.mp4", f"s3://{name}/small/gone.mp4"]
    (tmp_path / "list.csv").write_text("uri\n" + "\n".join(wanted) + "\n")
    requests = []
    storage.s3.meta.events.register("before-send.s3", lambda request, **_: requests.append(request.method))
    items = {item.uri: item for item in storage.list_inputs(str(tmp_path / "list.csv"), EXTENSIONS).items}
    assert sorted(requests) == ["GET"] + ["HEAD"] * 3, requests
    assert all(items[uri].identity == storage.identity(uri) != "" for uri in wanted[:-1])
    assert items[wanted[-1]].identity == ""


def test_report_links_keep_a_hash_and_a_question_mark_in_the_name():
    assert relative_link("/out/a/take#2 what?.mp4", "/out", "a/take#2 what?.mp4") == "../../a/take%232%20what%3F.mp4"


def test_inputs_that_would_land_in_the_jobs_own_files_fail_and_cleaning_touches_only_its_own(
    tmp_path, tiny_models, capsys
):
    """The job deletes stale staging and partial files: no input may ever be published where it would, and what it
    deletes is only what it made itself (its partial names, its staging under _foley/)."""
    from jobs.dub import main

    library, out = tmp_path / "lib", tmp_path / "out"
    # (A hidden file is no input of a folder, but a list can name one.)
    listed = [
        "_foley/segments/0123abcd/0.parquet.mp4",
        "_foley/manifest/x.mp4",
        "_foley/report/y.mp4",
        "s/.x.partial-0123abcd.mp4",
    ]
    for relative in listed:
        (library / relative).parent.mkdir(parents=True, exist_ok=True)
        (library / relative).write_bytes(b"someone's video")
    # Already in the output: a published output, a person's own files with names near the job's, and what a killed
    # run of the job left (a partial output and a segment staged for a result no input has).
    kept = ["published.mp4", "notes.partial.txt", ".draft.partial-notes.mp4", "_manifest/old.txt", "_segments/a/b.npz"]
    leftovers = [".published.partial-89abcdef.mp4", "_foley/segments/feedface/windows-000000-to-000002.npz"]
    for relative in kept + leftovers:
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        (out / relative).write_bytes(b"made before this run")
    source = write_csv(tmp_path / "list.csv", [["uri"], *[[str(library / relative)] for relative in listed]])
    arguments = ["--output", str(out), "--config", str(ROOT / "configs/tiny.yaml")]
    for _ in range(2):  # the second run would clear what the first one left
        assert main(["--input", str(source), *arguments, *tiny_overrides(tiny_models, tmp_path / "cache")]) == 1
    rows = Manifest(str(out), Storage(StorageConfig()), DUB).current()
    errors = {row["relative_path"]: row["error"] for row in rows.values()}
    assert {row["status"] for row in rows.values()} == {"failed"} and len(errors) == 4
    assert (
        "would land in _foley/, the job's own folder under the output; rename or move the file"
        in errors["_foley/segments/0123abcd/0.parquet.mp4"]
    )
    assert "is how the job names its unfinished files" in errors["s/.x.partial-0123abcd.mp4"]
    assert all(error.startswith(str(library)) for error in errors.values())  # each message names its file
    assert all((library / relative).read_bytes() == b"someone's video" for relative in listed)
    assert all((out / relative).read_bytes() == b"made before this run" for relative in kept)
    assert not any((out / relative).exists() for relative in leftovers)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.mp4")) == [
        ".draft.partial-notes.mp4",
        "published.mp4",
    ]
    summary = capsys.readouterr().out
    assert "4 inputs under" in summary and "0 to process" in summary
    assert "removed 1 partial files" in summary and "removed 1 staged segments" in summary
    assert json.loads((out / "_foley/manifest" / "listing.json").read_text()) == {"left_out": ""}


def test_hidden_files_and_folders_are_never_inputs(tmp_path, bucket):
    """.git/x.mp4, macOS's ._clip.mp4, a/.cache/y.mp4: hidden, in a folder and in a bucket alike."""
    name, storage = bucket
    hidden, shown = [".git/x.mp4", "._clip.mp4", "a/.cache/y.mp4", "a/.z.mp4"], ["a/ok.mp4"]
    for relative in hidden + shown:
        (tmp_path / "lib" / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "lib" / relative).write_bytes(b"x")
        storage.s3.put_object(Bucket=name, Key=f"lib/{relative}", Body=b"x")
    assert [item.relative_path for item in listing(tmp_path / "lib").items] == shown
    assert [item.relative_path for item in storage.list_inputs(f"s3://{name}/lib/", EXTENSIONS).items] == shown


def test_a_video_listed_twice_fails_its_second_line_by_name(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    source = write_csv(
        tmp_path / "list.csv",
        [["uri", "relative_path", "prompt"], [video, "one.mp4", "rain"], [video, "two.mp4", "wind"]],
    )
    items = listing(source).items
    assert [(item.relative_path, item.problem) for item in items if not item.problem] == [("one.mp4", "")]
    [twice] = [item for item in items if item.problem]
    assert twice.uri == f"{source} line 3"
    assert f"it lists {video} again (first on line 2); list each video once" in twice.problem


def test_a_relative_path_is_judged_as_it_will_be_joined(tmp_path, tiny_config):
    """`./_foley/...` lands in the job's own folder once normalised (where the next run would delete it), and a
    `..` part fails its line, as docs/running.md says."""
    from conftest import plan_dub

    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    cells = ["./_foley/segments/a.mp4", "sub/../_foley/segments/b.mp4", "a/../c.mp4", "ok/./d.mp4"]
    copies = []
    for index, _ in enumerate(cells):
        copies.append(tmp_path / f"v{index}.mp4")
        copies[-1].write_bytes(bytes([index]))
    source = write_csv(tmp_path / "list.csv", [["uri", "relative_path"], *zip(copies, cells, strict=True)])
    planned = plan_dub(source, tmp_path / "out", tiny_config)
    assert [row["output_uri"] for row in planned] == [str(tmp_path / "out/ok/d.mp4")]
    current = Manifest(str(tmp_path / "out"), Storage(StorageConfig()), DUB).current()
    errors = [row["error"] for row in current.values()]
    assert len([e for e in errors if "would land in _foley/, the job's own folder" in e and "v0.mp4" in e]) == 1
    assert len([e for e in errors if "has a '..' part; give a plain path under the output root" in e]) == 2
