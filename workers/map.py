"""Stage 2: CLIP embedding -> CLAP audio-space embedding, with the V2A-Mapper (or the zero-shot mapper when no
trained checkpoint is configured).

INPUT  rows with clip_embeddings (n_windows x D_clip).
OUTPUT the same rows plus clap_embeddings (n_windows x D_clap, unit length), and for the zero-shot mapper the
       labels it chose for each window, with their weights (window_notes). Fan-out 1:1.

Windows of all videos in the batch are mapped together, max_forward_batch at a time; each window's noise comes
from its own seed, so its result does not depend on which videos share its batch.
"""

from __future__ import annotations

import numpy as np
import torch

from foley.config import FoleyConfig
from foley.media.windows import window_seed
from foley.models.device import pick_device
from foley.models.mapping import load_mapper
from foley.models.zero_shot import ZeroShotMapper
from foley.pipeline.rows import batch_of, note_window, rows_of
from foley.pipeline.stage import WindowRef, map_windows, set_torch_threads
from foley.storage.store import Storage


class Map:
    def __init__(self, config: FoleyConfig):
        self.config = config
        self.resources = config.stages.map
        set_torch_threads(self.resources)
        self.device = pick_device(config.device, self.resources)
        self.mapper = load_mapper(config, Storage(config.storage), self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = rows_of(batch)
        map_windows(
            rows, "clip_embeddings", "clap_embeddings", self.resources.max_forward_batch, "map", self.map_windows
        )
        return batch_of(rows)

    def map_windows(self, embeddings: list[np.ndarray], windows: list[WindowRef]) -> np.ndarray:
        clip_embeddings = np.stack(embeddings)
        if clip_embeddings.shape[1] != self.mapper.clip_dim:
            raise ValueError(
                f"the mapper expects {self.mapper.clip_dim}-d CLIP embeddings but the CLIP model "
                f"gives {clip_embeddings.shape[1]}-d; use a mapper trained for this CLIP model"
            )
        generators = [
            torch.Generator(self.device).manual_seed(
                window_seed(self.config.seed, str(ref.row["relative_path"]), ref.video_window, "mapper")
            )
            for ref in windows
        ]
        if isinstance(self.mapper, ZeroShotMapper):  # explainable: the labels each window's sound comes from
            for ref, labels in zip(
                windows, self.mapper.top_labels(torch.from_numpy(clip_embeddings).to(self.device)), strict=True
            ):
                note_window(ref.row, ref.index, labels=labels)
        mapped = self.mapper.map(
            torch.from_numpy(clip_embeddings).to(self.device),
            generators,
            steps=self.config.mapper.steps,
            guidance_scale=self.config.mapper.guidance_scale,
            sampler=self.config.mapper.scheduler,
        )
        return mapped.cpu().numpy().astype(np.float32)
