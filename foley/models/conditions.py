"""Conditions composed in CLAP space, where what a video shows, a text and a sound can be mixed (SSV2A).

A window's condition is the normalised weighted sum of unit embeddings: the mapper's output (what it shows),
AudioLDM's CLAP text embedding of the prompt, and AudioLDM's CLAP audio embedding of a reference sound. The
negative prompt's text embedding replaces the empty text in the unconditional branch of classifier-free guidance.
Texts and reference sounds recur across videos and windows, so each is embedded once per actor.
"""

from __future__ import annotations

import numpy as np
import torch

from foley.config import ConditionsConfig
from foley.media.probe import decode_audio
from foley.models.audioldm import clap_text_embeddings
from foley.models.clap import ClapAudioEncoder
from foley.storage.store import Storage


def normalised(vector: np.ndarray) -> np.ndarray:
    return (vector / max(float(np.linalg.norm(vector)), np.finfo(np.float32).tiny)).astype(np.float32)


class Conditioner:
    def __init__(
        self,
        text_encoder,
        tokenizer,
        device: torch.device,
        storage: Storage,
        audio_encoder: ClapAudioEncoder | None,
        max_reference_seconds: float,
    ):
        """`audio_encoder`: AudioLDM's CLAP audio branch, needed only for reference sounds."""
        self.text_encoder, self.tokenizer, self.device = text_encoder, tokenizer, device
        self.storage, self.audio_encoder = storage, audio_encoder
        self.max_reference_seconds = max_reference_seconds
        self.texts: dict[str, np.ndarray] = {}
        self.references: dict[str, np.ndarray] = {}

    def text(self, text: str) -> np.ndarray:
        if text not in self.texts:
            embedding = clap_text_embeddings(self.text_encoder, self.tokenizer, [text], self.device)
            self.texts[text] = embedding[0].float().cpu().numpy()
        return self.texts[text]

    def reference(self, uri: str) -> np.ndarray:
        """The CLAP audio embedding of a reference sound (its centre, as CLAP reads it)."""
        if uri not in self.references:
            if self.audio_encoder is None:
                raise RuntimeError("a reference sound needs AudioLDM's CLAP audio encoder, which this actor lacks")
            path = self.storage.fetch(uri, self.storage.identity(uri))
            samples = decode_audio(path, 0.0, self.max_reference_seconds, self.audio_encoder.config.sample_rate)
            self.references[uri] = self.audio_encoder.embed([samples])[0]
        return self.references[uri]

    def compose(self, visual: np.ndarray, conditions: ConditionsConfig, fraction: float) -> tuple[np.ndarray, dict]:
        """The window's condition, `fraction` of the way through its video, and the weight of each part."""
        weights = conditions.weights_at(fraction)
        if len(weights) == 1:  # what the video shows, alone: its own direction, as the mapper made it
            return np.asarray(visual, dtype=np.float32), weights
        parts = {"visual": visual}
        if conditions.prompt:
            parts["prompt"] = self.text(conditions.prompt)
        if conditions.reference_audio:
            parts["reference"] = self.reference(conditions.reference_audio)
        mix = sum(np.float32(weights[name]) * np.asarray(part, dtype=np.float32) for name, part in parts.items())
        return normalised(mix), weights
