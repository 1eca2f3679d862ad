"""The V2A-Mapper: CLIP image embedding -> CLAP audio embedding.

The paper's default is a DALL-E-2-style diffusion prior that predicts the clean target (x0) with a cosine noise
schedule and classifier-free guidance; it is built from diffusers parts (PriorTransformer, DDIM/DDPM schedulers).
The variants the paper compares (diffusion MLP, regression MLP, regression transformer) share the same interface,
checkpoint format (mapper.safetensors + mapper.json) and loaders, so the dub job runs whichever one it is given.

SSV2A's Sound Source Remixer is one more variant ("source-remixer"): its condition is a window's whole picture and
its sound sources' crops (`max_sources` CLIP embeddings after the global one, zero rows for none), and it is
trained and loaded like the others. So is SSV2A's learned temporal aggregation ("temporal-aggregator"): its
condition is each of a window's `frames` CLIP embeddings followed by its moment in the window, in place of their mean.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, PriorTransformer
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save
from torch import nn

from foley.config import MapperVariant
from foley.models.weights import CONFIG_NAME, WEIGHTS_NAME



@dataclass(frozen=True)
class MapperSpec:
    """Architecture of a mapper; stored beside its weights as mapper.json."""

    variant: MapperVariant = "diffusion-transformer"
    clip_dim: int = 512
    clap_dim: int = 512
    depth: int = 12
    heads: int = 12
    head_dim: int = 64
    mlp_expansion: int = 4
    dropout: float = 0.0
    train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # the cosine schedule
    # Unit-length embeddings enter scaled by sqrt(dim) so their entries have unit variance, as noise does.
    embedding_scale: float | None = None
    max_sources: int = 0  # source-remixer: the source slots after the global embedding
    kl_weight: float = 0.0  # source-remixer, temporal-aggregator: the variational heads' KL term in the loss
    frames: int = 0  # temporal-aggregator: the frames of a window it reads

    @property
    def condition_dim(self) -> int:
        """The width of what map() takes: one CLIP embedding, the remixer's global one and its source slots, or
        the aggregator's frames, each an embedding and its moment."""
        return self.frames * (self.clip_dim + 1) if self.frames else self.clip_dim * (1 + self.max_sources)

    @property
    def is_diffusion(self) -> bool:
        return self.variant.startswith("diffusion")

    @property
    def scale(self) -> float:
        return self.embedding_scale or math.sqrt(self.clap_dim)


