"""Plumbing shared by the stages in workers/: rows in and out of Ray Data batches, per-video failures as data,
and batching windows across videos for the GPU stages.

A row is one video. Its `status` is "pending" until a stage fails it ("failed"), decides not to process it
("skipped"), or the last stage finishes it ("ok"); stages pass rows that are not pending through untouched.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from foley.config import FoleyConfig, StageResources
from foley.manifest import Manifest, utc_now
from foley.storage import InputItem, Storage, is_s3

log = logging.getLogger("foley")

PENDING, OK, FAILED, SKIPPED = "pending", "ok", "failed", "skipped"
EMPTY_MATRIX = np.zeros((0, 0), dtype=np.float32)  # placeholder for per-window arrays of rows without windows




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
    hashed_settings={"seed": True, "window": True, "decode": True, "clip": True, "mapper": True, "audioldm": True,
                     "output": True, "input": {"existing_audio", "mix_gain_db"}},
)
EMBED = JobKind(
    stages=("decode_embed", "clap_embed", "write_pairs"),
    models=("clip_model", "clap_model"),
    hashed_settings={"window": True, "decode": True, "clip": True, "clap": True},
)
SUMMARY_COLUMNS = ("input_uri", "relative_path", "status", "error", "n_windows", "duration_s")


def new_row(item: InputItem, output_uri: str, config: FoleyConfig, kind: JobKind) -> dict:
    """A video's row as it enters the pipeline: every column present from the start, so batches stay uniform."""
    return {
        "input_uri": item.uri, "output_uri": output_uri, "relative_path": item.relative_path,
        "status": PENDING, "error": "", "local_path": "",
        "duration_s": 0.0, "fps": 0.0, "width": 0, "height": 0, "has_audio": False, "n_windows": 0,
        "clip_embeddings": EMPTY_MATRIX, "clap_embeddings": EMPTY_MATRIX, "waveforms": EMPTY_MATRIX,
        "sample_rate": 0, "seed": config.seed, "config_hash": kind.config_hash(config), **kind.model_ids(config),
        **{f"seconds_{stage}": 0.0 for stage in kind.stages},
        "started_at": 0.0, "finished_at": 0.0,
    }


def rows_of(batch: dict[str, np.ndarray]) -> list[dict]:
    count = len(next(iter(batch.values()))) if batch else 0
    return [{key: values[i] for key, values in batch.items()} for i in range(count)]


