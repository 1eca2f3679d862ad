"""Nothing is lost, and the media a library really holds is read right: every stream, chapter and tag survives the
mux (or the notes say why not), silent tracks count as no sound, rotated videos reach CLIP upright, variable-rate
videos are sampled at the right moments. Real ffmpeg, real stages, media made at test time."""

import math
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import one_window, run_dub, tiny_overrides
from foley.media.probe import DIGITAL_SILENCE_DBFS, _rate, probe
from foley.media.render import render_test_video
from foley.media.windows import plan_windows, sample_times, shot_borders
from foley.pipeline.columns import PENDING, SKIPPED
from foley.pipeline.kinds import DUB
from foley.pipeline.rows import batch_of, new_row, rows_of
from foley.storage.inputs import InputItem
from media_checks import decoded_channels, ffprobe_facts, frames_on_screen, packets_md5, plays, track_name
from workers.decode_embed import DecodeEmbed
from workers.mux import Mux

SAMPLE_RATE = 16000
WINDOW_SAMPLES = round(10.24 * SAMPLE_RATE)  # one AudioLDM window of generated sound
SUBTITLES = "1\n00:00:00,000 --> 00:00:01,000\nHello\n\n2\n00:00:01,000 --> 00:00:02,000\nWorld\n"
WEBVTT = "WEBVTT\n\n00:00:00.000 --> 00:00:01.000\nHello\n\n00:00:01.000 --> 00:00:02.000\nWorld\n"
METADATA = (
    ";FFMETADATA1\ntitle=Global Title\nartist=Someone\n"
    "[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=1000\ntitle=One\n"
    "[CHAPTER]\nTIMEBASE=1/1000\nSTART=1000\nEND=2000\ntitle=Two\n"
)
X264 = ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
VP8 = ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8"]


def ffmpeg(*args: str | Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], check=True, capture_output=True)


def lavfi(source: str) -> list[str]:
    return ["-f", "lavfi", "-i", source]


def side_files(folder: Path) -> tuple[Path, Path, Path, Path]:
    """Subtitles (srt, vtt), chapters with global metadata (ffmetadata) and a font to attach."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "subs.srt").write_text(SUBTITLES)
    (folder / "subs.vtt").write_text(WEBVTT)
    (folder / "meta.txt").write_text(METADATA)
    (folder / "font.ttf").write_bytes(bytes(range(256)) * 4)
    return folder / "subs.srt", folder / "subs.vtt", folder / "meta.txt", folder / "font.ttf"


def make_rich_mkv(path: Path) -> Path:
    """Two video streams, a sound track, English srt subtitles, chapters, global metadata and an attached font."""
    srt, _, meta, font = side_files(path.parent / "side")
    ffmpeg(
        *lavfi("testsrc2=size=160x96:rate=25:duration=2"),
        *lavfi("testsrc=size=80x48:rate=10:duration=2"),
        *lavfi("sine=frequency=440:duration=2"),
        *["-i", srt, "-i", meta, "-map", "0", "-map", "1", "-map", "2", "-map", "3"],
        *["-map_metadata", "4", "-map_chapters", "4", *X264, "-c:a", "libopus", "-c:s", "srt"],
        *["-metadata:s:s:0", "language=eng", "-attach", font, "-metadata:s:t", "mimetype=application/x-truetype-font"],
        path,
    )
    return path


def publish(config, video: Path, out: Path, has_audio: bool = False) -> dict:
    """The Mux stage's publish step for one video, with a second of generated noise per second of video."""
    row = new_row(InputItem(str(video), video.name), str(out / video.name), config, DUB)
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, (1, WINDOW_SAMPLES)).astype(np.float32)
    duration = probe(video, measure_audio=False).duration_s
    row.update(
        duration_s=duration,
        n_windows=1,
        windows=one_window(duration),
        sample_rate=SAMPLE_RATE,
        has_audio=has_audio,
        local_path=str(video),
        waveforms=noise,
    )
    Mux(config, str(out)).publish(row)
    assert plays(out / video.name)
    return row


