"""Which inputs kill their worker: per stage and row, how often a stage started it and never finished.

Ray retries a batch whose actor died, on the restarted actor. A bounded count of retries does not survive a lost
node: until the cluster declares the node dead (about 15 s of missed health checks), every call to its actors fails
at once and spends a retry, so three retries are gone in seconds and Ray Data drops the batch. So the stages let Ray
retry without end (Ray Data's default) and bound the retries themselves, by what happened to each row: a ledger
actor of the run, on the driver's node, counts each row's starts and finishes in a stage. A start without a finish
is a crash. A batch in which any row has crashed before is worked one row at a time, so that only the row that
kills the worker is charged; a row that has crashed more than `stages.<name>.max_retries` times fails, named, and
the job goes on. Calls to an unreachable actor start nothing, so a lost node charges no row.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable

import numpy as np
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from foley.pipeline.columns import FAILED
from foley.pipeline.rows import batch_of, fail, rows_of

LEDGER_NAME = "foley-attempts-{run_id}"
Stage = Callable[[object, dict[str, np.ndarray]], dict[str, np.ndarray]]


@ray.remote(num_cpus=0)
class AttemptLedger:
    """Starts and finishes of (stage, input, segment) keys in one run."""

    def __init__(self):
        self.started: Counter = Counter()
        self.finished: Counter = Counter()

    def crashes(self, keys: list[str]) -> list[int]:
        return [self.started[key] - self.finished[key] for key in keys]

    def start(self, keys: list[str]) -> None:
        self.started.update(keys)

    def finish(self, keys: list[str]) -> None:
        self.finished.update(keys)


def start_ledger(run_id: str):
    """The run's ledger, named after it and pinned to this (the driver's) node, which lives as long as the run."""
    node = ray.get_runtime_context().get_node_id()
    return AttemptLedger.options(
        name=LEDGER_NAME.format(run_id=run_id), scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
    ).remote()


@functools.lru_cache(maxsize=8)
def _ledger(run_id: str):
    try:
        return ray.get_actor(LEDGER_NAME.format(run_id=run_id))
    except ValueError:  # a stage run outside a job (a benchmark): no bound but Ray's
        return None


def ledger_of(batch: dict[str, np.ndarray]):
    """The ledger of the run the batch belongs to, or None outside a job run (stages called in-process)."""
    if not ray.is_initialized() or "run_id" not in batch or not len(batch["run_id"]) or not str(batch["run_id"][0]):
        return None
    return _ledger(str(batch["run_id"][0]))


def _key(stage: str, row: dict) -> str:
    return f"{stage}|{row['input_uri']}|{int(row.get('segment', 0))}"


def bounded_crashes(name: str | None = None) -> Callable[[Stage], Stage]:
    """Decorate a stage's `__call__` (on a class with a `config`) with the ledger's bound (see the module); the
    stage's name in config.stages is `name`, or the class's `stage`."""

    def decorate(call: Stage) -> Stage:
        @functools.wraps(call)
        def guarded(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            ledger = ledger_of(batch)
            if ledger is None:
                return call(self, batch)
            stage = name or self.stage
            rows = rows_of(batch)
            keys = [_key(stage, row) for row in rows]
            crashes = ray.get(ledger.crashes.remote(keys))
            if not any(crashes):
                ray.get(ledger.start.remote(keys))
                result = call(self, batch)
                ray.get(ledger.finish.remote(keys))
                return result
            most = getattr(self.config.stages, stage).max_retries
            results = []
            for row, key, crashed in zip(rows, keys, crashes, strict=True):
                if crashed > most and row.get("status", "pending") != FAILED:
                    fail(row, stage, RuntimeError(crashed_message(stage, crashed)))
                ray.get(ledger.start.remote([key]))
                results.extend(rows_of(call(self, batch_of([row]))))
                ray.get(ledger.finish.remote([key]))
            return batch_of(results)

        return guarded

    return decorate


def crashed_message(stage: str, crashes: int) -> str:
    return (
        f"its worker process died each of the {crashes} times this stage worked on it (a crash, or out of memory: "
        f"see stages.{stage}.max_retries and stages.{stage}.memory_gb); the job went on without it. Run the job "
        "again to retry it (finished work is kept)"
    )
