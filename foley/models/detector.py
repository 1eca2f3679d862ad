"""The sound-source detector: an open-vocabulary OWL-ViT or OWLv2 (transformers), queried with the sound labels.

SSV2A finds sound sources with a detector (YOLOv8 on OpenImages in the paper, the open-vocabulary YOLO-World in
its code); ultralytics is AGPL-3.0, so this project uses Google's OWL detectors instead (Apache-2.0), loaded by
transformers' own loaders from a hub id, a save_pretrained folder or an s3:// prefix. They are open-vocabulary, so
they are asked for exactly the labels the zero-shot mapper mixes (configs/labels/vggsound.txt by default).

The label queries are embedded once per actor; each batch of frames then costs the image tower and the two small
heads (class and box), never the text tower again.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from foley.config import SourcesConfig
from foley.models.weights import local_weights
from foley.models.zero_shot import read_labels
from foley.storage.store import Storage


@dataclass(frozen=True)
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 as shares of the frame's width and height

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


class SourceDetector:
    def __init__(self, model, processor, labels: list[str], config: SourcesConfig, device: torch.device):
        self.model, self.processor, self.labels, self.config, self.device = model, processor, labels, config, device
        text = processor.tokenizer(
            [config.query_template.format(label=label) for label in labels],
            padding="max_length",
            truncation=True,
            max_length=model.config.text_config.max_position_embeddings,
            return_tensors="pt",
        ).to(device)
        with torch.no_grad():
            features = model.base_model.get_text_features(**text)
        self.queries = getattr(features, "pooler_output", features)  # (labels, D)
        # OWLv2 pads a frame to a square at its bottom and right before resizing; OWL-ViT stretches it.
        self.pads_to_square = bool(getattr(processor.image_processor, "do_pad", False))

    @torch.no_grad()
    def detect(self, frames: np.ndarray) -> list[list[Detection]]:
        """(N, H, W, 3) uint8 frames -> each frame's detections, the best first: at least sources.min_score and
        sources.min_area (and never a box of no area), one per label where boxes overlap (sources.nms_iou), at most
        sources.max_sources."""
        from torchvision.ops import batched_nms  # noqa: PLC0415 - imported with the model, on the workers only

        pixels = self.processor.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
        feature_map, _ = self.model.image_embedder(pixel_values=pixels.to(self.device))
        batch, rows, columns, width = feature_map.shape
        features = feature_map.reshape(batch, rows * columns, width)
        queries = self.queries.expand(batch, -1, -1)
        mask = torch.ones(queries.shape[:2], dtype=torch.bool, device=self.device)
        logits, _ = self.model.class_predictor(features, queries, mask)
        scores, labels = logits.sigmoid().max(dim=-1)  # (N, patches): each patch's best label
        boxes = self.frame_boxes(self.model.box_predictor(features, feature_map), frames.shape[1:3])
        detections = []
        for score, label, box in zip(scores, labels, boxes, strict=True):
            area = (box[:, 2] - box[:, 0]) * (box[:, 3] - box[:, 1])
            keep = (score >= self.config.min_score) & (area >= self.config.min_area) & (area > 0)
            score, label, box = score[keep], label[keep], box[keep]
            kept = batched_nms(box, score, label, self.config.nms_iou)[: self.config.max_sources]  # best first
            detections.append(
                [
                    Detection(self.labels[int(label[i])], float(score[i]), tuple(float(v) for v in box[i]))
                    for i in kept
                ]
            )
        return detections

    def frame_boxes(self, centred: torch.Tensor, frame_size: tuple[int, int]) -> torch.Tensor:
        """OWL's (cx, cy, w, h) in the model's square -> (x0, y0, x1, y1) as shares of the frame, clipped to it."""
        height, width = frame_size
        side = max(height, width) if self.pads_to_square else None
        scale = torch.tensor(
            [side / width, side / height] * 2 if side else [1.0] * 4, dtype=centred.dtype, device=centred.device
        )
        cx, cy, w, h = centred.unbind(-1)
        corners = torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], dim=-1)
        return (corners * scale).clamp_(0, 1)


def load_source_detector(config: SourcesConfig, labels_file: str, storage: Storage, device: torch.device):
    """The detector and its processor through transformers' Auto loaders (from_pretrained), weights read from
    safetensors; a hub id is read from the hub cache (HF_HUB_OFFLINE honoured)."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor  # noqa: PLC0415 - ~4 s, workers only

    location = local_weights(config.detector, storage)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(location, use_safetensors=True).to(device).eval()
    if not hasattr(model, "class_predictor"):
        raise ValueError(
            f"sources.detector = {config.detector!r} is a {type(model).__name__}; sound sources need an OWL-ViT or "
            "OWLv2 detector (e.g. google/owlv2-base-patch16-ensemble)"
        )
    return SourceDetector(model, AutoProcessor.from_pretrained(location), read_labels(Path(labels_file)), config, device)
