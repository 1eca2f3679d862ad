"""The pictures of each video in the report, made by the stages that hold what they show: the poster frames by the
decode stage (from the frames it decodes for CLIP anyway), the spectrogram by the Mux stage (from the track in its
memory). Neither decodes anything again. They sit under `<output>/_foley/report/media/<result id>/`.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from foley.config import ReportConfig
from foley.pipeline.layout import REPORT_DIR
from foley.storage.uris import join

POSTERS, SPECTROGRAM = "posters.jpg", "spectrogram.png"


def media_uri(output_root: str, result_id: str) -> str:
    return join(output_root, f"{REPORT_DIR}/media/{result_id}")


def chosen_posters(count: int, most: int) -> list[int]:
    """Which windows get a poster: all, or `most` spread evenly over the video."""
    shown = min(count, most)
    return sorted({round(i * (count - 1) / max(shown - 1, 1)) for i in range(shown)})


def poster_strip(frames: list[np.ndarray], settings: ReportConfig) -> bytes:
    """One JPEG of the frames side by side, each scaled to the poster height."""
    height = settings.poster_height
    scaled = [
        Image.fromarray(frame).resize((max(1, round(frame.shape[1] * height / frame.shape[0])), height))
        for frame in frames
    ]
    strip = Image.new("RGB", (sum(image.width for image in scaled), height))
    left = 0
    for image in scaled:
        strip.paste(image, (left, 0))
        left += image.width
    sink = io.BytesIO()
    strip.save(sink, format="JPEG", quality=settings.jpeg_quality, optimize=True)
    return sink.getvalue()
