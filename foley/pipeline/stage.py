"""Plumbing shared by the stages in workers/: their Ray Data options and threads, batching windows across videos
for the model stages, the node-local input, and the final stage that publishes and journals each video.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
from ray.data import ActorPoolStrategy
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from foley.config import FoleyConfig, StageResources, StorageConfig
from foley.media.probe import decode_audio
from foley.pipeline.attempts import bounded_crashes
from foley.pipeline.columns import EMPTY_MATRIX, OK
from foley.pipeline.kinds import JobKind
from foley.pipeline.manifest import Manifest, utc_now
from foley.pipeline.metrics import JobMetrics
from foley.pipeline.rows import SUMMARY_COLUMNS, batch_of, fail, is_pending, row_windows, rows_of
from foley.storage.store import Storage

log = logging.getLogger("foley")
REMOVE_TIMEOUT_S = 120  # for removing cached copies on other nodes; a node that does not answer keeps its copy


def stage_options(resources: StageResources) -> dict:
    """map_batches arguments for a stage: its resources, actor pool and batch size, all from the config.

    Ray Data restarts an actor whose process dies and retries the batch it held on the new one, without end, so
    that a lost node costs time, never inputs; how often a row may kill its worker (stages.<name>.max_retries) is
    bounded by the stages themselves (foley.pipeline.attempts), so such an input fails alone.
    """
    if isinstance(resources.concurrency, tuple):
        pool = ActorPoolStrategy(min_size=resources.concurrency[0], max_size=resources.concurrency[1])
    else:
        pool = ActorPoolStrategy(size=resources.concurrency)
    options = dict(
        batch_size=resources.batch_size,
        num_cpus=resources.num_cpus,
        num_gpus=resources.num_gpus or None,
        resources=resources.resources or None,
        compute=pool,
        batch_format="numpy",
    )
    if resources.memory_gb is not None:
        options["memory"] = int(resources.memory_gb * 2**30)
    return options


def set_torch_threads(resources: StageResources) -> None:
    """Ray sets OMP_NUM_THREADS from the CPUs an actor reserves; make torch use what the config says."""
    import torch  # noqa: PLC0415 - not at the top, so that stages without a model (Mux) start without torch

    torch.set_num_threads(resources.threads())


@dataclass(frozen=True)
class WindowRef:
    row: dict
    index: int  # in the row

    @property
    def video_window(self) -> int:
        """The window's index in its video (a row may carry one segment of it): what seeds its random draws."""
        return int(self.row["first_window"]) + self.index


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
        if is_pending(row) and id(row) in outputs:
            row[target] = np.stack([value for _, value in sorted(outputs[id(row)], key=lambda item: item[0])])
        else:  # failed, skipped, or a row with no windows left to make (foley.pipeline.segments.ASSEMBLE_ONLY)
            row[target] = EMPTY_MATRIX


def this_node() -> str:
    """The Ray node this process runs on ("local" outside Ray, as in the benchmark's stage processes)."""
    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "local"


def this_worker() -> str:
    """The Ray actor this stage runs in (its id), for the manifest's record of who made what."""
    return (ray.get_runtime_context().get_actor_id() or "local") if ray.is_initialized() else "local"


def local_input(row: dict, storage: Storage) -> Path:
    """The input on this node: the file itself when local, else this node's cached copy of its content, fetched
    if absent. The node is noted in the row, so that the last stage can remove every copy the job made."""
    uri, identity = str(row["input_uri"]), str(row["input_identity"])
    path = storage.fetch(uri, identity)
    if storage.is_copied(uri, identity):
        nodes = set(filter(None, str(row["cache_nodes"]).split(",")))
        row["cache_nodes"] = ",".join(sorted(nodes | {this_node()}))
    return path


def window_waveforms(row: dict, storage: Storage, sample_rate: int) -> np.ndarray:
    """(n_windows,) object array of each window's own audio of the row's input, decoded at `sample_rate` (mono)."""
    path, windows = local_input(row, storage), row_windows(row)
    waveforms = np.empty(len(windows), dtype=object)
    waveforms[:] = [
        decode_audio(path, window.start_s, window.end_s - window.start_s, sample_rate) for window in windows
    ]
    return waveforms


