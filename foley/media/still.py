"""Still images as inputs: read upright for CLIP, and turned into a video that shows the image for as long as its
generated track lasts.

Pillow reads the image, not ffmpeg: ffmpeg 5.1 ignores a JPEG's EXIF orientation, so a phone photo would come
out on its side.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import ffmpeg
import numpy as np
from PIL import ExifTags, Image, ImageOps

from foley.media.mux import run_with_track, track_names
from foley.media.probe import MediaError
from foley.media.verify import Planned

# EXIF orientations that turn the image a quarter turn, so that it is displayed with width and height swapped.
_QUARTER_TURNED = frozenset({5, 6, 7, 8})


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as displayed, from the header alone (no decoding)."""
    with _opened(path) as image:
        width, height = image.size
        if image.getexif().get(ExifTags.Base.Orientation) in _QUARTER_TURNED:
            return height, width
        return width, height


def read_image(path: Path, short_side: int) -> np.ndarray:
    """The image as displayed, RGB uint8 (height, width, 3), scaled so that its short side is `short_side`."""
    image = _upright(path)
    scale = short_side / min(image.size)
    size = (round(image.width * scale), round(image.height * scale))
    return np.asarray(image.resize(size, Image.Resampling.BICUBIC))


def render_still_video(
    image_path: Path,
    track: np.ndarray,
    sample_rate: int,
    output_path: Path,
    *,
    seconds: float,
    fps: float,
    video_codec: str,
    audio_codec: str,
    audio_bitrate: str,
    output_sample_rate: int,
    language: str,
    title: str,
) -> None:
    """Write `output_path`: `seconds` of the image, upright, with `track` (mono) as its default audio stream."""
    image = _upright(image_path)
    if min(image.size) < 2:
        raise MediaError(f"is {image.width}x{image.height} pixels, too small for a video (at least 2x2)")
    even = image.crop((0, 0, image.width // 2 * 2, image.height // 2 * 2))  # 4:2:0 chroma needs even sizes
    suffix = output_path.suffix.lower()
    output = output_path.resolve()
    encoded = {"vcodec": video_codec, "pix_fmt": "yuv420p", "acodec": audio_codec, "audio_bitrate": audio_bitrate}
    encoded |= {"ar": output_sample_rate, "ac": 1, "disposition:a": "default"}
    if video_codec == "libx264":
        encoded["tune"] = "stillimage"
    if suffix in (".mp4", ".mov"):
        encoded["movflags"] = "+faststart"
    names = [option for name in track_names(language, title, suffix) for option in ("-metadata:s:a:0", name)]
    needed = track[: math.ceil(seconds * sample_rate)]  # ffmpeg stops at `seconds`: the rest is not sent
    with tempfile.TemporaryDirectory() as folder:
        frame = Path(folder) / "frame.ppm"  # uncompressed: quick to write and read, and lossless
        even.save(frame)
        picture = ffmpeg.input(str(frame), loop=1, framerate=fps)
        sound = ffmpeg.input("pipe:", format="f32le", ac=1, ar=sample_rate)
        command = ffmpeg.output(picture.video, sound.audio, str(output), t=seconds, **encoded)
        planned = Planned(("video", "audio"), {0: seconds, 1: seconds}, frame_s=1 / fps)
        args = ffmpeg.compile(command, overwrite_output=True)
        run_with_track(args, output, names, needed, "rendering the image", planned)


def _opened(path: Path) -> Image.Image:
    try:
        return Image.open(path)
    except (OSError, SyntaxError) as exc:
        raise _unreadable(exc) from None


def _upright(path: Path) -> Image.Image:
    """The decoded image, turned as its EXIF orientation says it is displayed, in RGB."""
    with _opened(path) as image:
        try:
            return ImageOps.exif_transpose(image).convert("RGB")
        except (OSError, SyntaxError) as exc:  # a truncated or corrupt file fails only when decoded
            raise _unreadable(exc) from None


def _unreadable(exc: Exception) -> MediaError:
    return MediaError(f"cannot read it as an image ({exc}); check that the file is complete and is a JPEG, PNG or WebP")
