import numpy as np
import pytest

from foley.media.stitch import TrackBuilder, TrackLayout, normalize_peak
from foley.media.windows import plan_windows, sample_times, shot_borders, window_bounds_s, window_count, window_seed
from foley.pipeline.segments import segment_ranges


@pytest.mark.parametrize("duration,expected", [(0.5, 1), (10.24, 1), (10.3, 2), (19.84, 2), (19.9, 3), (30.0, 4)])
def test_window_count_is_the_fewest_that_cover(duration, expected):
    assert window_count(duration, 10.24, 0.64) == expected
    bounds = window_bounds_s(duration, 10.24, 0.64)
    assert bounds[0][0] == 0 and bounds[-1][1] == pytest.approx(duration)
    for (_, end), (next_start, _) in zip(bounds, bounds[1:], strict=False):
        assert end - next_start == pytest.approx(0.64)  # neighbours overlap by exactly the crossfade


def test_frames_are_spread_evenly_inside_their_window():
    assert sample_times(10.0, 20.0, frames=4) == [11.25, 13.75, 16.25, 18.75]  # the middle of each quarter


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


def layout_of(borders: list[float], sample_rate: int = 16000, crossfade: float = 0.05) -> TrackLayout:
    windows = plan_windows(borders, 10.24, 0.64, crossfade)
    return TrackLayout.of(windows, borders[-1], 10.24, crossfade, sample_rate)


def stitched(layout: TrackLayout, waveforms: np.ndarray, segment_windows: int | None = None) -> np.ndarray:
    builder = TrackBuilder(layout)
    for first, end in segment_ranges(layout.count, segment_windows):
        builder.add(first, waveforms[first:end])
    return builder.result()


@pytest.mark.parametrize("borders", [[0.0, 30.0], [0.0, 3.0, 7.0, 30.0], [0.0, 9.62, 12.0, 40.0]])
def test_crossfade_keeps_power_and_covers_every_sample(borders):
    """Within a shot over the overlap, at a cut over the short crossfade after it: squared gains sum to 1."""
    layout = layout_of(borders)
    coverage = np.zeros(layout.starts[-1] + layout.length)
    for index in range(layout.count):
        start = layout.starts[index]
        coverage[start : start + layout.length] += layout.envelope(index) ** 2
    assert np.allclose(coverage[: layout.total], 1.0)


def test_the_old_grid_is_kept_without_cuts():
    assert [(w.start_s, w.end_s) for w in plan_windows([0.0, 30.0], 10.24, 0.64, 0.05)] == window_bounds_s(
        30.0, 10.24, 0.64
    )


def test_windows_follow_the_shots():
    """No window straddles a cut, and a short shot gets a window of its own."""
    windows = plan_windows([0.0, 3.0, 7.0, 40.0], 10.24, 0.64, 0.05)
    assert [(w.start_s, w.end_s, w.shot) for w in windows[:3]] == [(0.0, 3.0, 0), (3.0, 7.0, 1), (7.0, 7.0 + 10.24, 2)]
    assert [w.shot for w in windows] == [0, 1, 2, 2, 2, 2]
    assert windows[-1].end_s == 40.0


def test_a_shot_before_a_cut_leaves_sound_for_the_crossfade():
    """A 10.22-s shot: one window would end 0.02 s after the cut, less than the 0.05-s crossfade, so a second is
    added."""
    windows = plan_windows([0.0, 10.22, 20.0], 10.24, 0.64, 0.05)
    assert [(w.start_s, w.end_s, w.shot) for w in windows[:2]] == [(0.0, 10.22, 0), (9.6, 10.22, 0)]
    layout = TrackLayout.of(windows, 20.0, 10.24, 0.05, 16000)
    assert layout.fade(1) == (round(10.22 * 16000), round(10.22 * 16000) + 800)


def test_short_cuts_are_dropped():
    assert shot_borders([0.4, 3.0, 3.5, 9.8], 10.0, 1.0) == [0.0, 3.0, 10.0]


def test_stitched_track_is_continuous_at_window_borders():
    """Sinusoids with a different phase per window: the seam must be as smooth as the signal itself."""
    layout = layout_of([0.0, 30.0])
    t = np.arange(layout.length) / layout.sample_rate
    rng = np.random.default_rng(0)
    windows = np.stack([0.5 * np.sin(2 * np.pi * 220 * t + rng.uniform(0, 2 * np.pi)) for _ in range(layout.count)])
    track = stitched(layout, windows.astype(np.float32))
    assert len(track) == 30 * 16000
    steps = np.abs(np.diff(track))
    assert steps.max() <= 2 * np.abs(np.diff(windows[0])).max()  # no click anywhere
    block = 160
    rms = np.sqrt(np.mean(track[: len(track) // block * block].reshape(-1, block) ** 2, axis=1))
    assert rms.min() > 0.1  # no silent gap


def test_a_cut_switches_the_sound_within_the_crossfade():
    """Windows sounding 1 before the cut at 3 s and 2 after it: the track is 1 up to the cut, 2 from 50 ms after."""
    layout = layout_of([0.0, 3.0, 20.0])
    waveforms = np.stack([np.full(layout.length, shot + 1.0, np.float32) for shot in layout.shots])
    track = stitched(layout, waveforms)
    cut, fade = 3 * 16000, 800
    assert np.allclose(track[:cut], 1.0)
    assert np.allclose(track[cut + fade : cut + fade + 16000], 2.0)
    assert np.abs(np.diff(track[cut - 5 : cut + fade + 5])).max() < 0.01  # a ramp, not a step


def test_segments_assemble_to_the_unsplit_track():
    layout = layout_of([0.0, 3.0, 7.0, 60.0])
    waveforms = np.random.default_rng(1).standard_normal((layout.count, layout.length)).astype(np.float32)
    assert np.array_equal(stitched(layout, waveforms, segment_windows=2), stitched(layout, waveforms))


def test_stitch_trims_a_short_video_to_its_duration():
    layout = layout_of([0.0, 3.3])
    builder = TrackBuilder(layout)
    builder.add(0, np.ones((1, layout.length), np.float32))
    assert len(builder.result()) == round(3.3 * 16000)
    with pytest.raises(ValueError, match="expected up to 1 windows"):
        builder.add(0, np.ones((2, layout.length), np.float32))


def test_peak_normalisation():
    assert np.max(np.abs(normalize_peak(np.array([0.1, -0.2], np.float32), -6.0))) == pytest.approx(10 ** (-6 / 20))
    assert not normalize_peak(np.zeros(4, np.float32), -1.0).any()
    assert normalize_peak(np.array([0.3], np.float32), None)[0] == pytest.approx(0.3)