def map_window_audio(
    rows: list[dict],
    storage: Storage,
    sample_rate: int,
    target: str,
    resources: StageResources,
    stage: str,
    transform: Callable[[list[np.ndarray], list[WindowRef]], np.ndarray],
) -> None:
    """map_windows over each window's own audio at `sample_rate` (the audio stages of jobs.embed and
    jobs.evaluate); a video whose audio cannot be decoded fails alone, and raw audio never leaves the actor."""
    for row in rows:
        if is_pending(row):
            try:
                row["window_audio"] = window_waveforms(row, storage, sample_rate)
            except Exception as exc:  # noqa: BLE001 - one bad video becomes a failed row, never a failed job
                fail(row, stage, exc)
    map_windows(rows, "window_audio", target, resources.max_forward_batch, stage, transform)
    for row in rows:
        row.pop("window_audio", None)


@ray.remote(num_cpus=0)
def remove_input_copy(config: StorageConfig, uri: str, identity: str) -> None:
    """Runs on the node that holds the copy (scheduled there by node affinity)."""
    Storage(config).remove_copy(uri, identity)


def remove_input_copies(row: dict, storage: Storage) -> None:
    """Remove the cached copies of a row's input on every node that made one, whatever the row's outcome."""
    uri, identity = str(row["input_uri"]), str(row["input_identity"])
    nodes = set(filter(None, str(row["cache_nodes"]).split(",")))
    storage.remove_copy(uri, identity)
    others = nodes - {this_node(), "local"}
    if not others:  # the usual case on one machine: nothing to ask of Ray
        return
    others &= {node["NodeID"] for node in ray.nodes() if node["Alive"]}  # a lost node took its cache with it
    elsewhere = [
        remove_input_copy.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(
            storage.config, uri, identity
        )
        for node in others
    ]
    try:
        ray.get(elsewhere, timeout=REMOVE_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - a node that left the cluster took its cache with it
        log.warning("could not remove every cached copy of %s: %s", uri, exc)


class FinalStage:
    """The last stage of a job: publish each pending video's output, then journal every row in the manifest.

    Journalling right after publishing is what lets a killed job resume without redoing finished videos.
    Subclasses name their job kind and stage, and implement `publish(row)`.
    """

    kind: JobKind
    stage: str

    def __init__(self, config: FoleyConfig, output_root: str):
        self.config = config
        self.output_root = output_root
        self.storage = Storage(config.storage)
        self.manifest = Manifest(output_root, self.storage, self.kind)
        self.metrics = JobMetrics(self.kind.name, self.kind.stages) if ray.is_initialized() else None

    def publish(self, row: dict) -> list[int]:
        """Write the row's outputs (each checked before it is published); their sizes, in output order."""
        raise NotImplementedError

    @bounded_crashes()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return batch_of([self.finish(row) for row in rows_of(batch)])

    def finish(self, row: dict) -> dict:
        """Publish a pending row, journal it whatever its status, remove its input copies; its summary."""
        if is_pending(row):
            started = time.perf_counter()
            try:
                row["output_sizes"] = json.dumps(self.publish(row))
                row["status"] = OK
            except Exception as exc:  # noqa: BLE001 - one bad video becomes a failed row, never a failed job
                fail(row, self.stage, exc)
            row[f"seconds_{self.stage}"] = float(row.get(f"seconds_{self.stage}", 0.0)) + time.perf_counter() - started
        row["finished_at"] = utc_now().timestamp()
        one_row_file = self.manifest.record(row)
        if self.metrics is not None:
            self.metrics.record(row)
        try:
            remove_input_copies(row, self.storage)
        except OSError as exc:  # a copy left in the cache is only space, and the next run's fetch reuses it
            log.warning("could not remove the cached copy of %s: %s", row["input_uri"], exc)
        return summary(row) | {"journal_row": one_row_file}


def summary(row: dict) -> dict:
    """What the driver sees of a row: enough for a progress line (and, of a finished row, its journal file)."""
    return {column: row[column] for column in SUMMARY_COLUMNS} | {"journal_row": b""}
