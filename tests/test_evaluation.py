"""jobs.evaluate: CLAP scores, FD_CLAP against reference audio, and the seam score."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import run_dub, tiny_overrides
from foley.config import EvaluationConfig
from foley.media.render import render_test_video
from foley.media.seams import seam_score
from foley.media.stitch import TrackBuilder, TrackLayout
from foley.media.windows import plan_windows
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


@pytest.mark.slow
def test_fd_clap_is_zero_against_itself_and_positive_against_other_audio(tmp_path, tiny_models, ray_joined, capsys):
    library = tmp_path / "library"
    for name, seconds in (("long.mp4", 15.0), ("short.mp4", 4.0), ("third.mp4", 6.0)):
        render_test_video(library / name, seconds, 160, 96, 24, with_audio=True)
    overrides = tiny_overrides(tiny_models, tmp_path / "cache")
    out = tmp_path / "out"
    result = run_dub(ray_joined, library, out, [*overrides, "input.existing_audio=replace", "window.cuts=off"])
    assert result.returncode == 0, result.stdout + result.stderr
    config = ["--config", "configs/tiny.yaml", *overrides]

    assert evaluate(["--output", str(out), "--reference", str(out), *config]) == 0
    itself = json.loads((out / "_foley/evaluation" / "summary.json").read_text())
    assert itself["videos"] == 3 and itself["fd_clap"] == pytest.approx(0.0, abs=1e-6)
    assert itself["clap_score_reference"] == pytest.approx(1.0, abs=1e-5)
    assert -1.0 <= itself["clap_score"] <= 1.0  # against the conditions the Mux stage kept
    assert itself["seam_score"] > 0  # long.mp4 has two windows in one shot

    assert evaluate(["--output", str(out), "--reference", "inputs", *config]) == 0
    against_inputs = json.loads((out / "_foley/evaluation" / "summary.json").read_text())
    assert against_inputs["fd_clap"] > 1e-3 and against_inputs["clap_score_reference"] < 0.999
    import pyarrow.parquet as pq

    windows = pq.read_table(out / "_foley/evaluation" / "windows.parquet").to_pylist()
    assert len(windows) == 4 and {w["relative_path"] for w in windows} == {"long.mp4", "short.mp4", "third.mp4"}
    assert "FD_CLAP" in capsys.readouterr().out
