"""Windows that follow the film: cuts found and respected, long videos spread over the actors in segments, a killed
job resuming inside a long video."""

from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import SLOW_SYNTHESIS, row_for, run, run_dub, start_dub, tiny_overrides
from foley.media.cuts import detect_cuts
from foley.media.render import render_film
from foley.pipeline.rows import row_windows
from media_checks import decoded_audio, plays
from processes import cmdline, kill_whole_session, session_processes, wait_for

FPS = 25
THREE_SHOTS = [("testsrc2", 3.0), ("smptebars", 4.0), ("mandelbrot", 3.0)]  # cuts at 3 s and 7 s
# 60 s in three 20-s shots: 9 windows of the tiny preset, 5 segments of 2.
LONG_FILM = [("testsrc2", 20.0), ("smptebars", 20.0), ("mandelbrot", 20.0)]
# Lossless output, and two windows per forward pass whether a video is split or not: the same batches, so the
# split track must equal the unsplit one exactly. (Other batch compositions change the float rounding inside
# AudioLDM, which the tiny random models amplify; see docs/performance.md.)
SEGMENTED = [
    "window.segment_windows=2",
    "output.audio_codecs={.mkv: flac}",
    "stages.map.max_forward_batch=2",
    "stages.synthesize.max_forward_batch=2",
]


def cut_times(shots) -> list[float]:
    return list(np.cumsum([seconds for _, seconds in shots])[:-1])


def test_cuts_are_found_within_a_frame(tmp_path):
    film = render_film(tmp_path / "film.mp4", THREE_SHOTS, 320, 180, FPS)
    found = detect_cuts(film, threshold=10.0, width=160)
    assert len(found) == 2
    assert np.allclose(found, cut_times(THREE_SHOTS), atol=1 / FPS)


def test_window_borders_fall_on_the_cuts_and_the_conditions_change_there(tmp_path, tiny_config, decode_embed):
    film = render_film(tmp_path / "film.mp4", THREE_SHOTS, 320, 180, FPS)
    [row] = run(decode_embed, [row_for(film, tiny_config)])
    windows = row_windows(row)
    assert [window.shot for window in windows] == [0, 1, 2]
    borders = [window.start_s for window in windows[1:]]
    assert np.allclose(borders, cut_times(THREE_SHOTS), atol=1 / FPS)
    assert all(before.end_s == after.start_s for before, after in zip(windows, windows[1:], strict=False))
    embeddings = row["clip_embeddings"]
    cosines = (embeddings[:-1] * embeddings[1:]).sum(axis=1)
    assert cosines.max() < 0.999  # each window sees only its own shot

    from workers.decode_embed import DecodeEmbed

    one_grid = tiny_config.with_overrides("window.cuts=off")
    [row] = run(DecodeEmbed(one_grid), [row_for(film, one_grid)])
    assert [(w.start_s, w.end_s) for w in row_windows(row)] == [(0.0, 10.0)]


def synthesized_windows(manifest_row: dict) -> dict[str, int]:
    """Windows made per synthesis actor, from the manifest's segments column."""
    counts: dict[str, int] = {}
    for segment in manifest_row["segments"]:
        counts[segment["synthesize_worker"]] = counts.get(segment["synthesize_worker"], 0) + segment["windows"]
    return counts


@pytest.fixture(scope="module")
def unsplit_film(tmp_path_factory, tiny_models, ray_cluster) -> tuple[Path, np.ndarray, str]:
    """LONG_FILM's folder, its track dubbed in one piece (what a split or resumed track must equal exactly), and the
    config hash of that run."""
    root = tmp_path_factory.mktemp("unsplit")
    render_film(root / "in" / "film.mkv", LONG_FILM, 160, 96, 10)
    overrides = [
        *tiny_overrides(tiny_models, root / "cache"),
        *SLOW_SYNTHESIS,
        *SEGMENTED,
        "window.segment_windows=100",
    ]
    whole = run_dub(ray_cluster, root / "in", root / "whole", overrides)
    assert whole.returncode == 0, whole.stdout + whole.stderr
    [unsplit] = pq.read_table(root / "whole/_foley/manifest/manifest.parquet").to_pylist()
    assert unsplit["segments"] is None
    return root / "in", decoded_audio(root / "whole/film.mkv"), unsplit["config_hash"]


