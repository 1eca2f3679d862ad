"""The two promises a library owner relies on: finished work is never redone, and an input is never written.

A result is identified by the settings that change it, the content of the models and of the input, and where the
output goes; never by where the code or the models sit on a machine. Every layout that could put an output on an
input is refused before any work starts, and the originals' bytes stay as they were.
"""

import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from conftest import OWN_RAY, ROOT, finish_rows, own_ray, plan_dub, run_dub, tiny_overrides
from foley.config import StorageConfig
from foley.media.render import render_test_video
from foley.models.identity import ModelIdentities
from foley.storage.store import Storage
from foley.testing.random_models import save_tiny_mapper


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_model_identity_follows_content_not_location(tmp_path):
    identities = ModelIdentities(Storage(StorageConfig(cache_dir=str(tmp_path / "cache"))))
    first = save_tiny_mapper(tmp_path / "here" / "mapper", clip_dim=8, clap_dim=8)
    moved = shutil.copytree(first, tmp_path / "elsewhere" / "renamed")
    assert identities.of(str(first)) == identities.of(str(moved))
    retrained = save_tiny_mapper(tmp_path / "retrained", clip_dim=8, clap_dim=8, seed=1)
    assert identities.of(str(retrained)) != identities.of(str(first))
    identities.save()
    again = ModelIdentities(Storage(StorageConfig(cache_dir=str(tmp_path / "cache"))))
    assert str((first / "mapper.safetensors").resolve()) in again.cache  # digests are kept per node


def refusal(input_arg, output_arg, cwd: Path, overrides: list[str]) -> subprocess.CompletedProcess:
    """The dub job's answer to a layout, before any work starts."""
    command = [
        sys.executable,
        "-m",
        "jobs.dub",
        "--input",
        str(input_arg),
        "--output",
        str(output_arg),
        "--config",
        str(ROOT / "configs/tiny.yaml"),
        *overrides,
    ]
    return subprocess.run(  # refused before any Ray starts
        command, cwd=cwd, capture_output=True, text=True, timeout=300, env=own_ray(os.environ)
    )


def test_layouts_that_could_write_an_input_are_refused_and_leave_the_originals_unchanged(tmp_path, tiny_models):
    library = tmp_path / "abs" / "in"
    originals = [render_test_video(library / name, 1.0, 64, 48, 10) for name in ("a.mp4", "b.mp4")]
    before = {path: digest(path) for path in originals}
    with (tmp_path / "list.csv").open("w", newline="") as file:
        csv.writer(file).writerows([["uri"], *[[str(path)] for path in originals]])
    (tmp_path / "link-to-in").symlink_to(library, target_is_directory=True)

    cases = {
        # The reported case: absolute URIs in a list, and a relative --output that resolves to their folder.
        "list, relative output on the inputs": (tmp_path / "list.csv", "in", library.parent),
        "output is the input folder": (library, library, tmp_path),
        "output is a link to the input folder": (tmp_path / "list.csv", tmp_path / "link-to-in", tmp_path),
        "output above the inputs": (tmp_path / "list.csv", tmp_path / "abs", tmp_path),
        "output inside the input folder": (library, library / "out", tmp_path),
    }
    for name, (input_arg, output_arg, cwd) in cases.items():
        result = refusal(input_arg, output_arg, cwd, tiny_overrides(tiny_models, tmp_path / "cache"))
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert "choose an output" in result.stderr, (name, result.stderr)
        assert str(originals[0]) in result.stderr or "inside --input" in result.stderr, (name, result.stderr)
    assert {path: digest(path) for path in originals} == before
    assert sorted(p.name for p in library.iterdir()) == ["a.mp4", "b.mp4"]  # nothing written beside them


def test_s3_layouts_that_could_write_an_input_are_refused(bucket, tmp_path, s3_endpoint, tiny_models):
    name, storage = bucket
    video = render_test_video(tmp_path / "a.mp4", 1.0, 64, 48, 10)
    storage.publish(video, f"s3://{name}/lib/a.mp4")
    etag = storage.s3.head_object(Bucket=name, Key="lib/a.mp4")["ETag"]
    for output in (f"s3://{name}/lib/", f"s3://{name}/"):
        overrides = [*tiny_overrides(tiny_models, tmp_path / "cache"), f"storage.endpoint_url={s3_endpoint}"]
        result = refusal(f"s3://{name}/lib/", output, tmp_path, overrides)
        assert result.returncode == 2 and "choose an output" in result.stderr, result.stderr
    assert storage.s3.head_object(Bucket=name, Key="lib/a.mp4")["ETag"] == etag


