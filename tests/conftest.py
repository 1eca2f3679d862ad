"""Shared fixtures: tiny random-weight models saved in their native formats, generated media, a local Ray."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # a hidden hub download must fail fast, never hang CI
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

from pathlib import Path

import pytest

from foley.config import FoleyConfig, load_config
from foley.tiny_models import save_tiny_models

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))


def tiny_overrides(models: dict[str, Path], cache_dir: Path) -> list[str]:
    return [
        f"clip.model=local-dir:{models['clip']}",
        f"mapper.checkpoint={models['mapper']}",
        f"audioldm.model={models['audioldm']}",
        f"storage.cache_dir={cache_dir}",
    ]


@pytest.fixture(scope="session")
def tiny_config(tiny_models, tmp_path_factory) -> FoleyConfig:
    cache = tmp_path_factory.mktemp("cache")
    return load_config(ROOT / "configs" / "tiny.yaml", tiny_overrides(tiny_models, cache))


@pytest.fixture(scope="session")
def local_ray():
    """One small local Ray for the in-process tests (jobs run as subprocesses start their own)."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