@pytest.mark.slow  # own job: a setting under test: segments over two actors
def test_a_long_video_spreads_over_two_actors_and_sounds_as_unsplit(tmp_path, tiny_models, ray_cluster, unsplit_film):
    films, unsplit, unsplit_hash = unsplit_film
    # Both actors start together; at 1.5 s a window, neither makes all 9 windows before the other one is up. How the
    # segments split between them depends on when each actor came up on a loaded machine; that both made some does not.
    overrides = [*tiny_overrides(tiny_models, tmp_path / "cache"), *SLOW_SYNTHESIS]
    two_actors = ["stages.synthesize.concurrency=2", "stages.synthesize.batch_size=1"]
    split = run_dub(ray_cluster, films, tmp_path / "split", [*overrides, *SEGMENTED, *two_actors])
    assert split.returncode == 0, split.stdout + split.stderr
    [row] = pq.read_table(tmp_path / "split/_foley/manifest/manifest.parquet").to_pylist()
    assert row["n_windows"] == 9 and len(row["segments"]) == 5
    counts = synthesized_windows(row)
    assert len(counts) == 2 and sum(counts.values()) == 9, counts
    assert not (tmp_path / "split" / "_foley/segments").exists() or not any(
        (tmp_path / "split" / "_foley/segments").iterdir()
    )
    assert row["config_hash"] == unsplit_hash  # window.segment_windows changes how the work is cut, not the result
    a = decoded_audio(tmp_path / "split/film.mkv")
    assert len(a) == len(unsplit) and np.array_equal(a, unsplit), float(np.max(np.abs(a - unsplit)))


@pytest.mark.slow  # own job: a kill, then a resume with other segments
def test_a_job_resumed_with_other_segments_takes_only_staged_windows_that_match_and_sounds_as_unsplit(
    tmp_path, tiny_models, ray_cluster, unsplit_film
):
    """Killed while cut into segments of 2 windows, resumed with segments of 4: of the staged segments, only one
    that holds exactly a segment's windows of the new cut (windows 8-9) may be taken; the rest is made again, and the
    track equals the unsplit one bit for bit. (Segments of 4 keep the forward passes of 2 windows of SEGMENTED.)"""
    films, unsplit, _ = unsplit_film
    overrides = [*tiny_overrides(tiny_models, tmp_path / "cache"), *SEGMENTED, *SLOW_SYNTHESIS]
    out = tmp_path / "out"

    def staged() -> list[str]:
        return sorted(path.stem for path in (out / "_foley/segments").rglob("windows-*.npz"))

    job = start_dub(films, out, overrides, tmp_path / "first-run.log")
    try:
        wait_for(lambda: len(staged()) >= 2 or job.poll() is not None, 400, "2 of 5 segments staged")
    finally:
        kill_whole_session(job.pid)
        job.wait()
    kept = staged()
    assert 2 <= len(kept) < 5, (tmp_path / "first-run.log").read_text()[-3000:]

    result = run_dub(ray_cluster, films, out, [*overrides, "window.segment_windows=4"])
    assert result.returncode == 0, result.stdout + result.stderr
    [row] = pq.read_table(out / "_foley/manifest/manifest.parquet").to_pylist()
    made = {(segment["first_window"], segment["windows"]): segment["run_id"] for segment in row["segments"]}
    assert sorted(made) == [(0, 4), (4, 4), (8, 1)]
    assert made[(0, 4)] == made[(4, 4)] == row["run_id"]  # no staged segment of 2 windows stands in for them
    assert (made[(8, 1)] != row["run_id"]) == ("windows-000008-to-000009" in kept), (made, kept)
    a = decoded_audio(out / "film.mkv")
    assert len(a) == len(unsplit) and np.array_equal(a, unsplit), float(np.max(np.abs(a - unsplit)))
    assert not staged()


