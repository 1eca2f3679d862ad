"""Still images as inputs (read upright, rendered to a video) and sidecar sound files; ffmpeg only, no Ray."""

from __future__ import annotations

import subprocess
from pathlib import Path

import ffmpeg
import numpy as np
import pytest
from PIL import ExifTags, Image

from foley.config import InputConfig
from foley.media.audio_file import write_audio_file
from foley.media.probe import MediaError, probe
from foley.media.still import image_size, read_image, render_still_video
from foley.storage.inputs import is_image

SAMPLE_RATE = 16000
RED, BLUE = (255, 0, 0), (0, 0, 255)


def pattern_image(path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1", str(path)],
        check=True,
        capture_output=True,
    )
    return path


def sideways_photo(path: Path) -> Path:
    """A 320x240 JPEG, red left and blue right, whose EXIF orientation (6) says to show it turned a quarter
    clockwise: upright it is 240x320, red on top."""
    image = Image.new("RGB", (320, 240), BLUE)
    image.paste(RED, (0, 0, 160, 240))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    image.save(path, exif=exif, quality=95)
    return path


def sine(seconds: float, extra_samples: int = 0) -> np.ndarray:
    t = np.arange(round(seconds * SAMPLE_RATE) + extra_samples) / SAMPLE_RATE
    return (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def test_images_are_told_by_their_suffix():
    suffixes = InputConfig().image_extensions
    assert is_image("s3://bucket/Holiday/IMG_0001.JPG", suffixes) and is_image("a.webp", suffixes)
    assert not is_image("clip.mp4", suffixes) and not is_image("png", suffixes)


@pytest.mark.parametrize("name", ["pattern.png", "pattern.jpg"])
def test_an_image_is_read_scaled_to_its_short_side(tmp_path, name):
    path = pattern_image(tmp_path / name)
    frame = read_image(path, short_side=224)
    assert frame.shape == (224, 299, 3) and frame.dtype == np.uint8
    assert image_size(path) == (320, 240)


def test_an_exif_rotated_photo_is_read_upright(tmp_path):
    path = sideways_photo(tmp_path / "phone.jpg")
    frame = read_image(path, short_side=120)
    assert frame.shape == (160, 120, 3)
    assert image_size(path) == (240, 320)
    top, bottom = frame[:60].reshape(-1, 3).mean(axis=0), frame[100:].reshape(-1, 3).mean(axis=0)
    assert top[0] > 200 > top[2] and bottom[2] > 200 > bottom[0]


def test_a_file_that_is_no_image_fails_clearly(tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a JPEG at all" * 10)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(sideways_photo(tmp_path / "whole.jpg").read_bytes()[:600])
    for path in (garbage, truncated):
        with pytest.raises(MediaError, match="cannot read it as an image .*check that the file is complete"):
            read_image(path, short_side=224)


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_a_still_video_lasts_as_asked_and_carries_the_track(tmp_path, suffix):
    output = tmp_path / f"still{suffix}"
    render_still_video(
        sideways_photo(tmp_path / "phone.jpg"),
        sine(3.0),
        SAMPLE_RATE,
        output,
        seconds=2.5,
        fps=25,
        video_codec="libx264",
        audio_codec="aac",
        audio_bitrate="128k",
        output_sample_rate=48000,
        language="fra",
        title="Generated Foley",
    )
    info = probe(output, measure_audio=False)
    assert abs(info.duration_s - 2.5) <= 0.1
    assert [stream.kind for stream in info.streams] == ["video", "audio"]
    assert (info.width, info.height) == (240, 320)  # upright
    video, audio = ffmpeg.probe(str(output))["streams"]
    assert video["pix_fmt"] == "yuv420p" and int(audio["sample_rate"]) == 48000 and audio["channels"] == 1
    assert abs(float(ffmpeg.probe(str(output))["format"]["duration"]) - 2.5) <= 0.1
    assert audio["disposition"]["default"] == 1 and audio["tags"]["language"] == "fra"
    assert audio["tags"].get("title", audio["tags"].get("handler_name")) == "Generated Foley"


@pytest.mark.parametrize(("suffix", "output_sample_rate"), [(".flac", 44100), (".wav", 48000)])
def test_a_sidecar_sound_file_lasts_as_long_as_the_track(tmp_path, suffix, output_sample_rate):
    track = sine(3.0, extra_samples=7)
    output = tmp_path / f"Foley{suffix}"
    write_audio_file(track, SAMPLE_RATE, output, output_sample_rate=output_sample_rate, title="Generated Foley")
    facts = ffmpeg.probe(str(output))
    (stream,) = facts["streams"]
    assert int(stream["sample_rate"]) == output_sample_rate and stream["channels"] == 1
    assert abs(float(stream["duration"]) - len(track) / SAMPLE_RATE) <= 0.001
    tags = {key.lower(): value for key, value in facts["format"]["tags"].items()}
    assert tags["title"] == "Generated Foley"


def test_a_sidecar_sound_file_of_another_format_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.flac, \.wav"):
        write_audio_file(sine(0.1), SAMPLE_RATE, tmp_path / "Foley.mp3", output_sample_rate=48000, title="x")
