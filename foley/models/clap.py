"""AudioLDM's own CLAP (laion_clap's module, both branches), loaded with no hub access and no unpickled code.

AudioLDM is conditioned on the CLAP stored inside its original checkpoint (`cond_stage_model.model.*`, in
laion_clap's layout); diffusers' AudioLDM keeps only its text branch. `convert_audioldm_clap` copies that CLAP once
into a folder (clap.safetensors + clap.json), so that audio embedded here (the mapper's targets, reference sounds,
candidate scores) lies in the space AudioLDM reads. A released laion_clap `.pt` checkpoint still loads too.

`laion_clap.CLAP_Module` builds its RoBERTa text branch with `RobertaModel.from_pretrained('roberta-base')` and
its tokenizer with `RobertaTokenizer.from_pretrained('roberta-base')`, both hub downloads. Here the text branch
is built from a `RobertaConfig` whose geometry is read off the checkpoint itself (the checkpoint then sets every
weight), and the tokenizer is a local byte-level one, since this project embeds only audio with laion_clap.
Checkpoints are read with `torch.load(weights_only=True)`, never with laion_clap's own loader, which unpickles
arbitrary objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import pickle
import re
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from foley.config import ClapConfig
from foley.models.tokenizers import byte_level_tokenizer
from foley.models.weights import local_weights
from foley.storage.store import Storage

POSITION_IDS = "text_branch.embeddings.position_ids"
AUDIOLDM_CLAP_PREFIX = "cond_stage_model.model."
WEIGHTS_FILE, INFO_FILE = "clap.safetensors", "clap.json"
CONVERTED_FORMAT = "laion_clap-state-dict"
CONVERT_COMMAND = "python -m jobs.convert_audioldm_clap"


class RefusedCheckpoint(pickle.UnpicklingError):
    """A file that a weights-only load cannot read. It is never unpickled in full: that could run code in it."""


def load_weights_only(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, KeyError, EOFError) as exc:
        # torch's message goes on to suggest unpickling in full; keep only what blocked the load.
        match = re.search(r"WeightsUnpickler error:\s*([^\n]+?)(?:\. Please use|\n|$)", str(exc))
        reason = match.group(1) if match else f"{type(exc).__name__} {exc}".strip()
        raise RefusedCheckpoint(
            f"{path}: Weights only load failed ({reason}). The file is refused: it is never unpickled in full, "
            "since that could run code hidden in it"
        ) from None


def read_clap_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """A laion_clap checkpoint as LAION releases it ({'state_dict': {'module.*': tensor}})."""
    checkpoint = load_weights_only(path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path} is not a laion_clap checkpoint (no state_dict of tensors)")
    state = {key.removeprefix("module."): value for key, value in state.items()}
    state.pop(POSITION_IDS, None)  # a buffer that newer transformers no longer saves
    return state


def read_audioldm_clap(path: Path) -> dict[str, torch.Tensor]:
    """The CLAP inside an original AudioLDM checkpoint, in laion_clap's layout; its UNet, VAE etc. are left out."""
    checkpoint = load_weights_only(path)
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else {}
    clap = {
        key.removeprefix(AUDIOLDM_CLAP_PREFIX): value
        for key, value in state.items()
        if isinstance(key, str) and key.startswith(AUDIOLDM_CLAP_PREFIX)
    }
    if not clap:
        raise ValueError(f"{path} is not an AudioLDM checkpoint: no {AUDIOLDM_CLAP_PREFIX}* keys")
    clap.pop(POSITION_IDS, None)
    return clap