def test_two_inputs_that_map_to_one_output_both_fail_and_nothing_is_written(
    bucket, tmp_path, tiny_models, s3_endpoint, ray_cluster
):
    name, storage = bucket
    video = render_test_video(tmp_path / "a.mp4", 1.0, 64, 48, 10)
    storage.publish(video, f"s3://{name}/lib/x/a.mp4")
    storage.publish(video, f"s3://{name}/lib/x//a.mp4")  # a different key that normalises to the same path
    overrides = [*tiny_overrides(tiny_models, tmp_path / "cache"), f"storage.endpoint_url={s3_endpoint}"]
    result = run_dub(ray_cluster, f"s3://{name}/lib/", f"s3://{name}/out/", overrides)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "0 ok, 2 failed" in result.stdout, result.stdout
    manifest = pq.read_table(io.BytesIO(storage.read_bytes(f"s3://{name}/out/_foley/manifest/manifest.parquet")))
    errors = manifest.column("error").to_pylist()
    assert len(errors) == 2 and all("map to the same output" in error for error in errors), errors
    assert not [uri for uri in storage.list_prefix(f"s3://{name}/out/") if uri.endswith(".mp4")]


@pytest.mark.slow  # own job: a fresh checkout elsewhere, and an input replaced between runs
def test_moved_code_redoes_nothing_and_a_replaced_input_redoes_only_itself(tmp_path, tiny_models, ray_cluster):
    """The same command from a second checkout at another path (as `ray job submit --working-dir` unpacks one per
    cluster) finds everything done; replacing one input's content redoes exactly that input."""
    checkout = tmp_path / "second-checkout"
    shutil.copytree(
        ROOT,
        checkout,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "models", "samples", "out", "__pycache__", "*.egg-info", ".pytest_cache"
        ),
    )
    library = tmp_path / "library"
    for name, seconds in (("a.mp4", 2.0), ("b.mp4", 3.0)):
        render_test_video(library / name, seconds, 96, 64, 12)
    # The zero-shot mapper reads its label file from the checkout: its content counts, not its path.
    overrides = [*tiny_overrides(tiny_models, tmp_path / "cache"), "mapper.checkpoint=null"]

    first = run_dub(ray_cluster, library, tmp_path / "out", overrides)
    assert first.returncode == 0 and "0 already done, 2 to process" in first.stdout, first.stdout + first.stderr
    published = {path.name: path.stat().st_mtime_ns for path in (tmp_path / "out").glob("*.mp4")}

    # A Ray of its own for the second checkout: workers of the shared head would import this checkout's code.
    second = run_dub(OWN_RAY, library, tmp_path / "out", overrides, checkout=checkout)
    assert second.returncode == 0 and "2 already done, 0 to process" in second.stdout, second.stdout + second.stderr
    assert {path.name: path.stat().st_mtime_ns for path in (tmp_path / "out").glob("*.mp4")} == published

    render_test_video(library / "b.mp4", 3.5, 96, 64, 12)  # new content under the same name
    third = run_dub(OWN_RAY, library, tmp_path / "out", overrides, checkout=checkout)
    assert third.returncode == 0 and "1 already done, 1 to process" in third.stdout, third.stdout + third.stderr
    # Its log, not to a terminal, reads cleanly: the plan, a line per video, the summary, the report; on stderr
    # only Ray's start-up lines (token authentication, the local instance, an actor-restart notice).
    plan, video, done, report = third.stdout.splitlines()
    assert plan.startswith("2 inputs under") and video.startswith("[1/1] ok      b.mp4  (1 window)")
    assert done.startswith("done in") and report.startswith("report: ")
    assert len([line for line in third.stderr.splitlines() if line.strip()]) <= 3, third.stderr
    assert (tmp_path / "out" / "a.mp4").stat().st_mtime_ns == published["a.mp4"]
    assert (tmp_path / "out" / "b.mp4").stat().st_mtime_ns != published["b.mp4"]