def kinds(path: Path) -> list[tuple[str, str]]:
    return [(s["codec_type"], s.get("codec_name", "")) for s in ffprobe_facts(path)["streams"]]


def generated_stream(path: Path) -> dict:
    return next(s for s in ffprobe_facts(path)["streams"] if s["codec_type"] == "audio")


@pytest.fixture(scope="module")
def decode_embed(tiny_config):
    return DecodeEmbed(tiny_config)


def test_mkv_keeps_every_stream_chapter_tag_and_attachment(tmp_path, tiny_config):
    config = tiny_config.with_overrides("input.existing_audio=replace", "output.audio_language=fra")
    video = make_rich_mkv(tmp_path / "in" / "rich.mkv")
    row = publish(config, video, tmp_path / "out", has_audio=True)
    output = tmp_path / "out" / "rich.mkv"

    assert (
        kinds(video)
        == kinds(output)
        == [
            ("video", "h264"),
            ("video", "h264"),
            ("audio", "opus"),
            ("subtitle", "subrip"),
            ("attachment", "ttf"),
        ]
    )
    assert row["notes"] == ""
    for selector in ("v:0", "v:1", "s:0"):
        assert packets_md5(output, selector) == packets_md5(video, selector)
    facts = ffprobe_facts(output)
    assert len(facts["chapters"]) == 2 and facts["format"]["tags"]["title"] == "Global Title"
    audio, subtitle, font = facts["streams"][2:]
    assert audio["channels"] == 1 and audio["disposition"]["default"] == 1
    assert audio["tags"]["language"] == "fra" and track_name(audio) == "Generated Foley"
    assert subtitle["tags"]["language"] == "eng"
    assert font["tags"]["filename"] == "font.ttf" and font["tags"]["mimetype"] == "application/x-truetype-font"


def test_mp4_keeps_its_mov_text_subtitles_and_chapters(tmp_path, tiny_config):
    srt, _, meta, _ = side_files(tmp_path / "side")
    video = tmp_path / "in.mp4"
    ffmpeg(
        *lavfi("testsrc2=size=160x96:rate=25:duration=2"),
        *lavfi("sine=frequency=440:duration=2"),
        *["-i", srt, "-i", meta, "-map", "0", "-map", "1", "-map", "2", "-map_metadata", "3", "-map_chapters", "3"],
        *X264,
        *["-c:a", "aac", "-c:s", "mov_text"],
        video,
    )
    config = tiny_config.with_overrides("input.existing_audio=replace")
    row = publish(config, video, tmp_path / "out", has_audio=True)
    output = tmp_path / "out" / "in.mp4"

    assert ("subtitle", "mov_text") in kinds(output)
    assert kinds(output) == kinds(video)  # the chapter track mp4 lists as a data stream is written again too
    assert row["notes"] == "" and len(ffprobe_facts(output)["chapters"]) == 2
    assert packets_md5(output, "v:0") == packets_md5(video, "v:0")
    audio = generated_stream(output)
    assert audio["tags"]["language"] == "und" and track_name(audio) == "Generated Foley"
    assert audio["disposition"]["default"] == 1


