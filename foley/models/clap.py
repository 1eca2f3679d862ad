"""laion_clap's CLAP audio encoder (the mapper's training targets), loaded with no hub access.

`laion_clap.CLAP_Module` builds its RoBERTa text branch with `RobertaModel.from_pretrained('roberta-base')` and
its tokenizer with `RobertaTokenizer.from_pretrained('roberta-base')`, both hub downloads. Here the text branch
is built from a `RobertaConfig` whose geometry is read off the checkpoint itself (the checkpoint then sets every
weight), and the tokenizer is a local byte-level one, since this project embeds only audio with laion_clap. The
checkpoint is read with `torch.load(weights_only=True)`, not with laion_clap's own loader, which unpickles
arbitrary objects.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from transformers import RobertaConfig, RobertaModel

from foley.config import ClapConfig
from foley.models.tokenizers import byte_level_tokenizer
from foley.models.weights import local_weights
from foley.storage.store import Storage

POSITION_IDS = "text_branch.embeddings.position_ids"


def read_clap_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} is not a laion_clap checkpoint (no state_dict of tensors)")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    state.pop(POSITION_IDS, None)  # a buffer that newer transformers no longer saves
    return state


def text_branch_config(state: dict[str, torch.Tensor]):
    """The RoBERTa geometry a checkpoint's text branch was trained with, read from its weight shapes."""
    vocab_size, hidden = state["text_branch.embeddings.word_embeddings.weight"].shape
    layers = {int(match.group(1)) for key in state
              if (match := re.match(r"text_branch\.encoder\.layer\.(\d+)\.", key))}
    return RobertaConfig(
        vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=len(layers),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state["text_branch.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["text_branch.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["text_branch.embeddings.token_type_embeddings.weight"].shape[0],
        pad_token_id=1, bos_token_id=0, eos_token_id=2, layer_norm_eps=1e-5,
    )


@contextlib.contextmanager
def offline_text_branch(text_config):
    """While laion_clap builds a CLAP_Module: the text branch from `text_config`, a local tokenizer."""
    # laion_clap is imported only when a CLAP module is built: its import builds hub tokenizers (see module doc).
    from laion_clap import hook  # noqa: PLC0415
    from laion_clap.clap_module import model as clap_model  # noqa: PLC0415


    with mock.patch.object(clap_model.RobertaModel, "from_pretrained", lambda *_, **__: RobertaModel(text_config)), \
            mock.patch.object(hook.RobertaTokenizer, "from_pretrained", lambda *_, **__: byte_level_tokenizer()):
        yield


def build_clap_module(config: ClapConfig, text_config, device: torch.device):
    import laion_clap  # noqa: PLC0415 - see offline_text_branch

    with offline_text_branch(text_config):
        return laion_clap.CLAP_Module(enable_fusion=config.enable_fusion, device=device, amodel=config.audio_model,
                                      tmodel="roberta")


class ClapAudioEncoder:
    """Waveforms at the CLAP rate -> unit-length CLAP audio embeddings."""

    def __init__(self, module, config: ClapConfig):
        self.module = module
        self.config = config

    @property
    def embed_dim(self) -> int:
        return int(self.module.model.audio_projection[-1].out_features)

    def centre_crop(self, waveform: np.ndarray) -> np.ndarray:
        """CLAP reads `seconds`; a longer window is cropped around its centre (deterministic, unlike CLAP's own
        random crop); a shorter one is repeat-padded by CLAP."""
        length = round(self.config.seconds * self.config.sample_rate)
        start = max(0, (len(waveform) - length) // 2)
        return waveform[start : start + length]

    @torch.no_grad()
    def embed(self, waveforms: list[np.ndarray]) -> np.ndarray:
        cropped = [self.centre_crop(np.asarray(w, dtype=np.float32)) for w in waveforms]
        return np.asarray(self.module.get_audio_embedding_from_data(cropped, use_tensor=False), dtype=np.float32)


def load_clap_audio_encoder(config: ClapConfig, storage: Storage, device: torch.device) -> ClapAudioEncoder:
    path = Path(local_weights(config.checkpoint, storage))
    if not path.is_file():
        raise FileNotFoundError(f"clap.checkpoint {config.checkpoint}: no such file")
    state = read_clap_checkpoint(path)
    module = build_clap_module(config, text_branch_config(state), device)
    module.model.load_state_dict(state, strict=True)
    module.eval()
    return ClapAudioEncoder(module, config)
