"""Stage 2: CLIP embedding -> CLAP audio-space embedding, with the V2A-Mapper (or the zero-shot mapper when no
trained checkpoint is configured).

INPUT  rows with clip_embeddings (n_windows x D_clip); with window.aggregator=learned, frame_embeddings
       (n_windows x K*(D_clip+1)), which the trained temporal aggregator maps instead.
OUTPUT the same rows plus clap_embeddings (n_windows x D_clap, unit length), and for the zero-shot mapper the
       labels it chose for each window, with their weights (window_notes). Fan-out 1:1.

With sound sources on (sources.mode=zero_shot), each window's sources are mapped like its whole picture and mixed
with it (foley.pipeline.sources); each source's label, score, box and weight join the window's notes. With
sources.mode=remixer, the trained source remixer (mapper.checkpoint) takes the picture and the sources together.
The sources' columns end here; with sources.cycle_mix the weighted sources' CLAP embeddings go on to the
Synthesize stage (source_clap_embeddings: n_windows x max_sources*D_clap, zero rows where there is none).

Windows of all videos in the batch are mapped together, max_forward_batch at a time; each window's noise comes
from its own seed, so its result does not depend on which videos share its batch.
"""

from __future__ import annotations

import json

import numpy as np
import torch

from foley.config import FoleyConfig, SourcesConfig
from foley.media.windows import window_seed
from foley.models.device import pick_device
from foley.models.mapping import load_mapper
from foley.models.zero_shot import ZeroShotMapper
from foley.pipeline.attempts import bounded_crashes
from foley.pipeline.columns import EMPTY_MATRIX
from foley.pipeline.rows import batch_of, note_window, rows_of
from foley.pipeline.sources import mix_weights
from foley.pipeline.stage import WindowRef, map_windows, set_torch_threads
from foley.storage.store import Storage


