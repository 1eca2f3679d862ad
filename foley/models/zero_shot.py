"""The zero-shot mapper: for users who have public pretrained weights and no trained V2A-Mapper yet.

A window's CLIP embedding is classified zero-shot against a vocabulary of sound-event labels (CLIP text
embeddings of "a photo of {label}"); the top-k softmax weights then mix the CLAP text embeddings of those labels
("the sound of {label}"), taken from AudioLDM's own CLAP text encoder, so the result lives in the space AudioLDM
is conditioned on. It is the paper's vision -> text -> audio baseline: worse than a trained mapper, but it needs
no training data. Both label tables are computed once; mapping is then two small matrix products.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from foley.config import FoleyConfig
from foley.models.audioldm import clap_text_embeddings, load_audioldm_text_encoder
from foley.models.clip import load_clip
from foley.storage.store import Storage


def read_labels(path: Path) -> list[str]:
    labels = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not labels:
        raise ValueError(f"label file {path} holds no labels; give one sound-event label per line")
    return labels


class ZeroShotMapper:
    def __init__(self, labels: list[str], label_image_embeddings: torch.Tensor, label_sound_embeddings: torch.Tensor,
                 top_k: int, temperature: float):
        self.labels = labels
        self.label_image_embeddings = label_image_embeddings  # (labels, clip_dim), unit length
        self.label_sound_embeddings = label_sound_embeddings  # (labels, clap_dim), unit length
        self.top_k = min(top_k, len(labels))
        self.temperature = temperature

    @property
    def clip_dim(self) -> int:
        return self.label_image_embeddings.shape[1]

    @property
    def clap_dim(self) -> int:
        return self.label_sound_embeddings.shape[1]

    def label_weights(self, clip_embeddings: torch.Tensor) -> torch.Tensor:
        """(B, labels): softmax over the top-k labels by cosine similarity, zero elsewhere."""
        similarity = F.normalize(clip_embeddings.float(), dim=-1) @ self.label_image_embeddings.T
        top = similarity.topk(self.top_k, dim=-1)
        weights = torch.zeros_like(similarity)
        return weights.scatter_(1, top.indices, torch.softmax(top.values / self.temperature, dim=-1))

    def top_labels(self, clip_embeddings: torch.Tensor) -> list[list[dict]]:
        """Per window, the labels mixed and their weights, heaviest first: why a window sounds as it does."""
        weights = self.label_weights(clip_embeddings).cpu()
        top = weights.topk(self.top_k, dim=-1)
        return [
            [{"label": self.labels[index], "weight": round(float(weight), 4)} for weight, index in zip(*pair)]
            for pair in zip(top.values.tolist(), top.indices.tolist())
        ]

    @torch.no_grad()
    def map(self, clip_embeddings: torch.Tensor, generators=None, steps=None, guidance_scale=None,
            sampler=None) -> torch.Tensor:
        """Same call as the trained mapper; deterministic, so seeds, steps and guidance do not apply."""
        return F.normalize(self.label_weights(clip_embeddings) @ self.label_sound_embeddings, dim=-1)


def build_zero_shot_mapper(config: FoleyConfig, storage: Storage, device: torch.device) -> ZeroShotMapper:
    settings = config.mapper
    labels = read_labels(Path(settings.zero_shot_labels))
    clip = load_clip(config.clip, storage, device)
    image_embeddings = clip.embed_texts([settings.zero_shot_image_prompt.format(label=label) for label in labels])
    text_encoder, tokenizer = load_audioldm_text_encoder(config.audioldm, storage, device)
    sound_embeddings = clap_text_embeddings(
        text_encoder, tokenizer, [settings.zero_shot_sound_prompt.format(label=label) for label in labels], device)
    return ZeroShotMapper(labels, image_embeddings, sound_embeddings.float(), settings.zero_shot_top_k,
                          settings.zero_shot_temperature)
