"""The pictures of each video in the report, made by the stages that hold what they show: the poster frames by the
decode stage (from the frames it decodes for CLIP anyway), the spectrogram by the Mux stage (from the track in its
memory). Neither decodes anything again. They sit under `<output>/_foley/report/media/<result id>/`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

from foley.config import ReportConfig
from foley.pipeline.layout import REPORT_DIR
from foley.storage.store import Storage
from foley.storage.uris import join

POSTERS, SPECTROGRAM = "posters.jpg", "spectrogram.png"


def media_uri(output_root: str, result_id: str) -> str:
    return join(output_root, f"{REPORT_DIR}/media/{result_id}")


def chosen_posters(count: int, most: int) -> list[int]:
    """Which windows get a poster: all, or `most` spread evenly over the video."""
    shown = min(count, most)
    return sorted({round(i * (count - 1) / max(shown - 1, 1)) for i in range(shown)})


def poster_strip(frames: list[np.ndarray], settings: ReportConfig, boxes: list[list] | None = None) -> bytes:
    """One JPEG of the frames side by side, each scaled to the poster height, with each frame's sound-source
    `boxes` (x0, y0, x1, y1 as shares of the frame, the best first) outlined in settings.source_colors in turn:
    the report's window table lists the sources in the same order."""
    height = settings.poster_height
    scaled = [
        Image.fromarray(frame).resize((max(1, round(frame.shape[1] * height / frame.shape[0])), height))
        for frame in frames
    ]
    for image, frame_boxes in zip(scaled, boxes or [], strict=False):
        draw = ImageDraw.Draw(image)
        for rank, (x0, y0, x1, y1) in reversed(list(enumerate(frame_boxes))):  # the best drawn last, on top
            colour = settings.source_colors[rank % len(settings.source_colors)]
            corners = (x0 * (image.width - 1), y0 * (height - 1), x1 * (image.width - 1), y1 * (height - 1))
            draw.rectangle(corners, outline=colour, width=settings.source_line_width)
    strip = Image.new("RGB", (sum(image.width for image in scaled), height))
    left = 0
    for image in scaled:
        strip.paste(image, (left, 0))
        left += image.width
    sink = io.BytesIO()
    # 4:4:4: chroma at full resolution, so a box outline two pixels wide keeps its colour
    strip.save(sink, format="JPEG", quality=settings.jpeg_quality, optimize=True, subsampling=0)
    return sink.getvalue()


def keep_posters(
    storage: Storage, report_uri: str, frames: list[np.ndarray], settings: ReportConfig, boxes: list[list] | None
) -> None:
    """The decode stage's poster strip of a video, written where the report finds it (nothing without frames, or
    with the report off: no `report_uri`)."""
    if frames and report_uri:
        storage.write_bytes(join(report_uri, POSTERS), poster_strip(frames, settings, boxes))