class Map:
    def __init__(self, config: FoleyConfig):
        self.config = config
        self.resources = config.stages.map
        set_torch_threads(self.resources)
        self.device = pick_device(config.device, self.resources)
        self.mapper = load_mapper(config, Storage(config.storage), self.device)
        # With sources.cycle_mix: (row, window) -> its weighted sources in CLAP space, zero-padded to max_sources.
        self.mapped_sources: dict[int, dict[int, np.ndarray]] = {}
        self.parsed_sources: dict[int, list[list[dict]]] = {}  # the batch's rows' window_sources, by row
        self.no_sources = np.zeros(config.sources.max_sources * self.mapper.clap_dim, np.float32)
        # What a window's condition is read from: its mean frame, or each of its frames for the learned aggregator.
        self.learned = config.window.aggregator == "learned"
        self.condition = "frame_embeddings" if self.learned else "clip_embeddings"

    @bounded_crashes("map")
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = rows_of(batch)
        # Each row's sources, parsed once: a window's notes are read per window, and a long video has hundreds.
        self.parsed_sources = {id(row): json.loads(row["window_sources"]) for row in rows if "window_sources" in row}
        map_windows(rows, self.condition, "clap_embeddings", self.resources.max_forward_batch, "map", self.map_windows)
        for row in rows:
            row.pop("frame_embeddings", None)
            row.pop("source_embeddings", None)
            row.pop("window_sources", None)
            if self.config.sources.cycle_mix:
                # Every window of a mapped row gets its sources' row, zeros where it has none (every label excluded, or
                # nothing detected): Cycle Mix then ranks its candidates by the condition alone.
                mapped = self.mapped_sources.pop(id(row), {})
                windows = len(row["clap_embeddings"])
                row["source_clap_embeddings"] = (
                    np.stack([mapped.get(index, self.no_sources) for index in range(windows)])
                    if windows
                    else EMPTY_MATRIX
                )
        return batch_of(rows)

    def map_windows(self, embeddings: list[np.ndarray], windows: list[WindowRef]) -> np.ndarray:
        clip_embeddings = np.stack(embeddings)
        expected = self.mapper.spec.condition_dim if self.learned else self.mapper.clip_dim
        if clip_embeddings.shape[1] != expected:
            raise ValueError(
                f"the mapper expects {expected}-d conditions but the CLIP model and window.frames give "
                f"{clip_embeddings.shape[1]}-d; use a mapper trained for this CLIP model and window.frames"
            )
        generators = [
            torch.Generator(self.device).manual_seed(
                window_seed(self.config.seed, ref.row["relative_path"], ref.video_window, "mapper")
            )
            for ref in windows
        ]
        if isinstance(self.mapper, ZeroShotMapper):  # explainable: the labels each window's sound comes from
            for ref, labels in zip(
                windows, self.mapper.top_labels(torch.from_numpy(clip_embeddings).to(self.device)), strict=True
            ):
                note_window(ref.row, ref.index, labels=labels)
        if self.learned:  # the temporal aggregator: each window's frames and their moments
            return self.mapper_output(clip_embeddings, generators)
        if self.config.sources.mode == "remixer":
            return self.remix(clip_embeddings, windows, generators)
        mapped = self.mapper_output(clip_embeddings, generators)
        if self.config.sources.mode == "zero_shot":
            mapped = self.mix_sources(mapped, windows)
        return mapped

    def remix(self, clip_embeddings: np.ndarray, windows: list[WindowRef], generators) -> np.ndarray:
        """The trained source remixer: each window's picture and its sources (the best first, as many as the
        remixer has slots; an excluded label's slot left empty) in one condition. Its attention weighs them, so a
        source's note has no weight of its own (0 where excluded)."""
        slots, width = self.mapper.spec.max_sources, self.mapper.clip_dim
        conditions = np.zeros((len(windows), (1 + slots) * width), np.float32)
        conditions[:, :width] = clip_embeddings
        for position, ref in enumerate(windows):
            notes = self.parsed_sources[id(ref.row)][ref.index]
            embeddings = np.asarray(ref.row["source_embeddings"][ref.index]).reshape(-1, width)
            exclude = self.sources_of(ref.row).exclude
            for k, note in enumerate(notes):
                excluded = note["label"] in exclude
                note["weight"] = 0.0 if excluded else None
                if k < slots and not excluded:
                    conditions[position, (1 + k) * width : (2 + k) * width] = embeddings[k]
            note_window(ref.row, ref.index, sources=notes)
        return self.mapper_output(conditions, generators)

    def sources_of(self, row: dict) -> SourcesConfig:
        """The job's sources settings with the video's own list-line edits (exclude, boost) on top."""
        edits = str(row.get("source_edits") or "")
        return self.config.sources.model_copy(update=json.loads(edits)) if edits else self.config.sources

    def mapper_output(self, clip_embeddings: np.ndarray, generators: list[torch.Generator]) -> np.ndarray:
        mapped = self.mapper.map(
            torch.from_numpy(clip_embeddings).to(self.device),
            generators,
            steps=self.config.mapper.steps,
            guidance_scale=self.config.mapper.guidance_scale,
            sampler=self.config.mapper.scheduler,
        )
        return mapped.cpu().numpy().astype(np.float32)

    def mix_sources(self, mapped: np.ndarray, windows: list[WindowRef]) -> np.ndarray:
        """Each window's picture mixed with its sound sources in CLAP space, each source mapped like the picture
        (its own seed); a window without a source that weighs anything keeps the picture's embedding."""
        width = self.mapper.clip_dim
        found = []  # (window in chunk, source in window, its CLIP embedding)
        notes = [self.parsed_sources[id(ref.row)][ref.index] for ref in windows]
        for position, ref in enumerate(windows):
            embeddings = np.asarray(ref.row["source_embeddings"][ref.index]).reshape(-1, width)
            found += [(position, k, embeddings[k]) for k in range(len(notes[position]))]
        if not found:
            return mapped
        generators = [
            torch.Generator(self.device).manual_seed(
                window_seed(
                    self.config.seed, str(windows[p].row["relative_path"]), windows[p].video_window, "source", k
                )
            )
            for p, k, _ in found
        ]
        sources = self.mapper_output(np.stack([embedding for *_, embedding in found]), generators)
        mixed = mapped.copy()
        for position, ref in enumerate(windows):
            weights = mix_weights(notes[position], self.sources_of(ref.row))
            for k, note in enumerate(notes[position]):
                note["weight"] = round(weights[1][k], 4) if weights else 0.0
            note_window(ref.row, ref.index, sources=notes[position])
            if weights is None:
                continue
            picture, shares = weights
            rows = [i for i, (p, _, _) in enumerate(found) if p == position]
            total = picture * mapped[position] + np.tensordot(np.asarray(shares, np.float32), sources[rows], axes=1)
            mixed[position] = total / max(float(np.linalg.norm(total)), 1e-12)
            if self.config.sources.cycle_mix:
                weighted = sources[[row for row, share in zip(rows, shares, strict=True) if share > 0]]
                padded = self.no_sources.copy()
                padded[: weighted.size] = weighted.reshape(-1)
                self.mapped_sources.setdefault(id(ref.row), {})[ref.index] = padded
        return mixed
