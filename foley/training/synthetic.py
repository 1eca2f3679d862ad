"""Synthetic (CLIP, CLAP) pairs with a known non-linear relation: a fixed random MLP plus noise.

They stand in for VGGSound where no real paired data is available (tests, the train-smoke preset): a mapper that
learns the relation reaches a high held-out cosine, while CLIP and CLAP embeddings themselves are unrelated
(cosine about 0), as with the real models.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from foley.storage.store import Storage
from foley.storage.uris import join
from foley.training.pairs import PAIRS_DIR, pairs_table, table_bytes


def synthetic_pairs(
    count: int, clip_dim: int, clap_dim: int, seed: int = 0, hidden: int = 1024, gain: float = 0.7, noise: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """Unit-length clip (count, clip_dim) and clap = normalise(W2 tanh(gain * W1 clip) + noise) (count, clap_dim).

    W1 has unit-variance entries, so the tanh inputs have standard deviation `gain`: large enough to bend the
    relation, small enough that a few thousand pairs pin it down."""
    relation = torch.Generator().manual_seed(seed)  # the relation is fixed by the seed
    first = torch.randn(clip_dim, hidden, generator=relation) * gain
    second = torch.randn(hidden, clap_dim, generator=relation) / hidden**0.5
    samples = torch.Generator().manual_seed(seed + 1)
    clip = F.normalize(torch.randn(count, clip_dim, generator=samples), dim=-1)
    clean = F.normalize(torch.tanh(clip @ first) @ second, dim=-1)
    clap = F.normalize(clean + noise * torch.randn(count, clap_dim, generator=samples) / clap_dim**0.5, dim=-1)
    return clip.numpy(), clap.numpy()


def write_synthetic_pairs(
    root: str, storage: Storage, count: int, clip_dim: int, clap_dim: int, files: int, seed: int = 0
) -> list[str]:
    """The pairs split over `files` files under <root>/pairs/, in the format jobs.embed writes."""
    clip, clap = synthetic_pairs(count, clip_dim, clap_dim, seed)
    uris = []
    for index, rows in enumerate(np.array_split(np.arange(count), files)):
        video_id = f"synthetic-{index:04d}"
        table = pairs_table(
            video_id,
            [(float(i), float(i) + 1) for i in rows],
            clip[rows],
            clap[rows],
            {"clip_model": "synthetic", "clap_model": "synthetic"},
        )
        uri = join(root, f"{PAIRS_DIR}/{video_id}.parquet")
        storage.write_bytes(uri, table_bytes(table))
        uris.append(uri)
    return uris