@pytest.mark.slow  # own job: a model changed between its own runs
def test_a_mapper_retrained_into_the_same_folder_redoes_everything(tmp_path, tiny_models, ray_cluster):
    library = tmp_path / "library"
    render_test_video(library / "a.mp4", 2.0, 96, 64, 12)
    mapper = save_tiny_mapper(tmp_path / "models" / "mapper", seed=0)
    overrides = [*tiny_overrides(tiny_models, tmp_path / "cache"), f"mapper.checkpoint={mapper}"]
    first = run_dub(ray_cluster, library, tmp_path / "out", overrides)
    assert first.returncode == 0 and "1 to process" in first.stdout, first.stdout + first.stderr
    again = run_dub(ray_cluster, library, tmp_path / "out", overrides)
    assert "1 already done, 0 to process" in again.stdout, again.stdout + again.stderr
    save_tiny_mapper(mapper, seed=1)  # retrained, same place
    retrained = run_dub(ray_cluster, library, tmp_path / "out", overrides)
    assert retrained.returncode == 0 and "0 already done, 1 to process" in retrained.stdout, retrained.stdout


def test_another_input_root_redoes_at_the_new_paths_and_skipped_rows_are_final(tmp_path, tiny_config):
    """Resume is keyed on the whole result, output location included: listing the same files from another root
    writes them at their new paths instead of reporting them done. A skipped input is not fetched again."""
    import argparse

    from foley.pipeline.job import JobRun
    from foley.pipeline.kinds import DUB
    from foley.storage.uris import join

    library = tmp_path / "library" / "shows"
    for name in ("a.mp4", "b.mp4"):
        render_test_video(library / name, 1.0, 64, 48, 10)

    def plan(input_root) -> list[dict]:
        args = argparse.Namespace(input=str(input_root), output=str(tmp_path / "out"), force=False, max_failures=None)
        run = JobRun(args, tiny_config, DUB)
        rows = run.plan(outputs_for=lambda item: (join(args.output, item.relative_path),))
        run.lease.give_back()  # the plan alone is this run: the next one takes the output root
        return rows

    first = plan(library)
    assert [row["relative_path"] for row in first] == ["a.mp4", "b.mp4"]
    finish_rows(tmp_path / "out", tiny_config, first[:1])
    manifest = JobRun(argparse.Namespace(output=str(tmp_path / "out")), tiny_config, DUB).manifest
    manifest.record(first[1] | {"status": "skipped", "finished_at": 1.0, "outputs": "[]"})  # wrote nothing
    assert plan(library) == []  # ok and skipped are both final under the same result
    again = plan(library.parent)  # the same files, listed from one folder up
    assert [row["relative_path"] for row in again] == ["shows/a.mp4", "shows/b.mp4"]


def test_a_moved_library_redoes_nothing_and_the_manifest_follows_it(tmp_path, tiny_config):
    """Done work is found by result id (settings, model and input content, output location), not by the input's
    path: a library moved to another folder is all done, and its rows name the new paths."""
    from foley.pipeline.kinds import DUB
    from foley.pipeline.manifest import Manifest

    library = tmp_path / "library"
    for name in ("a.mp4", "sub/b.mp4"):
        render_test_video(library / name, 1.0, 64, 48, 10)
    finish_rows(tmp_path / "out", tiny_config, plan_dub(library, tmp_path / "out", tiny_config))

    (tmp_path / "archive").mkdir()
    moved = library.rename(tmp_path / "archive" / "library-2026")
    assert plan_dub(moved, tmp_path / "out", tiny_config) == []
    current = Manifest(str(tmp_path / "out"), Storage(tiny_config.storage), DUB).compact().to_pylist()
    assert sorted(row["input_uri"] for row in current) == [str(moved / "a.mp4"), str(moved / "sub/b.mp4")]
    assert {row["status"] for row in current} == {"ok"}


def test_one_output_folder_spelled_two_ways_is_one_location(tmp_path, tiny_config, monkeypatch):
    library = tmp_path / "library"
    render_test_video(library / "a.mp4", 1.0, 64, 48, 10)
    monkeypatch.chdir(tmp_path)
    first = plan_dub(library, "out", tiny_config)
    assert first[0]["output_uri"] == str(tmp_path / "out" / "a.mp4")
    finish_rows(tmp_path / "out", tiny_config, first)
    assert plan_dub(library, tmp_path / "out", tiny_config) == []
    assert plan_dub(library, "./sub/../out", tiny_config) == []


