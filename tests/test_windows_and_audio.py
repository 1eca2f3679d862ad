import numpy as np
import pytest

from foley.media.stitch import crossfade_envelopes, normalize_peak, stitch_windows
from foley.media.windows import WindowPlan, frame_indices, window_bounds_s, window_count, window_seed


@pytest.mark.parametrize("duration,expected", [(0.5, 1), (10.24, 1), (10.3, 2), (19.84, 2), (19.9, 3), (30.0, 4)])
def test_window_count_is_the_fewest_that_cover(duration, expected):
    assert window_count(duration, 10.24, 0.64) == expected
    bounds = window_bounds_s(duration, 10.24, 0.64)
    assert bounds[0][0] == 0 and bounds[-1][1] == pytest.approx(duration)
    for (_, end), (next_start, _) in zip(bounds, bounds[1:], strict=False):
        assert end - next_start == pytest.approx(0.64)  # neighbours overlap by exactly the crossfade


def test_frames_are_spread_evenly_inside_their_window():
    indices = frame_indices(10.0, 20.0, fps=25, frame_count=1000, frames=4)
    assert indices == [281, 343, 406, 468]
    assert all(250 <= i < 500 for i in indices)
    assert frame_indices(0.0, 1.0, fps=30, frame_count=10, frames=8)[-1] == 9  # clamped to the last frame


def test_seeds_are_stable_and_distinct():
    assert window_seed(0, "a.mp4", 0, "audioldm") == window_seed(0, "a.mp4", 0, "audioldm")
    seeds = {
        window_seed(s, v, w, stream)
        for s in (0, 1)
        for v in ("a.mp4", "b.mp4")
        for w in range(3)
        for stream in ("mapper", "audioldm")
    }
    assert len(seeds) == 24
    assert all(0 <= seed < 2**63 for seed in seeds)


def test_crossfade_keeps_power_and_covers_every_sample():
    plan = WindowPlan.for_video(30.0, 10.24, 0.64, 16000)
    coverage = np.zeros(plan.start(plan.count - 1) + plan.length)
    for index, envelope in enumerate(crossfade_envelopes(plan)):
        coverage[plan.start(index) : plan.start(index) + plan.length] += envelope**2
    assert np.allclose(coverage, 1.0)


def test_stitched_track_is_continuous_at_window_borders():
    """Sinusoids with a different phase per window: the seam must be as smooth as the signal itself."""
    plan = WindowPlan.for_video(30.0, 10.24, 0.64, 16000)
    t = np.arange(plan.length) / plan.sample_rate
    rng = np.random.default_rng(0)
    windows = np.stack([0.5 * np.sin(2 * np.pi * 220 * t + rng.uniform(0, 2 * np.pi)) for _ in range(plan.count)])
    track = stitch_windows(windows.astype(np.float32), plan)
    assert len(track) == 30 * 16000
    steps = np.abs(np.diff(track))
    assert steps.max() <= 2 * np.abs(np.diff(windows[0])).max()  # no click anywhere
    block = 160
    rms = np.sqrt(np.mean(track[: len(track) // block * block].reshape(-1, block) ** 2, axis=1))
    assert rms.min() > 0.1  # no silent gap


def test_stitch_trims_a_short_video_to_its_duration():
    plan = WindowPlan.for_video(3.3, 10.24, 0.64, 16000)
    track = stitch_windows(np.ones((1, plan.length), np.float32), plan)
    assert len(track) == round(3.3 * 16000)
    with pytest.raises(ValueError, match="expected 1 windows"):
        stitch_windows(np.ones((2, plan.length), np.float32), plan)


def test_peak_normalisation():
    assert np.max(np.abs(normalize_peak(np.array([0.1, -0.2], np.float32), -6.0))) == pytest.approx(10 ** (-6 / 20))
    assert not normalize_peak(np.zeros(4, np.float32), -1.0).any()
    assert normalize_peak(np.array([0.3], np.float32), None)[0] == pytest.approx(0.3)
