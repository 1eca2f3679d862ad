"""Synthetic (CLIP, CLAP) pairs with a known non-linear relation: a fixed random MLP plus noise.

They stand in for VGGSound where no real paired data is available (tests, the train-smoke preset): a mapper that
learns the relation reaches a high held-out cosine, while CLIP and CLAP embeddings themselves are unrelated
(cosine about 0), as with the real models.

The sound-source relation (SSV2A's claim, in embeddings) has a window show two objects in a scene: the window's
sound is both objects' sounds, whatever their size, while its global CLIP embedding is mostly the scene, each
object weighing in by its area. The crops' embeddings see each object alone. A file holds one pair of objects,
so the held-out split by file tests pairs never seen together in training.

The temporal relation (SSV2A's claim for its learned aggregation) has an object appear in a window for a fixed
share of its frames, starting at a random frame: the window's sound is the object's sound and a sound of when it
appears (one of `phases`, early to late). The mean over the frames is the same whenever the object appears, so only
an aggregator that sees each frame's moment can hear the timing.
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
    return write_pair_files(root, storage, "synthetic", files, clip, clap)


def write_pair_files(
    root: str, storage: Storage, name: str, files: int, clip: np.ndarray, clap: np.ndarray, **extra: np.ndarray
) -> list[str]:
    """Windows split over `files` files <root>/pairs/<name>-NNNN.parquet, with `extra` pair columns (pairs_table)."""
    uris = []
    for index, rows in enumerate(np.array_split(np.arange(len(clip)), files)):
        video_id = f"{name}-{index:04d}"
        bounds = [(float(i), float(i) + 1) for i in rows]
        models = {"clip_model": "synthetic", "clap_model": "synthetic"}
        table = pairs_table(video_id, bounds, clip[rows], clap[rows], models, **{k: v[rows] for k, v in extra.items()})
        uri = join(root, f"{PAIRS_DIR}/{video_id}.parquet")
        storage.write_bytes(uri, table_bytes(table))
        uris.append(uri)
    return uris


def synthetic_source_pairs(
    objects: int,
    per_pair: int,
    clip_dim: int,
    clap_dim: int,
    max_sources: int,
    seed: int = 0,
    area: tuple[float, float] = (0.1, 0.4),
    crop_noise: float = 0.3,
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """Per pair of objects: (its name, global CLIP (per_pair, clip_dim), source slots (per_pair,
    max_sources * clip_dim), CLAP (per_pair, clap_dim)). Each object has a look (a random unit CLIP vector) and a
    sound (the non-linear synthetic_pairs relation of its look); a window's global embedding is
    normalise(scene + area_a look_a + area_b look_b) with a random scene and areas in `area`, its two crops are the
    looks plus noise (in a random order), and its CLAP embedding is normalise(sound_a + sound_b)."""
    looks, sounds = (torch.from_numpy(m) for m in synthetic_pairs(objects, clip_dim, clap_dim, seed, noise=0.0))
    draw = torch.Generator().manual_seed(seed + 2)
    pairs = []
    for a in range(objects):
        for b in range(a + 1, objects):
            scene = F.normalize(torch.randn(per_pair, clip_dim, generator=draw), dim=-1)
            areas = area[0] + (area[1] - area[0]) * torch.rand(per_pair, 2, generator=draw)
            clip = F.normalize(scene + areas[:, :1] * looks[a] + areas[:, 1:] * looks[b], dim=-1)
            crops = F.normalize(
                torch.stack([looks[a], looks[b]]).expand(per_pair, 2, clip_dim)
                + crop_noise * torch.randn(per_pair, 2, clip_dim, generator=draw) / clip_dim**0.5,
                dim=-1,
            )
            swap = torch.rand(per_pair, generator=draw) < 0.5
            crops[swap] = crops[swap].flip(1)
            slots = torch.zeros(per_pair, max_sources, clip_dim)
            slots[:, :2] = crops
            clap = F.normalize((sounds[a] + sounds[b]).expand(per_pair, clap_dim), dim=-1)
            pairs.append((f"objects-{a:02d}-{b:02d}", clip.numpy(), slots.reshape(per_pair, -1).numpy(), clap.numpy()))
    return pairs


def write_synthetic_source_pairs(
    root: str, storage: Storage, objects: int, per_pair: int, dim: int, max_sources: int, seed: int = 0
) -> list[str]:
    """One file per pair of objects under <root>/pairs/, in the format jobs.embed writes with sound sources on."""
    uris = []
    for name, clip, sources, clap in synthetic_source_pairs(objects, per_pair, dim, dim, max_sources, seed):
        table = pairs_table(
            name,
            [(float(i), float(i) + 1) for i in range(len(clip))],
            clip,
            clap,
            {"clip_model": "synthetic", "clap_model": "synthetic"},
            sources,
        )
        uri = join(root, f"{PAIRS_DIR}/{name}.parquet")
        storage.write_bytes(uri, table_bytes(table))
        uris.append(uri)
    return uris


def synthetic_temporal_pairs(
    count: int,
    frames: int,
    clip_dim: int,
    clap_dim: int,
    objects: int = 12,
    phases: int = 4,
    visible: float = 0.25,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean CLIP (count, clip_dim), frames (count, frames * (clip_dim + 1)), CLAP (count, clap_dim)).

    A window is a random scene, with a random object's look added to `visible` of its `frames` frames in a row from
    a random start; a frame is followed by its moment (the middle of its share of the window, 0 to 1). Its CLAP
    embedding is normalise(sound of the object + sound of the phase its start falls in); the sounds come from the
    synthetic_pairs relation of the looks, the phases' sounds are random."""
    looks, sounds = (torch.from_numpy(m) for m in synthetic_pairs(objects, clip_dim, clap_dim, seed, noise=0.0))
    draw = torch.Generator().manual_seed(seed + 3)
    timing = F.normalize(torch.randn(phases, clap_dim, generator=draw), dim=-1)
    shown = max(1, round(visible * frames))
    which = torch.randint(0, objects, (count,), generator=draw)
    start = torch.randint(0, frames - shown + 1, (count,), generator=draw)
    scene = F.normalize(torch.randn(count, 1, clip_dim, generator=draw), dim=-1)
    jitter = 0.2 * torch.randn(count, frames, clip_dim, generator=draw) / clip_dim**0.5
    index = torch.arange(frames)
    on = ((index >= start[:, None]) & (index < start[:, None] + shown)).float()[..., None]
    each = F.normalize(scene + jitter + on * looks[which][:, None], dim=-1)
    moments = ((index + 0.5) / frames).expand(count, frames)[..., None]
    phase = torch.div(start * phases, frames - shown + 1, rounding_mode="floor")
    clap = F.normalize(sounds[which] + timing[phase], dim=-1)
    mean = F.normalize(each.mean(dim=1), dim=-1)
    return mean.numpy(), torch.cat([each, moments], dim=2).reshape(count, -1).numpy(), clap.numpy()


def write_synthetic_temporal_pairs(
    root: str, storage: Storage, count: int, frames: int, dim: int, files: int, seed: int = 0
) -> list[str]:
    """The windows split over `files` files under <root>/pairs/, in the format jobs.embed writes with
    window.aggregator=learned (the mean in `clip`, every frame in `frames`)."""
    clip, each, clap = synthetic_temporal_pairs(count, frames, dim, dim, seed=seed)
    return write_pair_files(root, storage, "temporal", files, clip, clap, frames=each)
