"""Decoding the sampled frames of a video's windows with torchcodec (the system's FFmpeg).

torchcodec returns the frame on screen at each sample moment, found by the frames' own timestamps (so a
variable-frame-rate video is sampled at the right moments), turned as it is displayed. By default it decodes only
those frames, scaled in the decoder so that the short side is CLIP's input size; decode.frames=all and
decode.size=native are the slow ways, kept switchable so that the benchmark can measure the difference.

torchcodec is imported only where a decoder is opened: its ops pull in torch._dynamo, about 3 s a driver need not
pay.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from foley.config import DecodeConfig
from foley.media.mux import copy_video_stream
from foley.media.probe import MediaError, VideoInfo
from foley.media.windows import Window, sample_times

# torchcodec floors a moment to its stream's time base, so float error can move a moment that falls on a frame's
# start (a 10.24-s window at 25 fps is 256 frames) into the frame before; a microsecond later it is that frame.
ON_A_FRAMES_START_S = 1e-6
SEEKABLE_COPIES = "seekable"  # under the node cache: video streams copied into a container torchcodec seeks in


@dataclass(frozen=True)
class FrameDecoder:
    """The K sampled frames of each window, as (windows * K, H, W, 3) uint8 arrays, upright."""

    settings: DecodeConfig
    short_side: int  # CLIP's input size: frames are scaled so, in the decoder, under decode.size=clip
    frames_per_window: int  # window.frames
    max_frames: int  # frames per array yielded: whole windows, at least one
    threads: int  # FFmpeg's decoding threads
    device: object  # torch.device the frames are decoded on (cuda: NVDEC)
    cache_dir: Path  # this node's cache, for the seekable copies

    def window_frames(self, path: Path, info: VideoInfo, windows: list[Window]) -> Iterator[np.ndarray]:
        """The sampled frames of `windows`, for as many whole windows at a time as max_frames allows."""
        with self.seekable_decoder(path, info) as decoder:
            yield from self.decode_with(decoder, info, windows)

    @contextlib.contextmanager
    def seekable_decoder(self, path: Path, info: VideoInfo):
        """A decoder that can seek to the video's first frame: of the file itself, or, where torchcodec cannot seek
        in it (MPEG-TS with B-frames, whose first frame is shown after it is decoded), of a copy of its video
        stream in Matroska with every timestamp kept, made in this node's cache and removed after."""
        decoder = self.open(path, info)
        try:
            decoder.get_frames_played_at([decoder.metadata.begin_stream_seconds or 0.0])
        except (RuntimeError, ValueError, IndexError):
            copies = self.cache_dir / SEEKABLE_COPIES
            copies.mkdir(parents=True, exist_ok=True)
            handle, name = tempfile.mkstemp(suffix=".mkv", prefix=f"{path.stem[:100]}.", dir=copies)
            os.close(handle)
            copy = Path(name)
            try:
                copy_video_stream(path, copy, info.video_index)
                yield self.open(copy, info)
            finally:
                copy.unlink(missing_ok=True)
            return
        yield decoder

    def decode_with(self, decoder, info: VideoInfo, windows: list[Window]) -> Iterator[np.ndarray]:
        begin = decoder.metadata.begin_stream_seconds or 0.0
        end = decoder.metadata.end_stream_seconds or begin + info.duration_s
        last_moment = np.nextafter(end, begin)  # the last frame plays until `end`, exclusive
        per_window = self.frames_per_window
        windows_per_array = max(1, self.max_frames // per_window)
        for first in range(0, len(windows), windows_per_array):
            group = windows[first : first + windows_per_array]
            relative = [t for window in group for t in sample_times(window.start_s, window.end_s, per_window)]
            moments = np.clip(begin + np.asarray(relative) + ON_A_FRAMES_START_S, begin, last_moment).tolist()
            try:
                if self.settings.frames == "all":  # every frame of the span, then the sampled ones
                    stop = min(max(moments) + ON_A_FRAMES_START_S, end)  # the last sampled frame included
                    span = decoder.get_frames_played_in_range(min(moments), stop)
                    on_screen = np.searchsorted(span.pts_seconds.numpy(), moments, side="right") - 1
                    frames = span.data.cpu().numpy()[np.clip(on_screen, 0, len(span.pts_seconds) - 1)]
                else:
                    frames = decoder.get_frames_played_at(moments).data.cpu().numpy()
            except (RuntimeError, ValueError, IndexError) as exc:
                raise MediaError(
                    f"its {info.video_codec} video stream could not be decoded ({_first_line(exc)}); the file may be "
                    "truncated or corrupt"
                ) from None
            yield frames

    def open(self, path: Path, info: VideoInfo):
        """A torchcodec decoder; with decode.size=clip it scales in the decoder so the short side is CLIP's input
        size, in the orientation displayed (torchcodec turns the frames before scaling)."""
        from torchcodec.decoders import VideoDecoder  # noqa: PLC0415 - see the module's docstring
        from torchcodec.transforms import Resize  # noqa: PLC0415 - as above

        transforms = []
        if self.settings.size == "clip":
            size = self.short_side
            scale = size / min(info.width, info.height)
            transforms = [Resize((max(size, round(info.height * scale)), max(size, round(info.width * scale))))]
        try:
            decoder = VideoDecoder(
                str(path),
                dimension_order="NHWC",
                num_ffmpeg_threads=self.threads,
                transforms=transforms,
                device=self.device,
            )
        except (RuntimeError, ValueError) as exc:
            raise MediaError(
                f"its {info.video_codec} video stream cannot be read ({_first_line(exc)}); re-encode it (e.g. to "
                "H.264) or check that the file is complete"
            ) from None
        if not decoder.metadata.num_frames:
            raise MediaError("its video stream holds no decodable frames; check that the file is complete")
        return decoder


def decoder_identity(on_gpu: bool) -> str:
    """torchcodec's version and the FFmpeg libraries it loaded, e.g. 'torchcodec 0.17.0, FFmpeg 5.1.9 ...', and
    NVDEC where it decodes on the GPU (FFmpeg then parses the container, the GPU decodes)."""
    import torchcodec  # noqa: PLC0415 - see the module's docstring
    from torchcodec._core import get_ffmpeg_library_versions  # noqa: PLC0415 - the only place it reports them

    versions = get_ffmpeg_library_versions()
    codec = ".".join(map(str, versions["libavcodec"]))
    where = ", NVDEC on the GPU" if on_gpu else ""
    return (
        f"torchcodec {torchcodec.__version__.split('+')[0]}, FFmpeg {versions['ffmpeg_version']} (libavcodec {codec})"
        + where
    )


def _first_line(exc: Exception) -> str:
    """As foley.pipeline.rows.first_line, which this layer may not import (media sits below the pipeline)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
