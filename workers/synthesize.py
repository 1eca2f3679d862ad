"""Stage 3: CLAP embedding + the video's conditions -> waveform, with AudioLDM.

INPUT  rows with clap_embeddings (n_windows x D_clap) and conditions (JSON, foley.pipeline.conditions).
OUTPUT the same rows, their clap_embeddings now the conditions AudioLDM read (composed), plus waveforms
       (windows x samples, float32 at sample_rate; windows x candidates x samples,
       best first, when output.alternates keeps the runners-up), the actor that made them, and per window the
       weight of each condition and the candidates' scores (window_notes). Fan-out 1:1.

Each window's condition is composed in CLAP space (foley.models.conditions): what the video shows, a prompt, a
reference sound. The negative prompt's CLAP text embedding is the unconditional branch of classifier-free
guidance ("" by default, as in the original). With audioldm.candidates = N, every window is generated N times
in one forward pass, each with its own seed, and AudioLDM's own CLAP audio encoder (clap.checkpoint), on this
actor's device, scores each sample by its cosine with the window's condition; the best is kept (with
sources.cycle_mix, the one whose cosines to the window's sound sources spread least: SSV2A's Cycle Mix). Windows of all
videos in the batch are generated together, one generator per sample, so each sample depends only on its seed.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch
from scipy.signal import resample_poly

from foley.config import ConditionsConfig, FoleyConfig
from foley.media.windows import window_seed
from foley.models.audioldm import AudioLDM
from foley.models.clap import load_clap_audio_encoder
from foley.models.conditions import Conditioner
from foley.models.device import pick_device
from foley.pipeline.attempts import bounded_crashes
from foley.pipeline.rows import batch_of, is_pending, note_window, row_windows, rows_of
from foley.pipeline.stage import WindowRef, map_windows, set_torch_threads, this_worker
from foley.storage.store import Storage


class Synthesize:
    def __init__(self, config: FoleyConfig, own_references: bool = False):
        """`own_references`: some videos name a reference sound of their own (in the input list). AudioLDM's CLAP
        audio encoder is loaded when candidates are ranked or reference sounds embedded."""
        self.config = config
        self.resources = config.stages.synthesize
        set_torch_threads(self.resources)
        self.device = pick_device(config.device, self.resources)
        storage = Storage(config.storage)
        self.audioldm = AudioLDM(config.audioldm, storage, self.device)
        self.sample_rate = self.audioldm.sample_rate
        self.worker = this_worker()
        needs_clap = config.uses_clap() or own_references
        self.clap = load_clap_audio_encoder(config.clap, storage, self.device) if needs_clap else None
        self.composed: dict[tuple[int, int], np.ndarray] = {}  # (row, window) -> the condition AudioLDM read
        self.conditioner = Conditioner(
            self.audioldm.text_encoder,
            self.audioldm.tokenizer,
            self.device,
            storage,
            self.clap,
            max_reference_seconds=config.input.max_duration_s,
        )

    @bounded_crashes("synthesize")
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = rows_of(batch)
        self.composed.clear()
        map_windows(
            rows,
            "clap_embeddings",
            "waveforms",
            self.resources.max_forward_batch,
            "synthesize",
            self.synthesize_windows,
        )
        for row in rows:
            row["sample_rate"] = self.sample_rate
            row["synthesize_worker"] = self.worker
            if is_pending(row) and len(row["waveforms"]):  # jobs.evaluate scores the sound against what was asked
                row["clap_embeddings"] = np.stack([self.composed[id(row), i] for i in range(len(row["waveforms"]))])
        return batch_of(rows)

    def synthesize_windows(self, embeddings: list[np.ndarray], windows: list[WindowRef]) -> np.ndarray:
        expected = self.audioldm.condition_dim
        if embeddings[0].shape[0] != expected:
            raise ValueError(
                f"AudioLDM expects {expected}-d CLAP embeddings but the mapper gives "
                f"{embeddings[0].shape[0]}-d; use a mapper trained for this AudioLDM"
            )
        conditions, negatives = [], []
        for visual, ref in zip(embeddings, windows, strict=True):
            video = ConditionsConfig.model_validate(json.loads(ref.row["conditions"] or "{}"))
            condition, weights = self.conditioner.compose(visual, video, progress(ref) if video.fades else 0.0)
            conditions.append(condition)
            self.composed[id(ref.row), ref.index] = condition
            negatives.append(self.conditioner.text(video.negative_prompt))
            if len(weights) > 1:
                note_window(ref.row, ref.index, weights={name: round(w, 4) for name, w in weights.items()})
        samples = self.generate(np.stack(conditions), np.stack(negatives), windows)  # (windows, candidates, samples)
        if samples.shape[1] == 1:
            return samples[:, 0]
        heard = self.embed_audio(samples)  # (windows, candidates, D_clap)
        scores = np.einsum("wcd,wd->wc", heard, np.stack(conditions))
        if self.config.sources.cycle_mix:
            spreads = self.spreads(heard, windows)
            ranks = np.stack([np.lexsort((-score, spread)) for score, spread in zip(scores, spreads, strict=True)])
            for ref, window_spreads in zip(windows, spreads, strict=True):
                note_window(ref.row, ref.index, spreads=[round(float(s), 4) for s in window_spreads])
        else:
            ranks = np.argsort(-scores, axis=1, kind="stable")
        for ref, window_scores, order in zip(windows, scores, ranks, strict=True):
            note_window(ref.row, ref.index, scores=[round(float(s), 4) for s in window_scores], kept=int(order[0]))
        ranked = np.take_along_axis(samples, ranks[:, :, None], axis=1)
        return ranked if self.config.output.alternates else ranked[:, 0]

    def generate(self, conditions: np.ndarray, negatives: np.ndarray, windows: list[WindowRef]) -> np.ndarray:
        """Every window's candidates in one forward pass: (windows, candidates, samples)."""
        candidates = self.config.audioldm.candidates
        generators = [
            torch.Generator(self.device).manual_seed(
                window_seed(self.config.seed, ref.row["relative_path"], ref.video_window, "audioldm", sample)
            )
            for ref in windows
            for sample in range(candidates)
        ]
        audio = self.audioldm.generate(
            torch.from_numpy(np.repeat(conditions, candidates, axis=0)),
            torch.from_numpy(np.repeat(negatives, candidates, axis=0)),
            self.config.audioldm.steps,
            self.config.audioldm.guidance_scale,
            self.config.window.seconds,
            generators,
        )
        return audio.reshape(len(windows), candidates, -1)

    def embed_audio(self, samples: np.ndarray) -> np.ndarray:
        """(windows, candidates, samples) -> each sample's CLAP audio embedding (windows, candidates, D_clap)."""
        rate = self.config.clap.sample_rate
        common = math.gcd(rate, self.sample_rate)
        at_clap_rate = resample_poly(
            samples.reshape(-1, samples.shape[-1]), rate // common, self.sample_rate // common, axis=-1
        ).astype(np.float32)
        return self.clap.embed(list(at_clap_rate)).reshape(*samples.shape[:2], -1)

    def spreads(self, heard: np.ndarray, windows: list[WindowRef]) -> np.ndarray:
        """(windows, candidates): SSV2A's Cycle Mix measure, the standard deviation of a candidate's cosines to the
        window's weighted sources in CLAP space; the candidate that voices every source alike spreads least. A
        window with fewer than two sources spreads 0 everywhere, so its condition's score decides."""
        spreads = np.zeros(heard.shape[:2], np.float32)
        for position, ref in enumerate(windows):
            sources = np.asarray(ref.row["source_clap_embeddings"][ref.index]).reshape(-1, heard.shape[-1])
            sources = sources[np.abs(sources).sum(axis=1) > 0]
            if len(sources) > 1:
                spreads[position] = (heard[position] @ sources.T).std(axis=1)
        return spreads


def progress(ref: WindowRef) -> float:
    """How far through its video the window's centre lies (0 to 1): where a fading prompt stands."""
    window = row_windows(ref.row)[ref.video_window]
    duration = ref.row["duration_s"]
    return min(max((window.start_s + window.end_s) / 2 / duration, 0.0), 1.0) if duration > 0 else 0.0