@pytest.mark.slow  # own job: a kill inside a long video, then its resume
def test_a_killed_job_resumes_inside_a_long_video(tmp_path, tiny_models, ray_cluster):
    render_film(tmp_path / "in" / "film.mkv", LONG_FILM, 160, 96, 10)
    overrides = [*tiny_overrides(tiny_models, tmp_path / "cache"), *SEGMENTED, *SLOW_SYNTHESIS]
    out = tmp_path / "out"

    def staged() -> list[Path]:
        return sorted((out / "_foley/segments").rglob("windows-*.npz"))

    job = start_dub(tmp_path / "in", out, overrides, tmp_path / "first-run.log")
    try:
        wait_for(lambda: len(staged()) >= 3 or job.poll() is not None, 400, "3 of 5 segments staged")
    finally:
        kill_whole_session(job.pid)
        job.wait()
    kept = len(staged())
    assert 3 <= kept < 5, (tmp_path / "first-run.log").read_text()[-3000:]

    result = run_dub(ray_cluster, tmp_path / "in", out, overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    [row] = pq.read_table(out / "_foley/manifest/manifest.parquet").to_pylist()
    assert row["status"] == "ok" and plays(out / "film.mkv")
    made_by = Counter(segment["run_id"] for segment in row["segments"])
    assert sorted(made_by.values()) == [5 - kept, kept], made_by  # the re-run made only the missing segments
    assert not staged()


@pytest.mark.slow  # own job: a kill of the synthesis actor, on a local Ray of its own
def test_a_batch_whose_worker_dies_on_every_try_fails_its_video_by_name(tmp_path, tiny_models):
    """stages.synthesize.max_retries=0: the synthesis actor killed in the middle of a segment (as a decoder crash or
    the out-of-memory killer would) is not retried without end: the retried batch fails the video by name, with
    the knob to raise. The job goes on, and the exit code is 1. Its staged segments stay for the re-run."""
    render_film(tmp_path / "in" / "film.mkv", LONG_FILM, 160, 96, 10)
    overrides = [*tiny_overrides(tiny_models, tmp_path / "cache"), *SEGMENTED, *SLOW_SYNTHESIS]
    out, log = tmp_path / "out", tmp_path / "run.log"
    job = start_dub(tmp_path / "in", out, [*overrides, "stages.synthesize.max_retries=0"], log)
    try:
        # The first segment staged: the synthesis actor is at work on the next ones (1.5 s a window).
        wait_for(lambda: any((out / "_foley/segments").rglob("windows-*.npz")) or job.poll() is not None, 400, "")
        actor = next(p for p in session_processes(job.pid) if "MapBatches(Synthesize)" in " ".join(cmdline(p)))
        actor.kill()
        job.wait(timeout=600)
    finally:
        kill_whole_session(job.pid)
    output = log.read_text()
    assert job.returncode == 1, output[-3000:]
    assert "failed  film.mkv  (synthesize: " in output, output[-3000:]
    [row] = pq.read_table(out / "_foley/manifest/manifest.parquet").to_pylist()
    assert row["status"] == "failed" and "its worker process died each of the 1 times" in row["error"], row["error"]
    assert "stages.synthesize.max_retries" in row["error"], row["error"]
    assert not (out / "film.mkv").exists() and any((out / "_foley/segments").rglob("windows-*.npz"))


def test_staged_segments_are_reused_by_their_windows_not_their_index(tmp_path):
    """A re-run cut into segments of another size (window.segment_windows is not in the result id) takes only the
    staged segments that hold exactly its own windows: 10 windows in 2 of 6 are never read as 2 of 5."""
    from foley.config import StorageConfig
    from foley.pipeline.segments import SegmentStaging, segment_ranges
    from foley.storage.store import Storage

    storage, root = Storage(StorageConfig()), str(tmp_path / "_foley/segments/result")

    def staging(size: int) -> SegmentStaging:
        return SegmentStaging(storage, root, segment_ranges(10, size))

    by_six = staging(6)
    for index, (first, end) in enumerate(by_six.ranges):
        by_six.stage(index, np.full((end - first, 4), first, dtype=np.float32), {"first_window": first})
    assert by_six.staged() == {0, 1} and staging(5).staged() == set() and staging(3).staged() == set()
    by_five = staging(5)
    by_five.stage(1, np.zeros((5, 4), dtype=np.float32), {"first_window": 5})
    assert by_five.staged() == {1} and staging(6).staged() == {0, 1}
    waveforms, info = staging(6).load(1)
    assert info == {"first_window": 6} and waveforms.shape == (4, 4) and (waveforms == 6).all()