def test_webm_keeps_webvtt_and_notes_what_it_cannot_hold(tmp_path, tiny_config):
    srt, vtt, meta, font = side_files(tmp_path / "side")
    native = tmp_path / "in" / "native.webm"
    native.parent.mkdir()
    ffmpeg(
        *lavfi("testsrc2=size=160x96:rate=25:duration=2"),
        *["-i", vtt, "-i", meta, "-map", "0", "-map", "1", "-map_chapters", "2", *VP8, "-c:s", "webvtt"],
        native,
    )
    # Matroska content under a .webm name: srt subtitles and a font, which WebM cannot hold.
    disguised = tmp_path / "in" / "disguised.webm"
    ffmpeg(
        *lavfi("testsrc2=size=160x96:rate=25:duration=2"),
        *["-i", srt, "-map", "0", "-map", "1", *VP8, "-c:s", "srt", "-attach", font],
        *["-metadata:s:t", "mimetype=application/x-truetype-font", "-f", "matroska", disguised],
    )
    out = tmp_path / "out"

    row = publish(tiny_config, native, out)
    assert kinds(out / "native.webm") == [("video", "vp8"), ("audio", "opus"), ("subtitle", "webvtt")]
    assert row["notes"] == "" and len(ffprobe_facts(out / "native.webm")["chapters"]) == 2

    row = publish(tiny_config, disguised, out)
    assert kinds(out / "disguised.webm") == [("video", "vp8"), ("audio", "opus"), ("subtitle", "webvtt")]
    assert row["notes"] == (
        "converted subtitle stream 1 (subrip) to webvtt: .webm holds no subrip; "
        "dropped attachment stream 2 (ttf): .webm cannot hold it"
    )


def test_a_misnamed_file_is_converted_noted_or_failed_clearly(tmp_path, tiny_config):
    """Files whose content is not what their extension says: the output follows the extension."""
    srt, *_ = side_files(tmp_path / "side")
    mp4 = tmp_path / "made.mp4"
    ffmpeg(*lavfi("testsrc2=size=160x96:rate=25:duration=2"), "-i", srt, *X264, "-c:s", "mov_text", mp4)
    misnamed = tmp_path / "in" / "phone.mkv"  # an mp4 with a rotation and mov_text subtitles, named .mkv
    misnamed.parent.mkdir()
    ffmpeg("-i", mp4, "-map", "0", "-c", "copy", "-metadata:s:v:0", "rotate=90", "-f", "mp4", misnamed)

    row = publish(tiny_config, misnamed, tmp_path / "out")
    assert kinds(tmp_path / "out" / "phone.mkv") == [("video", "h264"), ("audio", "opus"), ("subtitle", "subrip")]
    assert row["notes"] == (
        "video stream 0 loses its 90 degree rotation: .mkv cannot hold it; "
        "converted subtitle stream 1 (mov_text) to srt: .mkv holds no mov_text"
    )

    h264_webm = tmp_path / "in" / "h264.webm"
    h264_webm.write_bytes(mp4.read_bytes())
    row = new_row(InputItem(str(h264_webm), h264_webm.name), str(tmp_path / "out" / "h264.webm"), tiny_config, DUB)
    row.update(duration_s=2.0, n_windows=1, windows=one_window(2.0), sample_rate=SAMPLE_RATE, local_path=str(h264_webm))
    row["waveforms"] = np.zeros((1, WINDOW_SAMPLES), np.float32)
    [result] = rows_of(Mux(tiny_config, str(tmp_path / "out"))(batch_of([row])))
    assert result["status"] == "failed" and str(h264_webm) in result["error"]
    assert "video stream 0 is h264, which a .webm file cannot hold" in result["error"]
    assert "output.video_codec" in result["error"] and not (tmp_path / "out" / "h264.webm").exists()