class MLPDenoiser(nn.Module):
    """x0 = MLP([noisy, condition, time embedding]): the paper's 'diffusion MLP' variant."""

    def __init__(self, spec: MapperSpec):
        super().__init__()
        hidden = spec.clap_dim * spec.mlp_expansion
        self.time_proj = Timesteps(spec.clap_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(spec.clap_dim, spec.clap_dim)
        layers: list[nn.Module] = [nn.Linear(spec.clap_dim * 2 + spec.clip_dim, hidden), nn.GELU()]
        for _ in range(max(spec.depth - 1, 0)):
            layers += [nn.Dropout(spec.dropout), nn.Linear(hidden, hidden), nn.GELU()]
        layers.append(nn.Linear(hidden, spec.clap_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        time = self.time_embedding(self.time_proj(timesteps).to(noisy.dtype))
        return self.net(torch.cat([noisy, condition, time], dim=-1))


class RegressionMLP(nn.Module):
    def __init__(self, spec: MapperSpec):
        super().__init__()
        hidden = spec.clap_dim * spec.mlp_expansion
        layers: list[nn.Module] = [nn.Linear(spec.clip_dim, hidden), nn.GELU()]
        for _ in range(max(spec.depth - 1, 0)):
            layers += [nn.Dropout(spec.dropout), nn.Linear(hidden, hidden), nn.GELU()]
        layers.append(nn.Linear(hidden, spec.clap_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        return self.net(condition)


class RegressionTransformer(nn.Module):
    """Tokens [condition, learned output token] through diffusers transformer blocks; the output token is read."""

    def __init__(self, spec: MapperSpec):
        super().__init__()
        inner = spec.heads * spec.head_dim
        self.proj_in = nn.Linear(spec.clip_dim, inner)
        self.output_token = nn.Parameter(torch.zeros(1, 1, inner))
        self.positional = nn.Parameter(torch.zeros(1, 2, inner))
        self.blocks = nn.ModuleList(
            BasicTransformerBlock(
                inner, spec.heads, spec.head_dim, dropout=spec.dropout, activation_fn="gelu", attention_bias=True
            )
            for _ in range(spec.depth)
        )
        self.norm_out = nn.LayerNorm(inner)
        self.proj_out = nn.Linear(inner, spec.clap_dim)

    def forward(self, condition: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.proj_in(condition)[:, None], self.output_token.expand(len(condition), -1, -1)], 1)
        hidden = tokens + self.positional
        for block in self.blocks:
            hidden = block(hidden)
        return self.proj_out(self.norm_out(hidden[:, -1]))


class LinearAttention(nn.Module):
    """Efficient attention (Katharopoulos et al. 2020, as SSV2A's remixer uses): softmax(QK^T)V replaced by
    phi(Q)(phi(K)^T V) with phi = elu + 1, linear in the number of tokens; masked tokens are left out."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, count, width = tokens.shape
        q, k, v = (
            part.view(batch, count, self.heads, -1).transpose(1, 2) for part in self.qkv(tokens).chunk(3, dim=-1)
        )
        q, k = F.elu(q) + 1, (F.elu(k) + 1) * mask[:, None, :, None]
        context = torch.einsum("bhtd,bhte->bhde", k, v)
        normaliser = 1 / (torch.einsum("bhtd,bhd->bht", q, k.sum(dim=2)) + 1e-6)
        mixed = torch.einsum("bhtd,bhde,bht->bhte", q, context, normaliser)
        return self.out(mixed.transpose(1, 2).reshape(batch, count, width))


class RemixerBlock(nn.Module):
    def __init__(self, width: int, heads: int, expansion: int, dropout: float):
        super().__init__()
        self.norm_attention, self.norm_mlp = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = LinearAttention(width, heads)
        self.mlp = nn.Sequential(
            nn.Linear(width, width * expansion), nn.GELU(), nn.Dropout(dropout), nn.Linear(width * expansion, width)
        )

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        tokens = tokens + self.attention(self.norm_attention(tokens), mask)
        return tokens + self.mlp(self.norm_mlp(tokens))


class VariationalMixer(nn.Module):
    """What SSV2A's remixer and temporal aggregator share: efficient-attention blocks over two prediction tokens and
    the tokens they are given, whose outputs are a Gaussian over the CLAP embedding (mean, log-variance)."""

    def build_mixer(self, spec: MapperSpec, width: int) -> None:
        self.prediction = nn.Parameter(torch.randn(2, width) * 0.02)  # mean, log-variance
        self.blocks = nn.ModuleList(
            RemixerBlock(width, spec.heads, spec.mlp_expansion, spec.dropout) for _ in range(spec.depth)
        )
        self.norm_out = nn.LayerNorm(width)
        self.mean_head, self.log_variance_head = nn.Linear(width, spec.clap_dim), nn.Linear(width, spec.clap_dim)

    def mix(self, tokens: torch.Tensor, present: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, width) tokens, (B, T) which of them are there -> (mean, log-variance), each (B, clap_dim)."""
        batch = len(tokens)
        tokens = torch.cat([self.prediction.expand(batch, -1, -1), tokens], dim=1)
        mask = torch.cat([torch.ones(batch, 2, dtype=torch.bool, device=tokens.device), present], dim=1)
        for block in self.blocks:
            tokens = block(tokens, mask.to(tokens.dtype))
        tokens = self.norm_out(tokens)
        return self.mean_head(tokens[:, 0]), self.log_variance_head(tokens[:, 1])


class SourceRemixer(VariationalMixer):
    """SSV2A's Sound Source Remixer: the global CLIP embedding and each source's are projected onto a learned
    cross-modal sound-source manifold (one MLP for all), then efficient-attention blocks over [mean token, variance
    token, global, sources] mix them; the two prediction tokens give a Gaussian over the CLAP embedding."""

    def __init__(self, spec: MapperSpec):
        super().__init__()
        width = spec.heads * spec.head_dim
        self.clip_dim, self.max_sources = spec.clip_dim, spec.max_sources
        self.manifold = nn.Sequential(nn.Linear(spec.clip_dim, width), nn.GELU(), nn.Linear(width, width))
        self.kind = nn.Parameter(torch.zeros(2, width))  # global, source
        self.build_mixer(spec, width)

    def forward(self, condition: torch.Tensor, keep_sources: torch.Tensor | None = None):
        """(B, (1 + max_sources) * clip_dim) -> (mean, log-variance), each (B, clap_dim). A zero source row is no
        source; `keep_sources` (B, max_sources) mutes sources in training (SSV2A's guidance by muting)."""
        batch = len(condition)
        parts = condition.view(batch, 1 + self.max_sources, self.clip_dim)
        present = parts[:, 1:].abs().sum(dim=-1) > 0
        if keep_sources is not None:
            present = present & keep_sources
        embedded = self.manifold(F.normalize(parts, dim=-1)) + torch.cat(
            [self.kind[:1].expand(1, -1), self.kind[1:].expand(self.max_sources, -1)]
        )
        return self.mix(embedded, torch.cat([torch.ones_like(present[:, :1]), present], dim=1))


MOMENT_SCALE = 1000.0  # a frame's moment (0..1) spread over the sinusoids' range as diffusion timesteps 0..1000 are


class TemporalAggregator(VariationalMixer):
    """SSV2A's learned temporal aggregation: a window's frames' CLIP embeddings, each plus a sinusoidal embedding
    of its moment in the window, go through efficient-attention blocks (SSV2A: one) after two prediction tokens,
    which give a Gaussian over the window's CLAP embedding; unlike the mean, it can tell when something appears."""

    def __init__(self, spec: MapperSpec):
        super().__init__()
        width = spec.heads * spec.head_dim
        self.clip_dim, self.frames = spec.clip_dim, spec.frames
        self.project = nn.Linear(spec.clip_dim, width)
        self.moment = Timesteps(width, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.build_mixer(spec, width)

    def forward(self, condition: torch.Tensor, keep: torch.Tensor | None = None):
        """(B, frames * (clip_dim + 1)) -> (mean, log-variance), each (B, clap_dim). A frame's moment is its time
        into the window over the window's length (0 to 1); a zero embedding is no frame (a window cut short)."""
        batch = len(condition)
        parts = condition.view(batch, self.frames, self.clip_dim + 1)
        embeddings, moments = parts[..., :-1], parts[..., -1]
        present = embeddings.abs().sum(dim=-1) > 0
        timing = self.moment(moments.reshape(-1) * MOMENT_SCALE).view(batch, self.frames, -1).to(embeddings.dtype)
        return self.mix(self.project(F.normalize(embeddings, dim=-1)) + timing, present)


def _build_network(spec: MapperSpec) -> nn.Module:
    if spec.variant == "diffusion-transformer":
        # Tokens: visual condition, timestep, noisy audio embedding, learned output ("prd") token; full attention.
        return PriorTransformer(
            num_attention_heads=spec.heads,
            attention_head_dim=spec.head_dim,
            num_layers=spec.depth,
            embedding_dim=spec.clap_dim,
            embedding_proj_dim=spec.clip_dim,
            clip_embed_dim=spec.clap_dim,
            num_embeddings=0,
            additional_embeddings=4,
            encoder_hid_proj_type=None,
            added_emb_type="prd",
            norm_in_type="layer",
            dropout=spec.dropout,
        )
    if spec.variant == "diffusion-mlp":
        return MLPDenoiser(spec)
    if spec.variant == "regression-mlp":
        return RegressionMLP(spec)
    if spec.variant == "regression-transformer":
        return RegressionTransformer(spec)
    if spec.variant == "source-remixer":
        return SourceRemixer(spec)
    if spec.variant == "temporal-aggregator":
        return TemporalAggregator(spec)
    raise ValueError(f"unknown mapper variant {spec.variant!r}")


class V2AMapper(nn.Module):
    def __init__(self, spec: MapperSpec):
        super().__init__()
        self.spec = spec
        self.network = _build_network(spec)

    @property
    def clip_dim(self) -> int:
        return self.spec.clip_dim

    @property
    def clap_dim(self) -> int:
        return self.spec.clap_dim

    # -- the network's view: scaled embeddings --------------------------------------------------------------
    def predict_clean(self, noisy: torch.Tensor, timesteps: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """Diffusion variants: the clean (scaled) audio embedding from a noisy one at `timesteps`."""
        if isinstance(self.network, PriorTransformer):
            return self.network(noisy, timesteps, proj_embedding=condition).predicted_image_embedding
        return self.network(noisy, timesteps, condition)

    def noise_schedule(self, sampler: Literal["ddim", "ddpm"] = "ddim"):
        common = dict(
            num_train_timesteps=self.spec.train_timesteps,
            beta_schedule=self.spec.beta_schedule,
            prediction_type="sample",
            clip_sample=False,
            timestep_spacing="trailing",
        )
        if sampler == "ddim":
            return DDIMScheduler(set_alpha_to_one=True, **common)
        return DDPMScheduler(variance_type="fixed_small", **common)

    def forward(
        self,
        condition: torch.Tensor,
        target: torch.Tensor,
        condition_dropout: float,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """The training loss (forward, so data-parallel wrappers see it): MSE to the clean (scaled) target, with
        conditions dropped with probability `condition_dropout` for classifier-free guidance."""
        if isinstance(self.network, VariationalMixer):
            return self.variational_loss(condition, target, condition_dropout, generator)
        condition = F.normalize(condition, dim=-1) * self.spec.scale
        target = F.normalize(target, dim=-1) * self.spec.scale
        if not self.spec.is_diffusion:
            return F.mse_loss(self.network(condition), target)
        schedule = self.noise_schedule("ddpm")
        device = target.device
        timesteps = torch.randint(0, self.spec.train_timesteps, (len(target),), generator=generator, device="cpu").to(
            device
        )
        noise = torch.randn(target.shape, generator=generator, device="cpu").to(device)
        noisy = schedule.add_noise(target, noise, timesteps)
        keep = (torch.rand(len(target), 1, generator=generator, device="cpu") >= condition_dropout).to(device)
        return F.mse_loss(self.predict_clean(noisy, timesteps, condition * keep), target)

    def variational_loss(
        self, condition: torch.Tensor, target: torch.Tensor, mute: float, generator: torch.Generator | None
    ) -> torch.Tensor:
        """SSV2A's objective: (1 - cos)^2 between a sample of the predicted Gaussian and the target, plus the KL
        term of the variational heads; the remixer's sources are each muted with probability `mute`."""
        device = target.device
        keep = None
        if self.spec.max_sources:
            keep = torch.rand(len(target), self.spec.max_sources, generator=generator, device="cpu") >= mute
            keep = keep.to(device)
        mean, log_variance = self.network(condition, keep)
        noise = torch.randn(mean.shape, generator=generator, device="cpu").to(device)
        sample = mean + noise * torch.exp(0.5 * log_variance)
        cosine = F.cosine_similarity(sample, target, dim=-1)
        kl = -0.5 * (1 + log_variance - mean.pow(2) - log_variance.exp()).mean()
        return (1 - cosine).pow(2).mean() + self.spec.kl_weight * kl

    # -- the user's view: unit-length embeddings ------------------------------------------------------------
    @torch.no_grad()
    def map(
        self,
        clip_embeddings: torch.Tensor,
        generators: list[torch.Generator],
        steps: int,
        guidance_scale: float,
        sampler: Literal["ddim", "ddpm"] = "ddim",
    ) -> torch.Tensor:
        """Unit-length CLIP embeddings (B, clip_dim) -> unit-length CLAP embeddings (B, clap_dim).

        One generator per row makes every row's sample depend only on its own seed, not on the batch around it.
        The source remixer and the temporal aggregator take (B, condition_dim) and give their Gaussian's mean (they
        draw no noise).
        """
        if isinstance(self.network, VariationalMixer):
            mean, _ = self.network(clip_embeddings.to(self._dtype()))
            return F.normalize(mean.float(), dim=-1)
        condition = F.normalize(clip_embeddings.float(), dim=-1).to(self._dtype()) * self.spec.scale
        if not self.spec.is_diffusion:
            return F.normalize(self.network(condition).float(), dim=-1)
        schedule = self.noise_schedule(sampler)
        schedule.set_timesteps(steps, device=condition.device)
        sample = torch.stack(
            [torch.randn(self.spec.clap_dim, generator=g, device=g.device, dtype=torch.float32) for g in generators]
        ).to(condition.device, self._dtype())
        null = torch.zeros_like(condition)
        for t in schedule.timesteps:
            timesteps = t.expand(2 * len(sample)).to(condition.device)
            unconditional, conditional = self.predict_clean(
                torch.cat([sample, sample]), timesteps, torch.cat([null, condition])
            ).chunk(2)
            clean = unconditional + guidance_scale * (conditional - unconditional)
            sample = schedule.step(clean, t, sample, generator=generators).prev_sample
        return F.normalize(sample.float(), dim=-1)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype


def mapper_files(location: Path) -> tuple[Path, Path]:
    """(weights, config) for a checkpoint folder or a .safetensors file with its .json beside it."""
    if location.is_dir():
        return location / WEIGHTS_NAME, location / CONFIG_NAME
    return location, location.with_suffix(".json")


def mapper_to_bytes(mapper: V2AMapper) -> tuple[bytes, bytes]:
    """(safetensors weights, JSON architecture): the checkpoint format, ready for a file or an S3 object."""
    state = {name: tensor.detach().contiguous().cpu() for name, tensor in mapper.state_dict().items()}
    weights = safetensors_save(state, metadata={"format": "pt", "variant": mapper.spec.variant})
    return weights, json.dumps(asdict(mapper.spec), indent=2).encode()


def mapper_from_bytes(weights: bytes, config: bytes) -> V2AMapper:
    """Safetensors + JSON only: no pickle, so an untrusted checkpoint cannot run code."""
    mapper = V2AMapper(MapperSpec(**json.loads(config)))
    mapper.load_state_dict(safetensors_load(weights), strict=True)
    return mapper.eval()


def save_mapper(mapper: V2AMapper, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    weights_path, config_path = mapper_files(folder)
    weights, config = mapper_to_bytes(mapper)
    weights_path.write_bytes(weights)
    config_path.write_bytes(config)
    return folder


def read_mapper(location: Path, device: str | torch.device = "cpu") -> V2AMapper:
    weights, config = mapper_files(location)
    for required in (weights, config):
        if not required.is_file():
            raise FileNotFoundError(
                f"mapper checkpoint incomplete: {required} is missing (need {WEIGHTS_NAME} and {CONFIG_NAME})"
            )
    return mapper_from_bytes(weights.read_bytes(), config.read_bytes()).to(device)
