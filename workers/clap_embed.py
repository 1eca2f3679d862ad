"""Embed stage 2: each window's own audio -> its CLAP audio embedding (the mapper's training target).

INPUT  rows with windows (from DecodeEmbed, so the windows are exactly the dub job's, shots included).
OUTPUT the same rows plus clap_embeddings (n_windows x D_clap, unit length). Fan-out 1:1.

The audio of each window is decoded with ffmpeg straight at CLAP's rate (48 kHz mono); windows of all videos
in the batch are embedded together, max_forward_batch at a time.
"""

from __future__ import annotations

import numpy as np

from foley.config import FoleyConfig
from foley.models.clap import load_clap_audio_encoder
from foley.models.device import pick_device
from foley.pipeline.attempts import bounded_crashes
from foley.pipeline.rows import batch_of, rows_of
from foley.pipeline.stage import WindowRef, map_window_audio, set_torch_threads
from foley.storage.store import Storage


class ClapEmbed:
    def __init__(self, config: FoleyConfig):
        self.config = config
        self.resources = config.stages.clap_embed
        set_torch_threads(self.resources)
        self.storage = Storage(config.storage)
        self.encoder = load_clap_audio_encoder(config.clap, self.storage, pick_device(config.device, self.resources))

    @bounded_crashes("clap_embed")
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = rows_of(batch)
        sample_rate = self.config.clap.sample_rate
        map_window_audio(rows, self.storage, sample_rate, "clap_embeddings", self.resources, "clap_embed", self.embed)
        return batch_of(rows)

    def embed(self, waveforms: list[np.ndarray], windows: list[WindowRef]) -> np.ndarray:
        return self.encoder.embed(waveforms)
