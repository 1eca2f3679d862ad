"""The jobs over videos (dub, embed): their stages, the models they name, and the settings their hash covers."""

from __future__ import annotations

from dataclasses import dataclass, field

from foley.config import FoleyConfig


@dataclass(frozen=True)
class JobKind:
    """What differs between the jobs over videos: their stages, the models they name, what their hash covers."""

    stages: tuple[str, ...]
    models: tuple[str, ...]
    hashed_settings: dict = field(hash=False)

    def config_hash(self, config: FoleyConfig) -> str:
        return config.settings_hash(self.hashed_settings)

    def model_ids(self, config: FoleyConfig) -> dict[str, str]:
        return {key: value for key, value in config.model_ids().items() if key in self.models}


DUB = JobKind(
    stages=("decode_embed", "map", "synthesize", "mux"),
    models=("clip_model", "mapper_model", "audioldm_model"),
    hashed_settings={
        "seed": True,
        "window": True,
        "decode": True,
        "clip": True,
        "mapper": True,
        "audioldm": True,
        "output": True,
        "input": {"existing_audio", "mix_gain_db"},
    },
)
EMBED = JobKind(
    stages=("decode_embed", "clap_embed", "write_pairs"),
    models=("clip_model", "clap_model"),
    hashed_settings={"window": True, "decode": True, "clip": True, "clap": True},
)
