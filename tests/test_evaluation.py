"""jobs.evaluate: CLAP scores, FD_CLAP against reference audio, the seam score and the PANNs numbers; jobs.compare."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from conftest import run_dub, tiny_overrides
from foley.config import EvaluationConfig
from foley.media.render import render_test_video
from foley.media.seams import seam_score
from foley.media.stitch import TrackBuilder, TrackLayout
from foley.media.windows import plan_windows
from jobs.compare import main as compare
from jobs.evaluate import main as evaluate

RATE = 16000


def tone_windows(seconds: float) -> tuple[np.ndarray, TrackLayout]:
    """Windows of one tone, each at its own phase, laid out as the Mux stage lays out a shot of `seconds`."""
    windows = plan_windows([0.0, seconds], 10.24, 0.64, 0.05)
    layout = TrackLayout.of(windows, seconds, 10.24, 0.05, RATE)
    rng = np.random.default_rng(0)
    time = np.arange(layout.length) / RATE
    waves = [0.5 * np.sin(2 * np.pi * 220 * time + rng.uniform(0, 2 * np.pi)) for _ in windows]
    return (np.stack(waves) + 0.01 * rng.standard_normal((len(windows), layout.length))).astype(np.float32), layout


def test_a_clicky_stitch_raises_the_seam_score():
    settings = EvaluationConfig()
    waves, layout = tone_windows(30.0)
    builder = TrackBuilder(layout)  # equal-power crossfades over the overlaps, as the Mux stage stitches
    builder.add(0, waves)
    smooth = seam_score(builder.result(), layout, settings.seam_frame, settings.seam_hop)
    assert 0.9 < smooth < 1.2  # the borders cannot be told from the rest

    # The same windows butted together in the middle of each overlap, no crossfade: the phase jumps, a click.
    switches = [0, *((sum(layout.fade(i)) // 2) for i in range(layout.count - 1)), layout.total]
    clicky = np.concatenate(
        [
            wave[first - start : end - start]
            for wave, start, first, end in zip(waves, layout.starts, switches, switches[1:], strict=False)
        ]
    )
    assert seam_score(clicky, layout, settings.seam_frame, settings.seam_hop) > 3 * smooth


def strict_json(text: str) -> dict:
    """JSON as the standard has it: a bare NaN or Infinity is an error, not a number."""
    return json.loads(text, parse_constant=lambda word: pytest.fail(f"{word} is not JSON"))


@pytest.mark.slow  # own job: a setting under test: inputs with sound replaced, for references
def test_fd_clap_is_zero_against_itself_and_positive_against_other_audio(tmp_path, tiny_models, ray_joined, capsys):
    import ray

    library = tmp_path / "library"
    for name, seconds in (("long.mp4", 15.0), ("short.mp4", 4.0), ("third.mp4", 6.0)):
        render_test_video(library / name, seconds, 160, 96, 24, with_audio=True)
    render_test_video(library / "silent.mp4", 4.0, 160, 96, 24)
    overrides = tiny_overrides(tiny_models, tmp_path / "cache")
    out = tmp_path / "out"
    result = run_dub(ray_joined, library, out, [*overrides, "input.existing_audio=replace", "window.cuts=off"])
    assert result.returncode == 0, result.stdout + result.stderr
    config = ["--config", "configs/tiny.yaml", *overrides]
    summary_file = out / "_foley/evaluation" / "summary.json"

    # Checked before Ray starts, exit 2 with what to fix: a reference folder with no sound, a missing CLAP.
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "long.txt").write_text("not a sound")
    assert evaluate(["--output", str(out), "--reference", str(tmp_path / "notes"), *config]) == 2
    assert evaluate(["--output", str(out), *config, f"clap.checkpoint={tmp_path / 'no-clap'}"]) == 2
    errors = capsys.readouterr().err
    assert f"--reference {tmp_path / 'notes'} holds no audio or video file" in errors
    assert f"clap.checkpoint={tmp_path / 'no-clap'} does not exist; make it with" in errors
    assert not ray.is_initialized() and not summary_file.exists()

    assert evaluate(["--output", str(out), "--reference", str(out), *config]) == 0
    itself = strict_json(summary_file.read_text())
    assert itself["videos"] == 4 and itself["fd_clap"] == pytest.approx(0.0, abs=1e-6)
    assert itself["clap_score_reference"] == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= itself["clap_score"] <= 1.0  # against the conditions the Mux stage kept
    assert itself["seam_score"] > 0  # long.mp4 has two windows in one shot
    assert itself["reasons"] == {}
    # The classifier's numbers, computed in their Ray Data stage: against itself FD and KL are 0, and the reference's
    # top 10 labels are among the generated top 50, so SSMS has recall 1 and precision 10/50.
    assert itself["fd_panns"] == pytest.approx(0.0, abs=1e-4)
    assert itself["kl_panns_softmax"] == pytest.approx(0.0, abs=1e-3)
    assert itself["kl_panns_sigmoid"] == pytest.approx(0.0, abs=1e-3)
    assert (itself["ssms_recall"], itself["ssms_precision"]) == (pytest.approx(1.0), pytest.approx(0.2))
    assert itself["ssms_f1"] == pytest.approx(1 / 3) and itself["is_panns"] >= 1.0
    assert itself["classifier"] == str(tiny_models["panns"])

    # A reference folder of sound files found by name whatever their extension; one missing is named.
    references = tmp_path / "originals"
    references.mkdir()
    for name, suffix in (("long", ".flac"), ("short", ".wav")):
        audio = ["-vn", "-c:a", "flac" if suffix == ".flac" else "pcm_s16le", str(references / f"{name}{suffix}")]
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(library / f"{name}.mp4"), *audio], check=True)
    assert evaluate(["--output", str(out), "--reference", str(references), *config]) == 1
    by_name = strict_json(summary_file.read_text())
    assert by_name["fd_clap"] > 1e-3 and len(by_name["problems"]) == 2
    assert any(f"third.mp4: reference audio: no file third.* under {references}" in p for p in by_name["problems"])

    # Without any reference and without a classifier: what needs them is null with its reason, in the JSON and on
    # the console (one line for all the PANNs numbers).
    assert evaluate(["--output", str(out), *config, "evaluation.classifier.checkpoint=null"]) == 0
    alone = strict_json(summary_file.read_text())
    assert alone["fd_clap"] is None and alone["clap_score_reference"] is None and alone["fd_panns"] is None
    assert alone["reasons"]["fd_clap"].startswith("no reference audio: run with --reference")
    assert "evaluation.classifier.checkpoint is not set" in alone["reasons"]["is_panns"]
    assert alone["clap_score"] is not None
    printed = capsys.readouterr().out
    assert "FD_CLAP n/a" in printed and "PANNs numbers n/a: evaluation.classifier.checkpoint is not set" in printed
    missing = tmp_path / "no-cnn14.pth"
    assert evaluate(["--output", str(out), *config, f"evaluation.classifier.checkpoint={missing}"]) == 2
    assert f"evaluation.classifier.checkpoint={missing} does not exist" in capsys.readouterr().err

    # The inputs' own sound: the silent one is named as having none, the others are compared.
    assert evaluate(["--output", str(out), "--reference", "inputs", *config]) == 1
    against_inputs = strict_json(summary_file.read_text())
    assert against_inputs["fd_clap"] > 1e-3 and against_inputs["clap_score_reference"] < 0.999
    assert against_inputs["problems"] == [
        f"silent.mp4: reference audio: the input {library / 'silent.mp4'} has no audio track, so there is nothing "
        "to compare with; give --reference a folder that holds the original sound"
    ]
    import pyarrow.parquet as pq

    windows = pq.read_table(out / "_foley/evaluation" / "windows.parquet").to_pylist()
    assert len(windows) == 5 and {w["relative_path"] for w in windows} == {
        "long.mp4",
        "short.mp4",
        "third.mp4",
        "silent.mp4",
    }
    assert all(len(w["generated_labels"]) == 5 for w in windows)
    assert [len(w["reference_labels"]) for w in windows if w["relative_path"] != "silent.mp4"] == [5] * 4
    assert {"kl_panns_softmax", "ssms_f1", "clap_score"} <= set(windows[0])
    printed = capsys.readouterr().out
    assert "FD_CLAP" in printed and "FD_PANNs" in printed and "SSMS F1" in printed
    assert against_inputs["kl_panns_softmax"] > 0 and against_inputs["fd_panns"] > 0

    # A second tiny job, with fewer AudioLDM steps, evaluated like the first; jobs.compare puts them side by side.
    fewer, one_video = tmp_path / "fewer-steps", tmp_path / "one-video"
    one_video.mkdir()
    shutil.copy(library / "long.mp4", one_video / "long.mp4")  # two windows: enough for a Fréchet distance
    result = run_dub(
        ray_joined,
        one_video,
        fewer,
        [*overrides, "input.existing_audio=replace", "window.cuts=off", "audioldm.steps=2"],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert evaluate(["--output", str(fewer), "--reference", "inputs", *config]) == 0
    capsys.readouterr()
    assert compare(["--runs", str(out), str(fewer), "--name", "steps", *config]) == 0
    printed = capsys.readouterr().out
    head, rule, first, second = printed.splitlines()[:4]
    assert head.startswith("| run | videos | audioldm.steps | CLAP score |") and "FD_PANNs" in head
    assert first.startswith(f"| {out} | 4 | 3 |") and second.startswith(f"| {fewer} | 1 | 2 |")
    for run in (out, fewer):
        table = json.loads((run / "_foley/comparisons/steps.json").read_text())
        assert table["settings"] == ["audioldm.steps"] and table["warnings"] == []
        assert (
            table["rows"][1]["numbers"]["fd_panns"]
            == strict_json((fewer / "_foley/evaluation/summary.json").read_text())["fd_panns"]
        )
    # The first run's report was written again, and links to the comparison.
    assert (
        '"comparisons": ["../../_foley/comparisons/steps.html"]' in (out / "_foley/report/data/summary.js").read_text()
    )
    assert compare(["--runs", str(out), str(tmp_path / "notes"), *config]) == 2
    assert "has not been evaluated: run python -m jobs.evaluate" in capsys.readouterr().err
