"""An input that kills its worker process every time fails alone, named, after stages.<name>.max_retries tries,
while Ray retries without end (what a lost node needs) and the rows beside it in its batch are made."""

from __future__ import annotations

import os

import pytest

from foley.pipeline.attempts import bounded_crashes
from foley.pipeline.columns import OK
from foley.pipeline.rows import batch_of, rows_of

DEADLY = "v2.mp4"


class KillsItsWorker:
    """A stage that dies (as a segfault or the OOM killer ends a process) on one input, every time."""

    def __init__(self, config):
        self.config = config

    @bounded_crashes("mux")
    def __call__(self, batch):
        rows = rows_of(batch)
        for row in rows:
            if row["status"] == "pending":
                if row["input_uri"] == DEADLY:
                    os._exit(1)
                row["status"] = OK
        return batch_of(rows)


@pytest.mark.slow  # a real Ray Data pipeline on the tests' shared head; each crash restarts an actor
def test_an_input_that_kills_its_worker_every_time_fails_alone(ray_joined, tiny_config):
    import ray
    from ray.data import ActorPoolStrategy

    from foley.pipeline.attempts import start_ledger

    ray.init()
    import sys

    from ray import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import a test module
    config = tiny_config.with_overrides("stages.mux.max_retries=1")
    ledger = start_ledger("run-test")
    rows = [
        {"input_uri": f"v{index}.mp4", "run_id": "run-test", "status": "pending", "error": "", "outputs": "[]"}
        | {"output_sizes": "[]", "segment": 0}
        for index in range(4)
    ]
    done = (
        ray.data.from_items(rows)
        .map_batches(
            KillsItsWorker,
            fn_constructor_kwargs={"config": config},
            batch_size=2,
            compute=ActorPoolStrategy(size=1),
            num_cpus=0.25,
            batch_format="numpy",
        )
        .take_all()
    )
    outcome = {row["input_uri"]: (row["status"], row["error"]) for row in done}
    assert sorted(outcome) == [f"v{index}.mp4" for index in range(4)]
    assert {uri: status for uri, (status, _) in outcome.items() if uri != DEADLY} == dict.fromkeys(
        ["v0.mp4", "v1.mp4", "v3.mp4"], OK
    )
    status, error = outcome[DEADLY]
    assert status == "failed" and error.startswith(f"mux: {DEADLY}: its worker process died each of the 2 times")
    assert "stages.mux.max_retries" in error
    ray.kill(ledger)