def test_mix_keeps_the_original_layout_and_cannot_clip(tmp_path, tiny_config):
    """A full-scale stereo original plus the generated track at the same level: the sum would reach about -6 dB
    over full scale without the limiter."""
    video = tmp_path / "loud.mkv"
    ffmpeg(
        *lavfi("testsrc2=size=160x96:rate=25:duration=3"),
        *lavfi("aevalsrc=sin(2*PI*440*t)|sin(2*PI*660*t):s=48000:d=3"),
        *lavfi("sine=frequency=220:sample_rate=48000:duration=3"),  # a second track, e.g. commentary
        *["-map", "0", "-map", "1", "-map", "2", *X264, "-c:a", "flac"],
        video,
    )
    config = tiny_config.with_overrides("input.existing_audio=mix", "input.mix_gain_db=0")
    row = publish(config, video, tmp_path / "out", has_audio=True)
    output = tmp_path / "out" / "loud.mkv"

    assert row["notes"] == ""
    assert kinds(output) == [("video", "h264"), ("audio", "opus"), ("audio", "flac")]
    mixed, commentary = (s for s in ffprobe_facts(output)["streams"] if s["codec_type"] == "audio")
    assert mixed["channels"] == 2 and mixed["channel_layout"] == "stereo" and mixed["disposition"]["default"] == 1
    assert commentary["disposition"]["default"] == 0 and packets_md5(output, "a:1") == packets_md5(video, "a:1")
    samples = decoded_channels(output)
    assert samples.shape[1] == 2
    assert np.abs(samples).max() <= 0.99  # the -1 dBFS ceiling, plus what Opus adds on decoding
    left = np.abs(np.fft.rfft(samples[:48000, 0]))  # one second at 48 kHz: bins are 1 Hz apart
    assert left[440] > 10 * np.median(left)  # the original is still there, not pushed under the noise


def test_a_silent_audio_track_is_no_sound(tmp_path, tiny_config, decode_embed):
    silent = tmp_path / "silent.mp4"
    ffmpeg(
        *lavfi("testsrc2=size=160x96:rate=25:duration=3"),
        *lavfi("anullsrc=r=48000:cl=stereo"),
        *[*X264, "-c:a", "aac", "-shortest"],
        silent,
    )
    loud = render_test_video(tmp_path / "loud.mp4", 3.0, 160, 96, 25, with_audio=True)  # a sine at 1/8 scale
    quiet_row, loud_row = rows_of(
        decode_embed(batch_of([new_row(InputItem(str(p), p.name), "o.mp4", tiny_config, DUB) for p in (silent, loud)]))
    )
    assert tiny_config.input.existing_audio == "skip"
    assert quiet_row["status"] == PENDING and not quiet_row["has_audio"]  # dubbed, not skipped
    assert quiet_row["audio_level_dbfs"] == DIGITAL_SILENCE_DBFS
    assert loud_row["status"] == SKIPPED and "already has an audio track" in loud_row["error"]
    assert loud_row["has_audio"] and -20 < loud_row["audio_level_dbfs"] < -12  # -18 dBFS, plus AAC's overshoot

    publish(tiny_config, silent, tmp_path / "out", has_audio=bool(quiet_row["has_audio"]))
    assert kinds(tmp_path / "out" / "silent.mp4") == [("video", "h264"), ("audio", "aac")]
    assert generated_stream(tmp_path / "out" / "silent.mp4")["channels"] == 1  # the generated track replaced it


def _mean_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def test_rotated_videos_reach_clip_upright_and_keep_their_rotation(tmp_path, tiny_config, decode_embed):
    from torchcodec.decoders import VideoDecoder
    from torchcodec.transforms import Resize

    source = render_test_video(tmp_path / "source.mp4", 2.0, 160, 96, 25)
    rotated = tmp_path / "in" / "rotated.mp4"
    rotated.parent.mkdir()
    ffmpeg("-i", source, "-c", "copy", "-metadata:s:v:0", "rotate=90", rotated)  # sets the display matrix only
    upright = tmp_path / "upright.mp4"  # ffmpeg turns the frames as players do (autorotate) and re-encodes
    ffmpeg("-i", rotated, *X264, "-qp", "0", upright)

    row = new_row(InputItem(str(rotated), rotated.name), "o.mp4", tiny_config, DUB)
    path, info = decode_embed.probe_input(row)
    assert (row["width"], row["height"]) == (96, 160) and info.rotation == 90  # as displayed: portrait
    windows = decode_embed.plan_windows(path, info)
    [frames] = decode_embed.frames.window_frames(path, info, windows)
    upright_info = probe(upright)
    assert (upright_info.width, upright_info.height, upright_info.rotation) == (96, 160, 0)
    [expected] = decode_embed.frames.window_frames(upright, upright_info, windows)
    assert frames.shape == expected.shape and frames.shape[1] > frames.shape[2]
    [window] = windows
    moments = sample_times(window.start_s, window.end_s, len(frames))
    squeezed = VideoDecoder(str(source), dimension_order="NHWC", transforms=[Resize(frames.shape[1:3])])
    unturned = squeezed.get_frames_played_at(moments).data.numpy()  # the coded picture, not turned
    assert _mean_difference(frames, expected) < 8
    assert _mean_difference(frames, expected) < _mean_difference(frames, unturned) / 5
    assert _mean_difference(frames, expected) < _mean_difference(frames, expected[:, ::-1, ::-1]) / 5

    publish(tiny_config, rotated, tmp_path / "out")
    output = ffprobe_facts(tmp_path / "out" / "rotated.mp4")["streams"][0]
    assert output["side_data_list"][0]["rotation"] == 90
    assert packets_md5(tmp_path / "out" / "rotated.mp4", "v:0") == packets_md5(rotated, "v:0")