def convert_audioldm_clap(
    checkpoint: Path, folder: Path, audio_model: str = "HTSAT-tiny", source_name: str | None = None
) -> dict:
    """Write the CLAP of an original AudioLDM checkpoint as `folder`/clap.safetensors + clap.json (returned).
    `source_name`: the checkpoint's name where it came from, if `checkpoint` is a local copy."""
    state = read_audioldm_clap(checkpoint)
    with checkpoint.open("rb") as file:
        sha256 = hashlib.file_digest(file, "sha256").hexdigest()
    info = {
        "format": CONVERTED_FORMAT,
        "audio_model": audio_model,
        "enable_fusion": False,
        "source_checkpoint": source_name or checkpoint.name,
        "source_sha256": sha256,
        "keys": len(state),
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file({key: value.contiguous() for key, value in state.items()}, str(folder / WEIGHTS_FILE))
    (folder / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
    return info


def read_converted_clap(folder: Path, config: ClapConfig) -> dict[str, torch.Tensor]:
    """A folder written by convert_audioldm_clap, holding the CLAP that `config` describes."""
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / INFO_FILE).is_file():
        raise ValueError(
            f"clap.checkpoint {config.checkpoint}: the folder lacks {WEIGHTS_FILE} or {INFO_FILE}; "
            f"make it with `{CONVERT_COMMAND}`"
        )
    info = json.loads((folder / INFO_FILE).read_text())
    if info.get("format") != CONVERTED_FORMAT:
        raise ValueError(
            f"clap.checkpoint {config.checkpoint}: {INFO_FILE} names format {info.get('format')!r}, "
            f"not {CONVERTED_FORMAT!r}"
        )
    for key in ("audio_model", "enable_fusion"):
        if info.get(key) != getattr(config, key):
            raise ValueError(
                f"clap.checkpoint {config.checkpoint} holds a CLAP with {key} {info.get(key)!r}, "
                f"but clap.{key} is {getattr(config, key)!r}"
            )
    return load_file(str(folder / WEIGHTS_FILE))


def read_clap_weights(path: Path, config: ClapConfig) -> dict[str, torch.Tensor]:
    """A folder made by convert_audioldm_clap, or a laion_clap .pt file; anything else is refused unread."""
    if path.is_dir():
        return read_converted_clap(path, config)
    if path.is_file() and path.suffix == ".pt":
        return read_clap_checkpoint(path)
    if not path.exists():
        raise FileNotFoundError(f"clap.checkpoint {config.checkpoint}: no such file or folder")
    raise ValueError(
        f"clap.checkpoint {config.checkpoint} is neither a folder made by `{CONVERT_COMMAND}` "
        f"({WEIGHTS_FILE} + {INFO_FILE}) nor a laion_clap .pt file"
    )


def text_branch_config(state: dict[str, torch.Tensor]):
    """The RoBERTa geometry a checkpoint's text branch was trained with, read from its weight shapes."""
    from transformers import RobertaConfig  # noqa: PLC0415 - see offline_text_branch

    vocab_size, hidden = state["text_branch.embeddings.word_embeddings.weight"].shape
    layers = {int(match.group(1)) for key in state if (match := re.match(r"text_branch\.encoder\.layer\.(\d+)\.", key))}
    return RobertaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=max(1, hidden // 64),
        intermediate_size=state["text_branch.encoder.layer.0.intermediate.dense.weight"].shape[0],
        max_position_embeddings=state["text_branch.embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=state["text_branch.embeddings.token_type_embeddings.weight"].shape[0],
        pad_token_id=1,
        bos_token_id=0,
        eos_token_id=2,
        layer_norm_eps=1e-5,
    )


@contextlib.contextmanager
def offline_text_branch(text_config):
    """While laion_clap builds a CLAP_Module: the text branch from `text_config`, a local tokenizer."""
    # laion_clap is imported only when a CLAP module is built: its import builds hub tokenizers (see module doc).
    # transformers' models too (~4 s): a job's driver imports this module with its stages and builds no model.
    with warnings.catch_warnings():
        # Known and harmless, printed on every load: laion_clap imports timm's old module path, and its HTSAT
        # builds the Swin attention grid with torch.meshgrid's default indexing, the one it means.
        warnings.filterwarnings("ignore", "Importing from timm.models.layers is deprecated", FutureWarning)
        warnings.filterwarnings("ignore", "torch.meshgrid: in an upcoming release", UserWarning)
        import transformers  # noqa: PLC0415
        from transformers import RobertaModel  # noqa: PLC0415

        # laion_clap's import builds BERT, RoBERTa and BART tokenizers for its training code, which this project
        # never runs: without HF_HUB_OFFLINE=1 each one retries the hub for minutes on a machine without it.
        local_tokenizer = lambda *_, **__: byte_level_tokenizer()  # noqa: E731
        with (
            mock.patch.object(transformers.BertTokenizer, "from_pretrained", local_tokenizer),
            mock.patch.object(transformers.RobertaTokenizer, "from_pretrained", local_tokenizer),
            mock.patch.object(transformers.BartTokenizer, "from_pretrained", local_tokenizer),
            mock.patch.object(transformers.RobertaModel, "from_pretrained", lambda *_, **__: RobertaModel(text_config)),
        ):
            import laion_clap  # noqa: PLC0415, F401 - imported here, under these patches, the first time

            yield


def build_clap_module(config: ClapConfig, text_config, device: torch.device):
    with offline_text_branch(text_config):
        import laion_clap  # noqa: PLC0415 - see offline_text_branch (which also quiets its import)

        return laion_clap.CLAP_Module(
            enable_fusion=config.enable_fusion, device=device, amodel=config.audio_model, tmodel="roberta"
        )


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
    state = read_clap_weights(Path(local_weights(config.checkpoint, storage)), config)
    module = build_clap_module(config, text_branch_config(state), device)
    module.model.load_state_dict(state, strict=True)
    module.eval()
    return ClapAudioEncoder(module, config)
