"""The paired-embedding files jobs.embed writes and jobs.train_mapper reads: one Parquet file per video (or per
synthetic shard) under <root>/pairs/, one row per window."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from foley.models.mapper import MapperSpec
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
    frames: np.ndarray | None = None,
) -> pa.Table:
    """One row per window: video_id, window bounds, and fixed-size float32 lists for the two embeddings; with
    sound sources on, `sources` too (each window's source crops' CLIP embeddings, max_sources slots of zeros where
    there is none), what the source remixer learns from; with window.aggregator=learned, `frames` (each sampled
    frame's CLIP embedding followed by its moment in the window), what the temporal aggregator learns from."""
    count = len(bounds)
    extra = {
        name: pa.FixedSizeListArray.from_arrays(pa.array(values.astype(np.float32).ravel()), values.shape[1])
        for name, values in (("sources", sources), ("frames", frames))
        if values is not None
    }
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


def condition_columns(spec: MapperSpec) -> tuple[str, ...]:
    """The pair columns that make a mapper's condition, in order: the window's picture (and, for the source
    remixer, its source slots), or for the temporal aggregator its frames."""
    if spec.frames:
        return ("frames",)
    return ("clip", "sources") if spec.max_sources else ("clip",)


def read_pairs(
    files: list[str], storage: Storage, limit: int | None = None, columns: tuple[str, ...] = ("clip",)
) -> tuple[np.ndarray, np.ndarray]:
    """(condition, clap) float32 matrices of the files' windows, at most `limit` rows; a condition row is the
    window's `columns` side by side (condition_columns)."""
    conditions, claps, total = [], [], 0
    for uri in files:
        table = pq.read_table(io.BytesIO(storage.read_bytes(uri)), columns=[*columns, "clap"])
        conditions.append(
            np.concatenate([np.stack(table.column(name).to_numpy(zero_copy_only=False)) for name in columns], 1)
        )
        claps.append(np.stack(table.column("clap").to_numpy(zero_copy_only=False)))
        total += table.num_rows
        if limit is not None and total >= limit:
            break
    condition, clap = np.concatenate(conditions).astype(np.float32), np.concatenate(claps).astype(np.float32)
    return (condition[:limit], clap[:limit]) if limit is not None else (condition, clap)


def embedding_dims(uri: str, storage: Storage) -> tuple[int, int, int, int]:
    """(CLIP width, CLAP width, source slots per window, frames per window): 0 sources for pairs made without
    sound sources, 0 frames for pairs made with the mean aggregator."""
    schema = pq.read_schema(io.BytesIO(storage.read_bytes(uri)))
    clip = schema.field("clip").type.list_size
    sources = schema.field("sources").type.list_size // clip if "sources" in schema.names else 0
    frames = schema.field("frames").type.list_size // (clip + 1) if "frames" in schema.names else 0
    return clip, schema.field("clap").type.list_size, sources, frames
