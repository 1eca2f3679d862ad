"""The dub job end to end, as a user runs it: `python -m jobs.dub` on a folder, with a local Ray."""

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, plan_dub, run_dub, tiny_overrides
from foley.config import load_config
from foley.media.render import render_test_video
from media_checks import decoded_audio, plays, stream_duration, streams, video_packets_md5

# Different sizes, frame rates, durations and containers; the 30-s clip spans four 10.24-s windows.
CLIPS = (
    ("a.mp4", 4.0, 320, 240, 25),
    ("nested/b.mov", 6.5, 256, 144, 30),
    ("nested/deeper/long.mp4", 30.0, 320, 180, 24),
    ("c.mkv", 3.2, 160, 120, 15),
    ("D.WEBM", 5.0, 240, 160, 25),
)


@pytest.fixture(scope="module")
def dubbed(tmp_path_factory, tiny_models, ray_cluster):
    root = tmp_path_factory.mktemp("dub")
    for relative, seconds, width, height, fps in CLIPS:
        render_test_video(root / "in" / relative, seconds, width, height, fps)
    (root / "in" / "readme.txt").write_text("not a video, not listed")
    overrides = tiny_overrides(tiny_models, root / "cache")
    result = run_dub(ray_cluster, root / "in", root / "out", overrides)
    return root, overrides, result


@pytest.mark.slow
def test_every_video_gets_one_matching_audio_track(dubbed):
    root, _, result = dubbed
    assert result.returncode == 0, result.stdout + result.stderr
    assert "5 ok, 0 failed, 0 skipped" in result.stdout
    progress = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(progress) == 5 and all("videos/min" in line for line in progress)
    assert all(", ETA " in line for line in progress[:-1]) and "ETA" not in progress[-1]  # rate, and time left
    for relative, _seconds, *_ in CLIPS:
        source, output = root / "in" / relative, root / "out" / relative
        assert plays(output), relative
        assert streams(output) == ["video", "audio"], relative
        assert video_packets_md5(output) == video_packets_md5(source), relative
        assert abs(stream_duration(output, "a:0") - stream_duration(output, "v:0")) < 0.1, relative
    assert not [p for p in (root / "out").rglob("*") if ".partial-" in p.name]


@pytest.mark.slow
def test_manifest_has_one_ok_row_per_input(dubbed):
    root, _, _ = dubbed
    table = pq.read_table(root / "out" / "_foley/manifest" / "manifest.parquet").to_pylist()
    assert sorted(row["relative_path"] for row in table) == sorted(relative for relative, *_ in CLIPS)
    assert {row["status"] for row in table} == {"ok"}
    long = next(row for row in table if row["relative_path"] == "nested/deeper/long.mp4")
    assert long["n_windows"] == 4 and long["duration_s"] == pytest.approx(30.0)
    assert all(row["config_hash"] and row["seconds_synthesize"] > 0 and row["finished_at"] for row in table)
    assert all(row["decoder"].startswith("torchcodec ") and ", FFmpeg " in row["decoder"] for row in table)


@pytest.mark.slow
def test_a_long_video_gets_one_continuous_track(dubbed):
    root, _, _ = dubbed
    audio = decoded_audio(root / "out" / "nested/deeper/long.mp4")
    assert len(audio) == pytest.approx(30 * 16000, abs=1600)
    block = 320  # 20 ms
    rms = np.sqrt(np.mean(audio[: len(audio) // block * block].reshape(-1, block) ** 2, axis=1))
    assert rms.min() > 0.05 * np.median(rms), "a silent gap in the track"
    hop = 10.24 - 0.64
    steps = np.abs(np.diff(audio))
    typical = np.percentile(steps, 99.9)
    for border_s in [hop * k for k in range(1, 4)] + [hop * k + 0.64 for k in range(1, 4)]:
        around = steps[int((border_s - 0.01) * 16000) : int((border_s + 0.01) * 16000)]
        assert around.max() <= 1.5 * typical, f"a click at {border_s:.2f} s"


def _outputs(root) -> dict[str, tuple[int, int]]:
    """Each output's (inode, mtime): both stay put unless the file is written again."""
    stats = {relative: (root / "out" / relative).stat() for relative, *_ in CLIPS}
    return {relative: (stat.st_ino, stat.st_mtime_ns) for relative, stat in stats.items()}


def _finished_at(root) -> dict:
    rows = pq.read_table(root / "out" / "_foley/manifest" / "manifest.parquet").to_pylist()
    return {row["relative_path"]: row["finished_at"] for row in rows}


@pytest.mark.slow  # two runs on the shared library's output: the re-run that does nothing, and --force
def test_a_rerun_skips_finished_inputs_and_force_redoes_them(dubbed, ray_cluster):
    root, overrides, _ = dubbed
    before, finished = _outputs(root), _finished_at(root)
    again = run_dub(ray_cluster, root / "in", root / "out", overrides)
    assert again.returncode == 0 and "5 already done, 0 to process" in again.stdout
    assert "0 ok, 0 failed, 0 skipped, 5 already done" in again.stdout, again.stdout
    assert _outputs(root) == before and _finished_at(root) == finished  # nothing written again

    # Another config hash makes every output stale: its plan takes all five (a run does them as --force does below).
    changed = load_config(ROOT / "configs/tiny.yaml", [*overrides, "audioldm.steps=2"])
    stale = plan_dub(root / "in", root / "out", changed)
    assert sorted(row["relative_path"] for row in stale) == sorted(relative for relative, *_ in CLIPS)

    # --force with the same config: every input is redone although the manifest has it as ok.
    forced = run_dub(ray_cluster, root / "in", root / "out", overrides, "--force", "--max-failures", "0")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "0 already done, 5 to process" in forced.stdout
    assert "5 ok, 0 failed, 0 skipped, 0 already done" in forced.stdout
    redone, finished_forced = _outputs(root), _finished_at(root)
    assert sorted(finished_forced) == sorted(relative for relative, *_ in CLIPS)  # still one row per input
    for relative, *_ in CLIPS:
        assert redone[relative] != before[relative], f"{relative} was not written again"
        assert finished_forced[relative] > finished[relative], relative
        assert plays(root / "out" / relative), relative
    rows = pq.read_table(root / "out" / "_foley/manifest" / "manifest.parquet").to_pylist()
    assert (
        len(rows) == 5 and {row["status"] for row in rows} == {"ok"} and len({row["config_hash"] for row in rows}) == 1
    )
    assert not [p for p in (root / "out").rglob("*") if ".partial-" in p.name]


def test_bad_setup_stops_before_any_work(tmp_path, capsys, tiny_models):
    from jobs.dub import main

    (tmp_path / "in").mkdir()
    assert (
        main(
            [
                "--input",
                str(tmp_path / "in"),
                "--output",
                str(tmp_path / "out"),
                "--config",
                str(ROOT / "configs/tiny.yaml"),
                f"mapper.checkpoint={tmp_path / 'nope'}",
            ]
        )
        == 2
    )
    assert "mapper.checkpoint" in capsys.readouterr().err
    assert (
        main(
            [
                "--input",
                str(tmp_path),
                "--output",
                str(tmp_path / "out"),
                "--config",
                str(ROOT / "configs/tiny.yaml"),
                *tiny_overrides(tiny_models, tmp_path / "cache"),
            ]
        )
        == 2
    )
    assert "is inside --input" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
