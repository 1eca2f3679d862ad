"""One bad file never stops a library: each bad input becomes a failed row naming it and the reason."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, SLOW_SYNTHESIS, dub_command, one_window, own_ray, run_dub, start_dub, tiny_overrides
from foley.media.render import render_test_video
from libraries import INPUT_LIMITS, MIXED_OK, MIXED_SKIPPED, make_bad_inputs
from media_checks import decoded_audio, plays, streams, video_packets_md5
from processes import alive, cmdline, kill_session, kill_whole_session, session_processes, wait_for


@pytest.mark.slow
def test_bad_inputs_become_failed_rows_and_the_rest_completes(mixed_run):
    root, result, expected_errors = mixed_run.root, mixed_run, mixed_run.facts["errors"]
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{len(MIXED_OK)} ok, {len(expected_errors)} failed, {len(MIXED_SKIPPED)} skipped" in result.stdout
    rows = {
        row["relative_path"]: row for row in pq.read_table(root / "out/_foley/manifest/manifest.parquet").to_pylist()
    }
    assert len(rows) == len(MIXED_OK) + len(expected_errors) + len(MIXED_SKIPPED)
    for name, words in expected_errors.items():
        assert rows[name]["status"] == "failed", name
        assert str(root / "in" / name) in rows[name]["error"] and words in rows[name]["error"], rows[name]["error"]
        assert not (root / "out" / name).exists() and rows[name]["outputs"] == []  # only files written
    for name in MIXED_SKIPPED:
        assert rows[name]["status"] == "skipped" and "already has an audio track" in rows[name]["error"]
        assert rows[name]["outputs"] == []
    for name in MIXED_OK:
        sound = (root / "out" / name).with_suffix(".flac")  # output.mode=both: the sound file beside the video
        assert rows[name]["status"] == "ok" and plays(root / "out" / name) and sound.is_file()
        assert rows[name]["outputs"] == [str(root / "out" / name), str(sound)]
    assert video_packets_md5(root / "out" / "av1.mkv") == video_packets_md5(root / "in" / "av1.mkv")
    assert not list(ROOT.glob("PWNED*")) and not list(root.rglob("PWNED*"))


@pytest.mark.slow  # own job: a setting under test: --max-failures stops its run
def test_max_failures_stops_the_job_early(tmp_path, tiny_models, ray_cluster):
    make_bad_inputs(tmp_path / "in")
    result = run_dub(
        ray_cluster,
        tmp_path / "in",
        tmp_path / "out",
        [*tiny_overrides(tiny_models, tmp_path / "cache"), *INPUT_LIMITS],
        "--max-failures",
        "1",
    )
    assert result.returncode == 1
    assert "stopped early: more than --max-failures=1" in result.stderr


def test_a_ray_that_cannot_start_is_exit_2_with_the_reason_not_a_traceback(tmp_path, tiny_models):
    """On a loaded machine a local Ray may fail to start; here it fails for a real reason of the same kind: a
    temporary folder too deep for the Unix sockets Ray makes in it."""
    render_test_video(tmp_path / "in" / "a.mp4", 2.0, 160, 96, 12)
    too_deep = tmp_path / ("t" * 120)
    too_deep.mkdir()
    env = os.environ | {"PYTHONPATH": str(ROOT), "RAY_ADDRESS": "", "RAY_TMPDIR": str(too_deep)}
    command = dub_command(tmp_path / "in", tmp_path / "out", tiny_overrides(tiny_models, tmp_path / "cache"))
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "error: could not start a local Ray (OSError: " in result.stderr
    assert "AF_UNIX path length" in result.stderr and "Traceback" not in result.stderr


WINDOW_SAMPLES = 163840  # one 10.24-s window at AudioLDM's 16 kHz


def mux_one_window(config, video: Path, output: Path, waveform: np.ndarray, has_audio: bool) -> dict:
    """Run the real Mux stage on a 4-s video whose one window AudioLDM made as `waveform`; the row it returns."""
    from foley.pipeline.kinds import DUB
    from foley.pipeline.rows import batch_of, new_row, rows_of
    from foley.storage.inputs import InputItem
    from workers.mux import Mux

    row = new_row(InputItem(str(video), output.name), str(output), config, DUB)
    row.update(
        duration_s=4.0,
        n_windows=1,
        windows=one_window(4.0),
        sample_rate=16000,
        has_audio=has_audio,
        local_path=str(video),
        waveforms=np.asarray(waveform, dtype=np.float32)[None],
    )
    [result] = rows_of(Mux(config, str(output.parent))(batch_of([row])))
    return result


@pytest.mark.parametrize("policy", ["replace", "mix"])
def test_inputs_with_sound_can_be_replaced_or_mixed_under(tmp_path, tiny_config, policy):
    config = tiny_config.model_copy(
        update={"input": tiny_config.input.model_copy(update={"existing_audio": policy, "mix_gain_db": -6.0})}
    )
    video = render_test_video(tmp_path / "in.mp4", 4.0, 160, 120, 25, with_audio=True)  # a 440 Hz tone
    output = tmp_path / "out" / "in.mp4"
    low_hum = 0.5 * np.sin(2 * np.pi * 100 * np.arange(WINDOW_SAMPLES) / 16000)
    result = mux_one_window(config, video, output, low_hum, has_audio=True)
    assert result["status"] == "ok", result["error"]
    assert streams(output) == ["video", "audio"] and video_packets_md5(output) == video_packets_md5(video)
    spectrum = np.abs(np.fft.rfft(decoded_audio(output)[:16000]))
    hum, tone = spectrum[100], spectrum[440]
    assert hum > 100 * np.median(spectrum)
    assert (tone > 0.05 * hum) == (policy == "mix")  # the original's 440 Hz tone is kept only by mix


@pytest.mark.parametrize(
    ("name", "waveform", "words"),
    [
        ("nan", np.full(WINDOW_SAMPLES, np.nan), "not finite numbers"),
        ("inf", np.r_[np.zeros(1000), np.inf, np.zeros(WINDOW_SAMPLES - 1001)], "not finite numbers"),
        ("dc", 0.3 + 0.01 * np.sin(np.arange(WINDOW_SAMPLES)), "constant offset (a DC line, not sound)"),
    ],
)
def test_a_track_that_is_no_sound_fails_its_video_and_is_never_published(tmp_path, tiny_config, name, waveform, words):
    """What a condition weight of 1e39 or a broken model makes: the video fails, named, and nothing is written."""
    video = render_test_video(tmp_path / f"{name}.mp4", 4.0, 160, 120, 25)
    output = tmp_path / "out" / f"{name}.mp4"
    result = mux_one_window(tiny_config, video, output, waveform, has_audio=False)
    assert result["status"] == "failed" and str(video) in result["error"] and words in result["error"]
    assert "nothing was written" in result["error"] and not output.exists()


def test_real_sound_passes_the_track_check():
    from foley.media.stitch import track_problem

    rng = np.random.default_rng(0)
    assert track_problem(rng.standard_normal(16000).astype(np.float32), 0.5) == ""
    assert track_problem(np.zeros(16000, np.float32), 0.5) == ""  # silence is quiet, not broken
    assert track_problem((0.2 + np.sin(np.arange(16000) / 5)).astype(np.float32), 0.5) == ""  # an offset under sound


def _journal(output: Path) -> list[Path]:
    """The journalled rows: whole files only, not the hidden staging file of a row being written."""
    return sorted(
        path for path in (output / "_foley/manifest" / "rows").glob("*.parquet") if not path.name.startswith(".")
    )


def _recorded_rows(output: Path) -> dict[str, dict]:
    """Newest row per input from the journal and the compacted manifest, read as the next run will read them."""
    compacted = output / "_foley/manifest" / "manifest.parquet"
    records = pq.read_table(compacted).to_pylist() if compacted.exists() else []
    records += [record for path in _journal(output) for record in pq.read_table(path).to_pylist()]
    latest: dict[str, dict] = {}
    for record in records:
        known = latest.get(record["relative_path"])
        if known is None or record["finished_at"] >= known["finished_at"]:
            latest[record["relative_path"]] = record
    return latest


def _file_state(path: Path) -> tuple[int, int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


@pytest.mark.slow  # own job: a kill: the driver of its own run is killed and resumed
def test_a_killed_driver_resumes_without_redoing_finished_work(tmp_path, tiny_models, ray_cluster):
    names = [f"v{index}.mp4" for index in range(8)]
    for name in names:
        render_test_video(tmp_path / "in" / name, 12.0, 160, 120, 25)
    # Batches of three rows: the kill finds some rows in the driver's batches and some only in their own files.
    overrides = [*tiny_overrides(tiny_models, tmp_path / "cache"), *SLOW_SYNTHESIS, "journal.batch_rows=3"]
    out = tmp_path / "out"
    job = start_dub(tmp_path / "in", out, overrides, tmp_path / "first-run.log")
    try:

        def some_row_recorded():
            if _journal(out) or (out / "_foley/manifest" / "manifest.parquet").exists():
                return True
            if job.poll() is not None:
                raise AssertionError(
                    f"the job exited ({job.returncode}) before finishing a video:\n"
                    + (tmp_path / "first-run.log").read_text()[-3000:]
                )
            return False

        wait_for(some_row_recorded, 300, "the first journalled video")
    finally:
        # The driver, its local Ray (GCS, raylet) and every worker at once: nothing gets to clean up or compact.
        kill_whole_session(job.pid)
        job.wait()
    assert not [process for process in session_processes(job.pid) if alive(process)]

    # What the killed run left: rows journalled ok, whose outputs must survive the rerun untouched. (A video whose
    # ffmpeg died with the session may be journalled as failed: the rerun redoes it like any failure.)
    before = _recorded_rows(out)
    recorded_ok = {name: row for name, row in before.items() if row["status"] == "ok"}
    assert recorded_ok, "a row was journalled before the kill, so at least one video was finished"
    finished = {name: _file_state(out / name) for name in recorded_ok}
    done = len(recorded_ok)

    result = run_dub(ray_cluster, tmp_path / "in", out, overrides)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "on this host has ended" in result.stderr  # the killed run's lease, taken over at once
    assert f"8 inputs under {tmp_path / 'in'}: {done} already done, {8 - done} to process" in result.stdout
    assert f"{8 - done} ok, 0 failed, 0 skipped, {done} already done" in result.stdout, result.stdout
    rows = pq.read_table(out / "_foley/manifest/manifest.parquet").to_pylist()
    assert sorted(row["relative_path"] for row in rows) == names  # exactly one row per input
    assert {row["status"] for row in rows} == {"ok"} and not _journal(out)
    final = {row["relative_path"]: row for row in rows}
    for name, state in finished.items():  # finished and recorded before the kill: never written again
        assert _file_state(out / name) == state, f"{name} was redone"
        assert final[name]["finished_at"] == recorded_ok[name]["finished_at"], f"{name}'s row was rewritten"
        assert final[name]["config_hash"] == recorded_ok[name]["config_hash"]
    for name in names:
        assert plays(out / name), name
        assert video_packets_md5(out / name) == video_packets_md5(tmp_path / "in" / name), name
    assert not [p for p in out.rglob("*") if ".partial-" in p.name]


@pytest.mark.slow  # own job: a kill: an actor of its own run, on its own local Ray
def test_a_killed_actor_is_restarted_and_every_output_is_right(tmp_path, tiny_models):
    for index in range(6):
        render_test_video(tmp_path / "in" / f"v{index}.mp4", 20.0, 160, 120, 25)
    job = subprocess.Popen(
        dub_command(tmp_path / "in", tmp_path / "out", [*tiny_overrides(tiny_models, tmp_path / "c"), *SLOW_SYNTHESIS]),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=own_ray(os.environ),  # a Ray of its own: the actor to kill is found in the job's session
    )
    try:

        def synthesize_actor():
            return next(
                (p for p in session_processes(job.pid) if "MapBatches(Synthesize)" in " ".join(cmdline(p))), None
            )

        wait_for(lambda: _journal(tmp_path / "out"), 300, "the first finished video")
        victim = wait_for(synthesize_actor, 60, "the Synthesize actor")
        victim.kill()
        assert len(_recorded_rows(tmp_path / "out")) < 6, "the run ended before the actor could be killed"
        output, _ = job.communicate(timeout=600)
    finally:
        kill_session(job.pid)
    assert job.returncode == 0, output
    assert "6 ok, 0 failed" in output
    for index in range(6):
        source, result = tmp_path / "in" / f"v{index}.mp4", tmp_path / "out" / f"v{index}.mp4"
        assert plays(result) and video_packets_md5(result) == video_packets_md5(source)