def test_a_reference_sound_is_identified_by_its_content_not_its_path(tmp_path, tiny_models, monkeypatch):
    """A relative conditions.reference_audio read from two working directories (two checkouts, two `ray job submit`
    working dirs) names two copies of one sound: one result. Other content under the same name is another."""
    from foley.config import load_config

    library = tmp_path / "library"
    render_test_video(library / "a.mp4", 1.0, 64, 48, 10)
    config = load_config(
        ROOT / "configs/tiny.yaml",
        [*tiny_overrides(tiny_models, tmp_path / "cache"), "conditions.reference_audio=sounds/rain.wav"],
    )
    ids = []
    for checkout, hz in (("one", 440), ("two", 440), ("three", 880)):
        (tmp_path / checkout / "sounds").mkdir(parents=True)
        sound = tmp_path / checkout / "sounds" / "rain.wav"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", f"sine=frequency={hz}:duration=1", str(sound)], check=True
        )
        os.utime(sound, ns=(10**18 + len(ids), 10**18 + len(ids)))  # copies made at different times
        monkeypatch.chdir(tmp_path / checkout)
        (row,) = plan_dub(library, tmp_path / "out", config)
        ids.append(row["result_id"])
    assert ids[0] == ids[1] != ids[2]


def test_a_list_line_added_from_another_folder_redoes_only_that_line(tmp_path, tiny_config):
    """With a relative_path column each line names its own output, so a line from elsewhere moves nothing else;
    without it the outputs mirror the folder common to all lines (README, Running it)."""
    shows, extras = tmp_path / "library" / "shows", tmp_path / "elsewhere"
    videos = [render_test_video(shows / name, 1.0, 64, 48, 10) for name in ("a.mp4", "b.mp4")]
    extra = render_test_video(extras / "c.mp4", 1.0, 64, 48, 10)

    def write(name: str, lines: list[tuple]) -> Path:
        (tmp_path / name).write_text("uri,relative_path\n" + "".join(f"{uri},{relative}\n" for uri, relative in lines))
        return tmp_path / name

    first = plan_dub(write("first.csv", [(v, f"shows/{v.name}") for v in videos]), tmp_path / "out", tiny_config)
    assert [row["output_uri"] for row in first] == [str(tmp_path / "out/shows" / v.name) for v in videos]
    finish_rows(tmp_path / "out", tiny_config, first)
    grown = write("grown.csv", [*((v, f"shows/{v.name}") for v in videos), (extra, "extras/c.mp4")])
    assert [row["relative_path"] for row in plan_dub(grown, tmp_path / "out", tiny_config)] == ["extras/c.mp4"]

    bad = write("bad.csv", [(videos[0], ""), (videos[1], "b.mov"), (extra, "../c.mp4")])
    assert plan_dub(bad, tmp_path / "out", tiny_config) == []
    from foley.pipeline.kinds import DUB
    from foley.pipeline.manifest import Manifest

    errors = sorted(
        row["error"]
        for row in Manifest(str(tmp_path / "out"), Storage(tiny_config.storage), DUB).current().values()
        if row["status"] == "failed"
    )
    assert len(errors) == 3, errors
    assert "bad.csv line 2: its 'relative_path' cell is empty" in errors[0]
    assert "bad.csv line 3: its relative_path 'b.mov' has another extension" in errors[1]
    assert "c.mp4" in errors[2] and ".." in errors[2], errors[2]


def test_an_input_without_a_result_at_the_end_fails_by_name_and_the_job_exits_non_zero(tmp_path, tiny_config, capsys):
    """Whatever lost it (a worker that died on every try, a result that never came back), an input this run
    streamed has a row of this run at the end: a failed one that says so, named on stderr, and the exit is 1."""
    from foley.pipeline.job import JobRun
    from foley.pipeline.kinds import DUB
    from foley.pipeline.outputs import dub_outputs
    from jobs.dub import parse_args

    library = tmp_path / "library"
    for name in ("a.mp4", "b.mp4"):
        render_test_video(library / name, 1.0, 64, 48, 10)
    finish_rows(tmp_path / "out", tiny_config, [plan_dub(library, tmp_path / "out", tiny_config)[1] | {"run_id": "x"}])
    args = parse_args(["--input", str(library), "--output", str(tmp_path / "out"), "--force"])
    run = JobRun(args, tiny_config, DUB)
    rows = run.plan(outputs_for=lambda item: dub_outputs(args.output, item, tiny_config))
    run.manifest.record(rows[0] | {"status": "ok"})  # a finished, b lost (its row of an earlier run does not count)
    assert run.finish() == 1
    final = {row["relative_path"]: row for row in run.manifest.current().values()}
    assert final["a.mp4"]["status"] == "ok" and final["b.mp4"]["status"] == "failed"
    assert final["b.mp4"]["run_id"] == run.id and "ended without a result for it" in final["b.mp4"]["error"]
    assert "1 input ended without a result: b.mp4" in capsys.readouterr().err
