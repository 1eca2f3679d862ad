"""Plumbing shared by the stages in workers/: their Ray Data options and threads, batching windows across videos
for the model stages, the node-local input, and the final stage that publishes and journals each video.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from ray.data import ActorPoolStrategy

from foley.config import FoleyConfig, StageResources
from foley.pipeline.kinds import JobKind
from foley.pipeline.manifest import Manifest, utc_now
from foley.pipeline.rows import EMPTY_MATRIX, OK, SUMMARY_COLUMNS, batch_of, fail, is_pending, rows_of
from foley.storage.store import Storage
from foley.storage.uris import is_s3


def stage_options(resources: StageResources) -> dict:
    """map_batches arguments for a stage: its resources, actor pool and batch size, all from the config.

    Ray Data restarts an actor whose process dies and retries the batch it held on the new one (its defaults
    max_restarts=-1, max_task_retries=-1), so a lost worker costs time, not videos.
    """
    if isinstance(resources.concurrency, tuple):
        pool = ActorPoolStrategy(min_size=resources.concurrency[0], max_size=resources.concurrency[1])
    else:
        pool = ActorPoolStrategy(size=resources.concurrency)
    return dict(
        batch_size=resources.batch_size,
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus or None,
        compute=pool,
        batch_format="numpy",
    )


def set_torch_threads(resources: StageResources) -> None:
    """Ray sets OMP_NUM_THREADS from the CPUs an actor reserves; make torch use what the config says."""
    import torch  # noqa: PLC0415 - not at the top, so that stages without a model (Mux) start without torch

    torch.set_num_threads(resources.threads())


@dataclass(frozen=True)
class WindowRef:
    row: dict
    index: int


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def map_windows(
    rows: list[dict],
    source: str,
    target: str,
    max_batch: int,
    stage: str,
    transform: Callable[[list[np.ndarray], list[WindowRef]], np.ndarray],
) -> None:
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
        for ref, value in zip(chunk, result, strict=True):
            outputs.setdefault(id(ref.row), []).append((ref.index, value))
            ref.row[f"seconds_{stage}"] = float(ref.row.get(f"seconds_{stage}", 0.0)) + share
    for row in rows:
        if is_pending(row):
            row[target] = np.stack([value for _, value in sorted(outputs[id(row)], key=lambda item: item[0])])
        else:
            row[target] = EMPTY_MATRIX


def local_input(row: dict, storage: Storage):
    """The decode stage's copy of the input if it is on this node, else a fresh one."""
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
