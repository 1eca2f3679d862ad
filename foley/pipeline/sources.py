"""Sound sources of a window (SSV2A): detections tracked across its frames, and their weights in the CLAP-space mix.

A window's sources come from `sources.frames` of its sampled frames. A detection in one frame is the same source as
one in an earlier frame when both have the same label and their boxes overlap by at least `sources.track_iou`
(greedy, best scores first), so a dog seen in both frames is one source whose crop embeddings are averaged, and two
dogs side by side stay two. A source's score is its detections' scores summed over the window's frames and divided
by their count: a source seen in one frame of two counts half.

Without a trained remixer (sources.mode=zero_shot), each source is mapped to CLAP space like the whole picture and
mixed with it: the picture keeps `sources.global_weight`, and the sources share the rest in proportion to score x
box area x `sources.boost[label]`; an `exclude`d label weighs 0. A window whose sources all weigh 0 (or that has
none) keeps the picture's embedding exactly, as with sources off.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from foley.config import SourcesConfig
from foley.models.detector import Detection


@dataclass
class Source:
    label: str
    boxes: list[tuple[float, ...]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    embeddings: list[np.ndarray] = field(default_factory=list)

    def note(self, frames: int) -> dict:
        box = np.mean(self.boxes, axis=0)
        return {
            "label": self.label,
            "score": round(sum(self.scores) / frames, 4),
            "box": [round(float(v), 4) for v in box],
            "frames": len(self.scores),
        }

    def embedding(self) -> np.ndarray:
        mean = np.mean(self.embeddings, axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-12)).astype(np.float32)


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    width = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def track_sources(
    frames: list[list[tuple[Detection, np.ndarray]]], config: SourcesConfig
) -> tuple[list[dict], np.ndarray]:
    """One window's frames, each a list of (detection, crop embedding) best first -> its sources' notes (label,
    score, box, frames seen) and their embeddings (sources x D), the best `max_sources`, best first."""
    sources: list[Source] = []
    for detections in frames:
        taken: set[int] = set()
        for detection, embedding in detections:
            overlaps = [
                (iou(source.boxes[-1], detection.box), index)
                for index, source in enumerate(sources)
                if source.label == detection.label and index not in taken
            ]
            best, index = max(overlaps, default=(0.0, -1))
            if best < config.track_iou:
                sources.append(Source(detection.label))
                index = len(sources) - 1
            taken.add(index)
            sources[index].boxes.append(detection.box)
            sources[index].scores.append(detection.score)
            sources[index].embeddings.append(embedding)
    notes = [source.note(len(frames)) for source in sources]
    order = sorted(range(len(sources)), key=lambda i: -notes[i]["score"])[: config.max_sources]
    embeddings = [sources[i].embedding() for i in order]
    return [notes[i] for i in order], np.stack(embeddings) if embeddings else np.zeros((0, 0), np.float32)


def mix_weights(notes: list[dict], config: SourcesConfig) -> tuple[float, list[float]] | None:
    """(the picture's weight, each source's weight), summing to 1; None when no source weighs anything."""
    shares = []
    for note in notes:
        x0, y0, x1, y1 = note["box"]
        boost = 0.0 if note["label"] in config.exclude else config.boost.get(note["label"], 1.0)
        shares.append(note["score"] * (x1 - x0) * (y1 - y0) * boost)
    total = sum(shares)
    if total <= 0:
        return None
    rest = 1.0 - config.global_weight
    return config.global_weight, [rest * share / total for share in shares]


class SourceFinder:
    """SSV2A's sound sources of windows, from their sampled frames: detected in sources.frames of each window's K
    frames (evenly spread), each box cropped and CLIP-embedded, tracked across those frames (track_sources)."""

    def __init__(self, detector, clip, settings: SourcesConfig, max_forward_batch: int):
        self.detector, self.clip, self.settings, self.step = detector, clip, settings, max_forward_batch

    def __call__(self, windows: np.ndarray) -> list[tuple[list[dict], np.ndarray]]:
        """(windows, K, H, W, 3) sampled frames -> each window's sources: their notes and crop embeddings."""
        chosen = np.unique(np.linspace(0, windows.shape[1] - 1, self.settings.frames).round().astype(int))
        frames = windows[:, chosen].reshape(-1, *windows.shape[2:])
        detections = [
            found
            for first in range(0, len(frames), self.step)
            for found in self.detector.detect(frames[first : first + self.step])
        ]
        crops = [
            self.crop(frame, detection.box)
            for frame, found in zip(frames, detections, strict=True)
            for detection in found
        ]
        crop_embeddings = iter(self.embed_crops(crops))
        per_frame = [[(detection, next(crop_embeddings)) for detection in found] for found in detections]
        return [
            track_sources(per_frame[window * len(chosen) : (window + 1) * len(chosen)], self.settings)
            for window in range(len(windows))
        ]

    def crop(self, frame: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
        """A box of a frame, scaled to CLIP's square input (a box of any shape fills it, as SSV2A crops)."""
        height, width = frame.shape[:2]
        x0, x1 = sorted((min(int(box[0] * width), width - 1), max(int(round(box[2] * width)), 1)))
        y0, y1 = sorted((min(int(box[1] * height), height - 1), max(int(round(box[3] * height)), 1)))
        pixels = torch.from_numpy(np.ascontiguousarray(frame[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]))
        size = self.clip.image_size
        resized = F.interpolate(pixels.permute(2, 0, 1)[None].float(), size=(size, size), mode="bilinear")
        return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        embedded = [
            self.clip.embed_frames(np.stack(crops[first : first + self.step])).cpu().numpy()
            for first in range(0, len(crops), self.step)
        ]
        return np.concatenate(embedded).astype(np.float32) if embedded else np.zeros((0, 0), np.float32)
