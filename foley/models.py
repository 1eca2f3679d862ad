"""Loading the pretrained models through their own loaders, from a hub id, a local path or an s3:// prefix.

s3:// weights are copied once per node into the cache folder and then loaded like local ones.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from foley.config import AudioLDMConfig, ClipConfig, FoleyConfig, MapperConfig
from foley.storage import Storage, is_s3, split_s3

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if setting == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda was configured but this worker has no CUDA device; use device=auto or cpu")
    return torch.device(setting)


def local_weights(location: str, storage: Storage) -> str:
    """The location itself; for s3:// a node-local copy of that prefix or file; for hf://REPO/FILE the hub's
    cached copy of that file (the hub cache honours HF_HUB_OFFLINE)."""
    if location.startswith("hf://"):
        from huggingface_hub import hf_hub_download

        owner, repo, filename = location.removeprefix("hf://").split("/", 2)
        return hf_hub_download(f"{owner}/{repo}", filename)
    if not is_s3(location):
        return location
    folder_uri, names = location, ()
    if Path(split_s3(location)[1]).suffix:  # a single file such as .../open_clip_model.safetensors
        folder_uri, names = location.rsplit("/", 1)[0], (location.rsplit("/", 1)[1],)
    folder = _cached_copy(folder_uri, names, storage)
    return str(folder / names[0]) if names else str(folder)


def _cached_copy(folder_uri: str, names: tuple[str, ...], storage: Storage) -> Path:
    digest = hashlib.sha256(f"{folder_uri}|{names}".encode()).hexdigest()[:16]
    return storage.fetch_tree(folder_uri, Path(storage.config.cache_dir) / "weights" / digest, names)


def missing_weights(config: FoleyConfig) -> list[str]:
    """Local weight locations the config names that are not there, so a job fails before starting Ray."""
    problems = []
    clip_dir = config.clip.model.removeprefix("local-dir:") if config.clip.model.startswith("local-dir:") else None
    local = {
        "clip.model": clip_dir,
        "clip.pretrained": config.clip.pretrained if config.clip.pretrained and Path(config.clip.pretrained).suffix
        else None,
        "mapper.checkpoint": config.mapper.checkpoint,
    }
    for key, location in local.items():
        if location and not is_s3(location) and not Path(location).exists():
            problems.append(f"{key} = {location!r}: no such file or folder")
    return problems


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
    import open_clip

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


@torch.no_grad()
def clap_text_embeddings(text_encoder, tokenizer, texts: list[str], device: torch.device) -> torch.Tensor:
    """AudioLDM's CLAP text embeddings (unit length), computed the way its pipeline does for a prompt."""
    tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt").to(device)
    output = text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)
    return F.normalize(output.text_embeds, dim=-1)


def quiet_hf_loading() -> None:
    """Keep worker logs to our own progress lines (no per-file loading bars or deprecation chatter)."""
    import diffusers
    import transformers

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()


def load_audioldm(config: AudioLDMConfig, storage: Storage, device: torch.device):
    """diffusers AudioLDMPipeline with the configured scheduler and dtype (reduced precision on GPU only)."""
    from diffusers import AudioLDMPipeline, DDIMScheduler, DPMSolverMultistepScheduler

    quiet_hf_loading()
    dtype = DTYPES[config.dtype] if device.type == "cuda" else torch.float32
    pipeline = AudioLDMPipeline.from_pretrained(local_weights(config.model, storage), dtype=dtype)
    if config.scheduler == "dpmsolver++":
        pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config,
                                                                     algorithm_type="dpmsolver++")
    else:
        pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    if config.attention == "classic":
        from diffusers.models.attention_processor import AttnProcessor

        pipeline.unet.set_attn_processor(AttnProcessor())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def load_audioldm_text_encoder(config: AudioLDMConfig, storage: Storage, device: torch.device):
    """Only AudioLDM's CLAP text encoder and tokenizer (subfolders of the pipeline), not the whole pipeline."""
    from transformers import AutoTokenizer, ClapTextModelWithProjection

    quiet_hf_loading()
    location = local_weights(config.model, storage)
    text_encoder = ClapTextModelWithProjection.from_pretrained(location, subfolder="text_encoder").to(device).eval()
    return text_encoder, AutoTokenizer.from_pretrained(location, subfolder="tokenizer")


def load_mapper(config: FoleyConfig, storage: Storage, device: torch.device):
    """The trained V2A-Mapper the config names, or the zero-shot mapper when it names none."""
    if config.mapper.checkpoint is None:
        from foley.zero_shot import build_zero_shot_mapper

        return build_zero_shot_mapper(config, storage, device)
    return load_v2a_mapper(config.mapper, storage, device)


def load_v2a_mapper(config: MapperConfig, storage: Storage, device: torch.device):
    """The trained mapper from a folder, a .safetensors file (its .json beside it) or the s3:// equivalents."""
    from foley.mapper import CONFIG_NAME, WEIGHTS_NAME, load_mapper

    location = config.checkpoint
    if location is None:
        raise ValueError("mapper.checkpoint is not set")
    if is_s3(location):
        if location.endswith(".safetensors"):
            folder_uri, weights = location.rsplit("/", 1)
            names = (weights, weights.removesuffix(".safetensors") + ".json")
        else:
            folder_uri, names = location.rstrip("/"), (WEIGHTS_NAME, CONFIG_NAME)
        return load_mapper(_cached_copy(folder_uri, names, storage) / names[0], device)
    return load_mapper(Path(location), device)
