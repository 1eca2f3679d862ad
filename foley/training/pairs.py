"""The paired-embedding files jobs.embed writes and jobs.train_mapper reads: one Parquet file per video (or per
synthetic shard) under <root>/pairs/, one row per window."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from foley.storage.store import Storage
from foley.storage.uris import StorageError

PAIRS_DIR = "pairs"


def pairs_table(
    video_id: str,
    bounds: list[tuple[float, float]],
    clip: np.ndarray,
    clap: np.ndarray,
    model_ids: dict[str, str],
    sources: np.ndarray | None = None,
) -> pa.Table:
    """One row per window: video_id, window bounds, and fixed-size float32 lists for the two embeddings; with
    sound sources on, `sources` too (each window's source crops' CLIP embeddings, max_sources slots of zeros where
    there is none), what the source remixer learns from."""
    count = len(bounds)
    extra = {}
    if sources is not None:
        extra["sources"] = pa.FixedSizeListArray.from_arrays(
            pa.array(sources.astype(np.float32).ravel()), sources.shape[1]
        )
    return pa.table(
        {
            "video_id": pa.array([video_id] * count, pa.string()),
            "window_start_s": pa.array([start for start, _ in bounds], pa.float64()),
            "window_end_s": pa.array([end for _, end in bounds], pa.float64()),
            "clip": pa.FixedSizeListArray.from_arrays(pa.array(clip.astype(np.float32).ravel()), clip.shape[1]),
            "clap": pa.FixedSizeListArray.from_arrays(pa.array(clap.astype(np.float32).ravel()), clap.shape[1]),
            **extra,
            **{key: pa.array([value] * count, pa.string()) for key, value in model_ids.items()},
        }
    )


def table_bytes(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def list_pair_files(root: str, storage: Storage) -> list[str]:
    prefix = root.rstrip("/") + f"/{PAIRS_DIR}/"
    files = sorted(uri for uri in storage.list_prefix(prefix) if uri.endswith(".parquet"))
    if not files:
        raise StorageError(f"no pair files under {prefix}; make them with `python -m jobs.embed --output {root}`")
    return files


def split_by_file(files: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A fixed held-out split by file (so by video): the same file always lands on the same side."""

    def score(uri: str) -> float:
        return (
            int.from_bytes(hashlib.sha256(f"{seed}/{uri.rsplit('/pairs/', 1)[-1]}".encode()).digest()[:8], "little")
            / 2**64
        )

    val = [uri for uri in files if score(uri) < val_fraction]
    if not val or len(val) == len(files):
        raise StorageError(
            f"{len(files)} pair files cannot be split with train.val_fraction={val_fraction}; "
            "add data or change the fraction"
        )
    return [uri for uri in files if uri not in set(val)], val


def read_pairs(
    files: list[str], storage: Storage, limit: int | None = None, with_sources: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(clip, clap) float32 matrices of the files' windows, at most `limit` rows; `with_sources`: each clip row
    followed by the window's source slots, as the source remixer reads a window."""
    clips, claps, total = [], [], 0
    for uri in files:
        columns = ["clip", "clap", *(["sources"] if with_sources else [])]
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=columns)
        clips.append(np.stack(table.column("clip").to_numpy(zero_copy_only=False)))
        if with_sources:
            clips[-1] = np.concatenate([clips[-1], np.stack(table.column("sources").to_numpy(zero_copy_only=False))], 1)
        claps.append(np.stack(table.column("clap").to_numpy(zero_copy_only=False)))
        total += table.num_rows
        if limit is not None and total >= limit:
            break
    clip, clap = np.concatenate(clips).astype(np.float32), np.concatenate(claps).astype(np.float32)
    return (clip[:limit], clap[:limit]) if limit is not None else (clip, clap)


def embedding_dims(uri: str, storage: Storage) -> tuple[int, int, int]:
    """(CLIP width, CLAP width, source slots per window: 0 for pairs made without sound sources)."""
    schema = pq.read_schema(io.BytesIO(storage.read_bytes(uri)))
    clip = schema.field("clip").type.list_size
    sources = schema.field("sources").type.list_size // clip if "sources" in schema.names else 0
    return clip, schema.field("clap").type.list_size, sources
