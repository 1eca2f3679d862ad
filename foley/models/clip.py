"""CLIP (open_clip) as the frame and label encoder: loaded through open_clip's own loader, fed frames decoded small."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from foley.config import ClipConfig
from foley.models.weights import local_weights
from foley.storage.store import Storage


@dataclass
class ClipEncoder:
    """open_clip model plus the preprocessing it expects, applied to uint8 frames already decoded small."""

    model: torch.nn.Module
    image_size: int
    mean: torch.Tensor
    std: torch.Tensor
    device: torch.device
    tokenizer: object

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1] if hasattr(self.model, "text_projection")
                   and self.model.text_projection is not None else self.model.visual.output_dim)

    @torch.no_grad()
    def embed_frames(self, frames: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 with short side >= image_size -> (N, D) unit-length embeddings."""
        frames = np.require(frames, requirements="W")  # torch wants a writable array (a Ray batch's is read-only)
        pixels = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2).float().div_(255)
        height, width = pixels.shape[-2:]
        if min(height, width) != self.image_size:
            scale = self.image_size / min(height, width)
            size = (max(self.image_size, round(height * scale)), max(self.image_size, round(width * scale)))
            pixels = F.interpolate(pixels, size=size, mode="bicubic", align_corners=False).clamp_(0, 1)
        top = (pixels.shape[-2] - self.image_size) // 2
        left = (pixels.shape[-1] - self.image_size) // 2
        pixels = pixels[..., top : top + self.image_size, left : left + self.image_size]
        pixels = (pixels - self.mean) / self.std
        return self.model.encode_image(pixels, normalize=True).float()

    @torch.no_grad()
    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens, normalize=True).float()


def load_clip(config: ClipConfig, storage: Storage, device: torch.device) -> ClipEncoder:
    import open_clip  # noqa: PLC0415 - ~7 s to import: a job's driver imports this module but builds no model

    model_name = config.model
    if model_name.startswith("local-dir:"):
        model_name = "local-dir:" + local_weights(model_name.removeprefix("local-dir:"), storage)
    pretrained = local_weights(config.pretrained, storage) if config.pretrained else None
    if model_name.startswith("local-dir:"):
        pretrained = None  # open_clip reads the weights from the folder itself
    model = open_clip.create_model(model_name, pretrained=pretrained, device=device).eval()
    preprocess = open_clip.get_model_preprocess_cfg(model)
    size = preprocess.get("size", 224)
    shape = (1, 3, 1, 1)
    return ClipEncoder(
        model=model,
        image_size=int(size if isinstance(size, int) else size[0]),
        mean=torch.tensor(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN), device=device).view(shape),
        std=torch.tensor(preprocess.get("std", open_clip.OPENAI_DATASET_STD), device=device).view(shape),
        device=device,
        tokenizer=open_clip.get_tokenizer(model_name),
    )
