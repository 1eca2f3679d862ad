"""AudioLDM (diffusers) and its CLAP text encoder, loaded through diffusers' and transformers' own loaders."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from foley.config import AudioLDMConfig
from foley.models.device import DTYPES
from foley.models.weights import local_weights
from foley.storage.store import Storage


@torch.no_grad()
def clap_text_embeddings(text_encoder, tokenizer, texts: list[str], device: torch.device) -> torch.Tensor:
    """AudioLDM's CLAP text embeddings (unit length), computed the way its pipeline does for a prompt."""
    tokens = tokenizer(texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                       return_tensors="pt").to(device)
    output = text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)
    return F.normalize(output.text_embeds, dim=-1)


def quiet_hf_loading() -> None:
    """Keep worker logs to our own progress lines (no per-file loading bars or deprecation chatter)."""
    # diffusers and transformers are imported where a model is built (~5 s): a job's driver imports this module
    # with its stages, and builds no model.
    import diffusers  # noqa: PLC0415
    import transformers  # noqa: PLC0415

    for library in (diffusers, transformers):
        library.utils.logging.set_verbosity_error()
        library.utils.logging.disable_progress_bar()


def _revision(config: AudioLDMConfig) -> dict:
    """The hub commit to load: pinned in the config, or pinned by the job to what `main` resolved to."""
    return {"revision": config.revision} if config.revision else {}


def load_audioldm(config: AudioLDMConfig, storage: Storage, device: torch.device):
    """diffusers AudioLDMPipeline with the configured scheduler and dtype (reduced precision on GPU only)."""
    from diffusers import AudioLDMPipeline, DDIMScheduler, DPMSolverMultistepScheduler  # noqa: PLC0415
    from diffusers.models.attention_processor import AttnProcessor  # noqa: PLC0415

    quiet_hf_loading()
    dtype = DTYPES[config.dtype] if device.type == "cuda" else torch.float32
    pipeline = AudioLDMPipeline.from_pretrained(
        local_weights(config.model, storage), dtype=dtype, use_safetensors=True, **_revision(config)
    )  # safetensors only: a pickled .bin could run code as it loads
    if config.scheduler == "dpmsolver++":
        pipeline.scheduler = DPMSolverMultistepScheduler.from_config(pipeline.scheduler.config,
                                                                     algorithm_type="dpmsolver++")
    else:
        pipeline.scheduler = DDIMScheduler.from_config(pipeline.scheduler.config)
    if config.attention == "classic":
        pipeline.unet.set_attn_processor(AttnProcessor())
    pipeline.set_progress_bar_config(disable=True)
    return pipeline.to(device)


def load_audioldm_text_encoder(config: AudioLDMConfig, storage: Storage, device: torch.device):
    """Only AudioLDM's CLAP text encoder and tokenizer (subfolders of the pipeline), not the whole pipeline."""
    from transformers import AutoTokenizer, ClapTextModelWithProjection  # noqa: PLC0415

    quiet_hf_loading()
    location = local_weights(config.model, storage)
    text_encoder = ClapTextModelWithProjection.from_pretrained(
        location, subfolder="text_encoder", use_safetensors=True, **_revision(config)
    )
    tokenizer = AutoTokenizer.from_pretrained(location, subfolder="tokenizer", **_revision(config))
    return text_encoder.to(device).eval(), tokenizer
