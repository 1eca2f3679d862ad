"""AudioLDM (diffusers' UNet, VAE and schedulers; transformers' vocoder) and its CLAP text encoder, loaded through
diffusers' and transformers' own loaders."""

from __future__ import annotations

import math

import numpy as np
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


class AudioLDM:
    """AudioLDM from diffusers' maintained parts: its UNet, VAE and scheduler, and its vocoder, CLAP text encoder
    and tokenizer from transformers, each loaded from its subfolder of the `save_pretrained` folder or hub id
    (diffusers' AudioLDMPipeline, which read the same folders, is deprecated). generate() is its denoising loop,
    conditioned, as AudioLDM is, on a CLAP embedding in the UNet's class embedding."""

    def __init__(self, config: AudioLDMConfig, storage: Storage, device: torch.device):
        from diffusers import AutoencoderKL, DDIMScheduler, DPMSolverMultistepScheduler  # noqa: PLC0415
        from diffusers import UNet2DConditionModel  # noqa: PLC0415
        from diffusers.models.attention_processor import AttnProcessor  # noqa: PLC0415
        from transformers import SpeechT5HifiGan  # noqa: PLC0415

        quiet_hf_loading()
        location = local_weights(config.model, storage)
        dtype = DTYPES[config.dtype] if device.type == "cuda" else torch.float32  # reduced precision on GPU only
        # safetensors only: a pickled .bin could run code as it loads
        weights = {"use_safetensors": True, "dtype": dtype, **_revision(config)}
        self.unet = UNet2DConditionModel.from_pretrained(location, subfolder="unet", **weights).to(device).eval()
        self.vae = AutoencoderKL.from_pretrained(location, subfolder="vae", **weights).to(device).eval()
        self.vocoder = SpeechT5HifiGan.from_pretrained(location, subfolder="vocoder", **weights).to(device).eval()
        self.text_encoder, self.tokenizer = load_audioldm_text_encoder(config, storage, device, dtype)
        if config.scheduler == "dpmsolver++":
            self.scheduler = DPMSolverMultistepScheduler.from_pretrained(
                location, subfolder="scheduler", algorithm_type="dpmsolver++", **_revision(config)
            )
        else:
            self.scheduler = DDIMScheduler.from_pretrained(location, subfolder="scheduler", **_revision(config))
        if config.attention == "classic":
            self.unet.set_attn_processor(AttnProcessor())
        self.device, self.dtype = device, dtype
        self.sample_rate = int(self.vocoder.config.sampling_rate)
        self.vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def condition_dim(self) -> int:
        return int(self.unet.config.projection_class_embeddings_input_dim)

    @torch.no_grad()
    def generate(
        self,
        conditions: torch.Tensor,
        negatives: torch.Tensor,
        steps: int,
        guidance_scale: float,
        seconds: float,
        generators: list[torch.Generator],
    ) -> np.ndarray:
        """One waveform per condition (unit CLAP embeddings, with the negative prompt's as the unconditional
        branch of classifier-free guidance), each from the noise its own generator draws: (batch, samples)."""
        from diffusers.utils.torch_utils import randn_tensor  # noqa: PLC0415

        seconds_per_mel_frame = np.prod(self.vocoder.config.upsample_rates) / self.sample_rate
        frames = math.ceil(int(seconds / seconds_per_mel_frame) / self.vae_scale) * self.vae_scale
        shape = (
            len(conditions),
            self.unet.config.in_channels,
            frames // self.vae_scale,
            int(self.vocoder.config.model_in_dim) // self.vae_scale,
        )
        guided = guidance_scale > 1.0
        embeddings = torch.cat([negatives, conditions]) if guided else conditions
        embeddings = embeddings.to(self.device, self.dtype)
        self.scheduler.set_timesteps(steps, device=self.device)
        latents = randn_tensor(shape, generator=generators, device=self.device, dtype=self.dtype)
        latents = latents * self.scheduler.init_noise_sigma
        for timestep in self.scheduler.timesteps:
            both = self.scheduler.scale_model_input(torch.cat([latents] * 2) if guided else latents, timestep)
            noise = self.unet(both, timestep, encoder_hidden_states=None, class_labels=embeddings).sample
            if guided:
                unconditional, conditional = noise.chunk(2)
                noise = unconditional + guidance_scale * (conditional - unconditional)
            latents = self.scheduler.step(noise, timestep, latents).prev_sample
        mel = self.vae.decode(1 / self.vae.config.scaling_factor * latents).sample
        waveforms = self.vocoder(mel.squeeze(1)).cpu().float()
        return waveforms[:, : int(seconds * self.sample_rate)].numpy()


def load_audioldm_text_encoder(
    config: AudioLDMConfig, storage: Storage, device: torch.device, dtype: torch.dtype = torch.float32
):
    """Only AudioLDM's CLAP text encoder and tokenizer (subfolders of its folder), not the whole model."""
    from transformers import AutoTokenizer, ClapTextModelWithProjection  # noqa: PLC0415

    quiet_hf_loading()
    location = local_weights(config.model, storage)
    text_encoder = ClapTextModelWithProjection.from_pretrained(
        location, subfolder="text_encoder", use_safetensors=True, dtype=dtype, **_revision(config)
    )
    tokenizer = AutoTokenizer.from_pretrained(location, subfolder="tokenizer", **_revision(config))
    return text_encoder.to(device).eval(), tokenizer