def batch_of(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows back to columns; per-window arrays of different lengths become object columns (ragged tensors)."""
    batch = {}
    for key in rows[0]:
        values = [row[key] for row in rows]
        if isinstance(values[0], np.ndarray):
            column = np.empty(len(values), dtype=object)
            column[:] = values
            batch[key] = column
        else:
            batch[key] = np.array(values)
    return batch


def fail(row: dict, stage: str, exc: BaseException) -> None:
    """Record a per-video failure as data. Expected problems keep their message; bugs also get their type."""
    expected = isinstance(exc, (ValueError, RuntimeError, OSError))
    reason = str(exc) if expected and str(exc) else f"{type(exc).__name__}: {exc}"
    row["status"] = FAILED
    row["error"] = f"{stage}: {row['input_uri']}: {reason}"
    if not expected:
        log.warning("unexpected error in %s for %s\n%s", stage, row["input_uri"], traceback.format_exc())


def is_pending(row: dict) -> bool:
    return row["status"] == PENDING


def stage_options(resources: StageResources) -> dict:
    """map_batches arguments for a stage: its resources, actor pool and batch size, all from the config.

    Ray Data restarts an actor whose process dies and retries the batch it held on the new one (its defaults
    max_restarts=-1, max_task_retries=-1), so a lost worker costs time, not videos.
    """
    from ray.data import ActorPoolStrategy

    if isinstance(resources.concurrency, tuple):
        pool = ActorPoolStrategy(min_size=resources.concurrency[0], max_size=resources.concurrency[1])
    else:
        pool = ActorPoolStrategy(size=resources.concurrency)
    return dict(batch_size=resources.batch_size, num_cpus=resources.num_cpus, num_gpus=resources.num_gpus or None,
                compute=pool, batch_format="numpy")


def set_torch_threads(resources: StageResources) -> None:
    """Ray sets OMP_NUM_THREADS from the CPUs an actor reserves; make torch use what the config says.

    torch is imported here, not at the top, so that stages without a model (Mux) start without it.
    """
    import torch

    torch.set_num_threads(resources.threads())


@dataclass(frozen=True)
class WindowRef:
    row: dict
    index: int


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def map_windows(rows: list[dict], source: str, target: str, max_batch: int, stage: str,
                transform: Callable[[list[np.ndarray], list[WindowRef]], np.ndarray]) -> None:
    """Apply `transform` to the windows of all pending rows, `max_batch` windows at a time across videos.

    Each row gets `target` (its windows' outputs, stacked) and `seconds_<stage>` (its share of the time). A chunk
    that raises fails only the videos it held.
    """
    refs = [WindowRef(row, i) for row in rows if is_pending(row) for i in range(len(row[source]))]
    outputs: dict[int, list[tuple[int, np.ndarray]]] = {}
    for chunk in _chunks(refs, max_batch):
        chunk = [ref for ref in chunk if is_pending(ref.row)]
        if not chunk:
            continue
        started = time.perf_counter()
        try:
            result = transform([ref.row[source][ref.index] for ref in chunk], chunk)
        except Exception as exc:  # noqa: BLE001 - becomes a failed manifest row per video
            for ref in chunk:
                if is_pending(ref.row):
                    fail(ref.row, stage, exc)
            continue
        share = (time.perf_counter() - started) / len(chunk)
        for ref, value in zip(chunk, result):
            outputs.setdefault(id(ref.row), []).append((ref.index, value))
            ref.row[f"seconds_{stage}"] = float(ref.row.get(f"seconds_{stage}", 0.0)) + share
    for row in rows:
        if is_pending(row):
            row[target] = np.stack([value for _, value in sorted(outputs[id(row)], key=lambda item: item[0])])
        else:
            row[target] = EMPTY_MATRIX


def local_input(row: dict, storage: Storage):
    """The decode stage's copy of the input if it is on this node, else a fresh one."""
    from pathlib import Path

    local = Path(str(row["local_path"])) if row["local_path"] else None
    if local is not None and local.is_file():
        return local
    return storage.fetch(str(row["input_uri"]))


class FinalStage:
    """The last stage of a job: publish each pending video's output, then journal every row in the manifest.

    Journalling right after publishing is what lets a killed job resume without redoing finished videos.
    Subclasses name their job kind and stage, and implement `publish(row)`.
    """

    kind: JobKind
    stage: str

    def __init__(self, config: FoleyConfig, output_root: str):
        self.config = config
        self.storage = Storage(config.storage)
        self.manifest = Manifest(output_root, self.storage, self.kind)

    def publish(self, row: dict) -> None:
        raise NotImplementedError

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = rows_of(batch)
        for row in rows:
            if is_pending(row):
                started = time.perf_counter()
                try:
                    self.publish(row)
                    row["status"] = OK
                except Exception as exc:  # noqa: BLE001 - one bad video becomes a failed row, never a failed job
                    fail(row, self.stage, exc)
                row[f"seconds_{self.stage}"] = time.perf_counter() - started
            row["finished_at"] = utc_now().timestamp()
            self.manifest.record(row)
            if is_s3(str(row["input_uri"])):  # this node's copy of a remote input is no longer needed
                self.storage.local_copy_path(str(row["input_uri"])).unlink(missing_ok=True)
        return batch_of([{column: row[column] for column in SUMMARY_COLUMNS} for row in rows])