def frame_starts(video: Path) -> np.ndarray:
    """Each frame's start in seconds from the first, as ffprobe reads the container's timestamps."""
    text = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts_time", "-of", "csv=p=0",
         str(video)], capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    starts = np.sort([float(value) for value in text.replace(",", " ").split()])
    return starts - starts[0]


def test_variable_frame_rate_videos_are_sampled_at_their_timestamps(tmp_path, tiny_config, decode_embed):
    """10 fps for two seconds, then 30 fps: index / average fps would look at the wrong moments."""
    video = tmp_path / "vfr.mp4"
    ffmpeg(
        *lavfi("testsrc2=size=160x96:rate=30:duration=4"),
        *["-vf", "select='if(lt(t,2),not(mod(n,3)),1)'", "-fps_mode", "vfr", *X264],
        video,
    )
    starts = frame_starts(video)
    assert len(starts) == 80 and np.ptp(np.diff(starts)) > 0.05  # really variable

    row = new_row(InputItem(str(video), video.name), "o.mp4", tiny_config, DUB)
    path, info = decode_embed.probe_input(row)
    windows = decode_embed.plan_windows(path, info)
    [window] = windows
    start, end = window.start_s, window.end_s
    per_window = tiny_config.window.frames
    on_screen = [int(np.searchsorted(starts, t, side="right") - 1) for t in sample_times(start, end, per_window)]
    assert on_screen != frames_on_screen(start, end, len(starts) / info.duration_s, len(starts), per_window)

    [frames] = decode_embed.frames.window_frames(path, info, windows)
    assert np.array_equal(frames, decode_embed.frames.open(path, info).get_frames_at(on_screen).data.numpy())


@pytest.mark.parametrize("name,fps", [("cfr.mp4", 25), ("cfr.mkv", 30), ("cfr.webm", 24)])
def test_constant_frame_rate_videos_sample_the_frames_on_screen(tmp_path, tiny_config, decode_embed, name, fps):
    """By timestamps, the frames index x rate picks (as the stage did before), moments on a frame's start too."""
    video = render_test_video(tmp_path / name, 21.0, 64, 48, fps)
    info = probe(video)
    window = tiny_config.window
    borders = shot_borders([], info.duration_s, window.min_shot_seconds)
    windows = plan_windows(borders, window.seconds, window.overlap_seconds, window.cut_crossfade_seconds)
    decoded = list(decode_embed.frames.window_frames(video, info, windows))
    frames = np.concatenate(decoded)
    decoder = decode_embed.frames.open(video, info)
    per_window, count = tiny_config.window.frames, decoder.metadata.num_frames
    before = [i for w in windows for i in frames_on_screen(w.start_s, w.end_s, fps, count, per_window)]
    assert len(windows) == 3 and np.array_equal(frames, decoder.get_frames_at(before).data.numpy())


