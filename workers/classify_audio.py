"""Evaluation stage: each window's audio -> the audio classifier's logits and embedding (jobs.evaluate).

INPUT  rows with windows (one per video and role, generated or reference; jobs.evaluate.window_row).
OUTPUT the same rows plus classifier_outputs (n_windows x (classes + embedding width)): per window the PANNs
       CNN14 logits, then its embedding, which jobs.evaluate turns into FD_PANNs, KL_PANNs, IS_PANNs and SSMS.
       Fan-out 1:1.

The audio of each window is decoded with ffmpeg straight at the classifier's rate (16 kHz); windows of all videos in
the batch are classified together, max_forward_batch at a time.
"""

from __future__ import annotations

import numpy as np

from foley.config import FoleyConfig
from foley.models.device import pick_device
from foley.models.panns import AudioClassifier
from foley.pipeline.attempts import bounded_crashes
from foley.pipeline.rows import batch_of, rows_of
from foley.pipeline.stage import WindowRef, map_window_audio, set_torch_threads
from foley.storage.store import Storage


class ClassifyAudio:
    def __init__(self, config: FoleyConfig):
        self.settings = config.evaluation.classifier
        self.resources = config.stages.classify_audio
        set_torch_threads(self.resources)
        self.storage = Storage(config.storage)
        self.classifier = AudioClassifier(self.settings, self.storage, pick_device(config.device, self.resources))

    @bounded_crashes("classify_audio")
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = rows_of(batch)
        sample_rate = self.settings.sample_rate
        target = "classifier_outputs"
        map_window_audio(rows, self.storage, sample_rate, target, self.resources, "classify_audio", self.classify)
        return batch_of(rows)

    def classify(self, waveforms: list[np.ndarray], windows: list[WindowRef]) -> np.ndarray:
        return self.classifier.classify(waveforms)
