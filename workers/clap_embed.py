"""Embed stage 2: each window's own audio -> its CLAP audio embedding (the mapper's training target).

INPUT  rows with windows (from DecodeEmbed, so the windows are exactly the dub job's, shots included).
OUTPUT the same rows plus clap_embeddings (n_windows x D_clap, unit length). Fan-out 1:1.

The audio of each window is decoded with ffmpeg straight at CLAP's rate (48 kHz mono); windows of all videos
in the batch are embedded together, max_forward_batch at a time.
"""

from __future__ import annotations

import numpy as np

from foley.config import FoleyConfig
from foley.media.probe import decode_audio
from foley.models.clap import load_clap_audio_encoder
from foley.models.device import pick_device
from foley.pipeline.rows import batch_of, fail, is_pending, row_windows, rows_of
from foley.pipeline.stage import WindowRef, local_input, map_windows, set_torch_threads
from foley.storage.store import Storage


class ClapEmbed:
    def __init__(self, config: FoleyConfig):
        self.config = config
        self.resources = config.stages.clap_embed
        set_torch_threads(self.resources)
        self.storage = Storage(config.storage)
        self.encoder = load_clap_audio_encoder(config.clap, self.storage, pick_device(config.device, self.resources))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = rows_of(batch)
        for row in rows:
            if is_pending(row):
                try:
                    row["window_audio"] = self.window_audio(row)
                except Exception as exc:  # noqa: BLE001 - one bad video becomes a failed row, never a failed job
                    fail(row, "clap", exc)
        map_windows(
            rows, "window_audio", "clap_embeddings", self.resources.max_forward_batch, "clap_embed", self.embed_windows
        )
        for row in rows:
            row.pop("window_audio", None)  # raw audio never leaves the actor
        return batch_of(rows)

    def window_audio(self, row: dict) -> np.ndarray:
        """(n_windows,) object array of each window's samples at CLAP's rate."""
        path = local_input(row, self.storage)
        windows = row_windows(row)
        audio = np.empty(len(windows), dtype=object)
        audio[:] = [
            decode_audio(path, window.start_s, window.end_s - window.start_s, self.config.clap.sample_rate)
            for window in windows
        ]
        return audio

    def embed_windows(self, waveforms: list[np.ndarray], windows: list[WindowRef]) -> np.ndarray:
        return self.encoder.embed(waveforms)