@pytest.mark.parametrize("text", ["30000/0", "0/0", "", "abc", None, "-25/1", "inf", "1/0.0"])
def test_a_malformed_frame_rate_is_unknown(text):
    assert _rate(text) == 0.0


def test_frame_rates_are_read(tmp_path):
    assert _rate("30000/1001") == pytest.approx(29.97, abs=0.01) and _rate("25") == 25.0
    info = probe(render_test_video(tmp_path / "clip.mp4", 1.0, 64, 48, 25))
    assert info.fps == 25.0 and math.isnan(info.audio_peak_dbfs) and info.rotation == 0


@pytest.mark.slow  # own job: a library of its own: the streams real files carry
def test_a_library_of_real_world_files_is_dubbed_with_nothing_lost(tmp_path, tiny_models, ray_cluster):
    source = tmp_path / "in"
    rich = make_rich_mkv(source / "rich.mkv")
    ffmpeg(
        *lavfi("testsrc2=size=160x96:rate=25:duration=2"),
        *lavfi("anullsrc=r=48000:cl=mono"),
        *[*X264, "-c:a", "aac", "-shortest"],
        source / "silent.mp4",
    )
    srt, _, _, font = side_files(tmp_path / "side")
    ffmpeg(
        *lavfi("testsrc2=size=160x96:rate=25:duration=2"),
        *["-i", srt, "-map", "0", "-map", "1", *VP8, "-c:s", "srt", "-attach", font],
        *["-metadata:s:t", "mimetype=application/x-truetype-font", "-f", "matroska", source / "disguised.webm"],
    )
    (source / "side").rename(tmp_path / "rich-side")  # only videos in the library
    overrides = [*tiny_overrides(tiny_models, tmp_path / "cache"), "input.existing_audio=mix"]

    result = run_dub(ray_cluster, source, tmp_path / "out", overrides)

    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        row["relative_path"]: row
        for row in pq.read_table(tmp_path / "out/_foley/manifest/manifest.parquet").to_pylist()
    }
    assert {name: row["status"] for name, row in rows.items()} == dict.fromkeys(rows, "ok") and len(rows) == 3
    assert math.isnan(rows["disguised.webm"]["audio_level_dbfs"])
    assert rows["silent.mp4"]["audio_level_dbfs"] == DIGITAL_SILENCE_DBFS and not rows["silent.mp4"]["has_audio"]
    assert rows["rich.mkv"]["has_audio"] and rows["rich.mkv"]["audio_level_dbfs"] > -30
    assert "dropped attachment stream 2 (ttf): .webm cannot hold it" in rows["disguised.webm"]["notes"]
    assert kinds(tmp_path / "out" / "rich.mkv") == kinds(rich)  # the original sound mixed, the rest kept
    assert generated_stream(tmp_path / "out" / "silent.mp4")["channels"] == 1  # silence is replaced, not mixed


# What a library holds: every codec of the decoder comparison (jobs.bench.decoders) and every container of the
# default input.extensions beyond the first five, made as ffmpeg writes them: name -> (file, encoding, subtitles kept).
LIBRARY_MEDIA = {
    "h264.m4v": ([*X264, "-c:s", "mov_text"], "mov_text"),
    "h264.3gp": ([*X264, "-c:s", "mov_text"], "mov_text"),
    "h264.ts": (X264, None),
    "h264.mts": (X264, None),
    "h264-interlaced.mp4": ([*X264, "-flags", "+ildct+ilme", "-x264opts", "tff=1"], None),
    "hevc.mp4": (["-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1", "-x265-params", "log-level=none"], None),
    "hevc-10bit.mkv": (
        ["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=none"],
        None,
    ),  # fmt: skip
    "av1.mp4": (["-c:v", "libaom-av1", "-cpu-used", "8"], None),
    "av1.webm": (["-c:v", "libaom-av1", "-cpu-used", "8"], None),
    "vp8.webm": (VP8, None),
    "vp9.webm": (["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8"], None),
    "prores.mov": (["-c:v", "prores_ks", "-profile:v", "0"], None),
    "dnxhr.mov": (["-c:v", "dnxhd", "-profile:v", "dnxhr_lb", "-pix_fmt", "yuv422p"], None),
    "mpeg2.m2ts": (["-c:v", "mpeg2video"], None),
    "mpeg2.mpg": (["-c:v", "mpeg2video"], None),
    "mpeg1.mpeg": (["-c:v", "mpeg1video"], None),
    "mpeg4-part2.avi": (["-c:v", "mpeg4"], None),
}


@pytest.mark.slow  # 17 in-process dubs: the full suite runs them, the inner loop (make test-fast) does not
@pytest.mark.parametrize("name", LIBRARY_MEDIA)
def test_every_codec_and_container_is_read_and_dubbed_with_the_video_untouched(
    tmp_path, tiny_config, decode_embed, name
):
    encoding, subtitles = LIBRARY_MEDIA[name]
    srt, *_ = side_files(tmp_path / "side")
    video = tmp_path / name
    with_subtitles = ["-i", srt, "-map", "0", "-map", "1"] if subtitles else []
    ffmpeg(*lavfi("testsrc2=size=320x180:rate=25:duration=2"), *with_subtitles, *encoding, video)  # DNxHR's least
    [read] = rows_of(decode_embed(batch_of([new_row(InputItem(str(video), video.name), "o", tiny_config, DUB)])))
    assert read["status"] == PENDING and read["n_windows"] == 1, read["error"]

    row = publish(tiny_config, video, tmp_path / "out")
    output = tmp_path / "out" / video.name
    assert row["notes"] == "" and packets_md5(output, "v:0") == packets_md5(video, "v:0")
    audio = generated_stream(output)
    encoders = {"aac": "aac", "mp2": "mp2", "libopus": "opus", "libmp3lame": "mp3"}  # encoder -> codec it writes
    assert audio["codec_name"] == encoders[tiny_config.output.audio_codecs[video.suffix]]
    decoded_s = len(decoded_channels(output)) / int(audio["sample_rate"])  # TS and PS headers only estimate it
    assert abs(decoded_s - probe(video, measure_audio=False).duration_s) < 0.1
    assert [kind for kind in kinds(output) if kind[0] == "subtitle"] == ([("subtitle", subtitles)] if subtitles else [])


def test_a_video_whose_timestamps_do_not_start_at_0_is_sampled_at_the_same_moments(tmp_path, tiny_config, decode_embed):
    """Broadcast MPEG-TS (B-frames, a clock far from 0) and a trimmed Matroska file starting at 100 s hold the same
    frames as the file they were cut from: each window's frames are the same, so is its CLIP embedding, and so is
    the video's length (a Matroska DURATION tag counts from 0, not from the first frame)."""
    source = tmp_path / "source.mp4"
    ffmpeg(
        *lavfi("testsrc2=size=160x120:rate=25:duration=3"), "-c:v", "libx264", "-bf", "3", "-pix_fmt", "yuv420p", source
    )
    copies = {"broadcast.ts": ["-output_ts_offset", "10"], "trimmed.mkv": ["-output_ts_offset", "100"]}
    for name, offset in copies.items():
        ffmpeg("-i", str(source), "-c", "copy", *offset, str(tmp_path / name))
    rows = {
        path.name: row
        for path in [source, *(tmp_path / name for name in copies)]
        for row in rows_of(decode_embed(batch_of([new_row(InputItem(str(path), path.name), "o", tiny_config, DUB)])))
    }
    for name in copies:
        assert rows[name]["status"] == PENDING, rows[name]["error"]
        assert rows[name]["duration_s"] == pytest.approx(3.0, abs=0.05) and rows[name]["n_windows"] == 1
        assert np.allclose(rows[name]["clip_embeddings"], rows["source.mp4"]["clip_embeddings"], atol=1e-5), name
