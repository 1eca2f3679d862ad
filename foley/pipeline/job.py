"""The lifecycle of one run of a batch job over videos (dub, embed): plan, connect, follow, finish.

A run takes the lease on its output root (foley.pipeline.lease) before its first write and gives it back at its
end; its plan comes from foley.pipeline.planning, its Ray session from foley.pipeline.ray_session, its progress
lines from foley.pipeline.progress. It journals every row it decides (foley.pipeline.manifest), folds the journal
into the manifest at its end and prints the summary.
"""

from __future__ import annotations

import _thread
import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.compute as pc

from foley.config import ConfigError, FoleyConfig
from foley.pipeline.columns import FAILED, OK, PENDING, SKIPPED
from foley.pipeline.guard import check_roots
from foley.pipeline.journal import RunJournal
from foley.pipeline.kinds import JobKind
from foley.pipeline.lease import LeaseLostError, OutputLease
from foley.pipeline.manifest import KEY_COLUMNS, Manifest
from foley.pipeline.planning import Planner
from foley.pipeline.progress import Progress
from foley.pipeline.ray_session import check_gpus, check_local_output, configure_data, connect_ray
from foley.pipeline.rows import first_line, pipeline_columns
from foley.pipeline.segments import clear_stale_staging
from foley.pipeline.shards import ShardWork, publish_shards
from foley.storage.inputs import InputItem
from foley.storage.store import Storage
from foley.storage.uris import StorageError


class JobRun:
    """One run of a job over a set of inputs, from choosing the work to the summary line."""

    def __init__(self, args: argparse.Namespace, config: FoleyConfig, kind: JobKind):
        self.args, self.config, self.kind = args, config, kind
        self.started = time.perf_counter()
        self.storage = Storage(config.storage)
        self.manifest = Manifest(args.output, self.storage, kind)
        self.id = uuid.uuid4().hex
        self.results: list[dict] = []
        self.already_done = 0
        self.aborted = False
        self.planned: list[dict] = []  # the rows this run streams: each must end with a row of this run
        self.shards: list[ShardWork] = []  # the input's WebDataset shards, written again once their samples are done
        self.sequence = 0  # this run's number on its output root, set by the plan
        self.journal: RunJournal | None = None  # the rows this run writes to the manifest, made by the plan
        self.columns = pipeline_columns(config, kind)  # a row's columns besides the plan's, for rows failed here
        self.planner = Planner(args, config, kind, self.storage, self.manifest, self.columns)
        # A run that loses its lease stops at once: the renewing thread interrupts the driver wherever it waits.
        self.lease = OutputLease(self.storage, args.output, self.id, config.lease, on_lost=_thread.interrupt_main)

    def plan(self, outputs_for: Callable[[InputItem], tuple[str, ...]]) -> list[dict]:
        """The rows of the inputs still to do, after refusing any layout that could write an input (the planner
        says which and why); the refused inputs are journalled as failed rows, the moved ones under their new
        locations. `outputs_for` names every file an input's result writes, the main one first."""
        check_roots(self.args.input, self.args.output)
        try:
            with self.stopped_if_lease_lost():
                return self._plan(outputs_for)
        except BaseException:
            self.lease.give_back()
            raise

    def _plan(self, outputs_for: Callable[[InputItem], tuple[str, ...]]) -> list[dict]:
        layout = self.planner.layout(outputs_for)
        self.lease.take()  # the first write; from here to finish(), this run alone writes under the output root
        models = self.planner.identify_models()
        self.config = self.planner.config  # with an unpinned hub model pinned to the commit it resolved to
        config_hash = self.kind.config_hash(self.config, models)
        current, _ = self.manifest.snapshot(columns=KEY_COLUMNS)  # not the whole rows of a large library
        for line in self.manifest.quarantine_damaged():
            print(f"warning: {line}", file=sys.stderr, flush=True)
        # Runs on one output follow each other (the lease): this one's number orders its rows after every earlier
        # row, whatever the clocks of the nodes that wrote them say.
        self.sequence = 1 + (pc.max(current.column("run_seq")).as_py() or 0)
        self.journal = RunJournal(self.manifest, self.id, self.sequence, self.config.journal)
        shared = {
            "run_id": self.id,
            "run_seq": self.sequence,
            "model_identities": json.dumps(models, sort_keys=True),
            "settings": json.dumps(self.kind.settings(self.config), sort_keys=True),  # jobs.compare reads them
        }
        plan = self.planner.plan(layout, current, config_hash, shared)
        self.journal.add_rows(plan.refused)
        self.results += [{"status": FAILED} for _ in plan.refused]
        self.journal.add_records(plan.moved)
        self.journal.write()
        self.already_done, self.planned, self.shards = plan.already_done, plan.rows, plan.shards
        self.clear_leftovers({row["result_id"] for row in plan.rows})
        self.manifest.record_left_out(left_out := layout.listing.left_out_line())
        if left_out:
            print(left_out, flush=True)
        print(
            f"{len(layout.listing.items)} inputs under {self.args.input}: {self.already_done} already done, "
            f"{len(plan.rows)} to process (config {config_hash})",
            flush=True,
        )
        return plan.rows

    @contextmanager
    def stopped_if_lease_lost(self) -> Iterator[None]:
        """The renewing thread interrupts the driver wherever it waits once the lease is lost (another run took
        it): that interrupt becomes a LeaseLostError, which the jobs end on with exit 1; a user's ^C stays one."""
        try:
            yield
        except KeyboardInterrupt:
            if not self.lease.lost:
                raise
            self.stop_if_lease_lost()
        self.stop_if_lease_lost()  # an interrupt that landed where a library swallowed it

    def stop_if_lease_lost(self) -> None:
        """LeaseLostError if the renewing thread found the lease lost: checked between videos too, since the
        interrupt alone can land inside code that drops it (the lease test saw a run finish after losing it)."""
        if self.lease.lost:
            raise LeaseLostError(
                f"{self.lease.lost}. This run stopped writing; what it finished is kept and published, and a later "
                "run (once the other one ends) does the rest"
            ) from None

    @staticmethod
    def own_references(rows: list[dict]) -> bool:
        """Whether any of these videos has a reference sound (the synthesis stage then loads AudioLDM's CLAP)."""
        return any(json.loads(row["conditions"] or "{}").get("reference_audio") for row in rows)

    def clear_leftovers(self, results: set[str]) -> None:
        """What an interrupted run left that this one cannot use: partial files, publication claims, and staged
        segments of results this run does not make (the staged segments of the rest are kept: they resume)."""
        if removed := self.storage.remove_partials(self.args.output):
            print(f"removed {removed} partial files left by an interrupted run", flush=True)
        if removed := clear_stale_staging(self.storage, self.args.output, keep=results):
            print(f"removed {removed} staged segments of results this run does not make", flush=True)

    def connect(self, *, one_row_per_block: bool = False):
        """Ray (joined or started), after checking that it can host the stages' resources and reach the output,
        with Ray Data set up for the run (`one_row_per_block`: each video or segment a block of its own); a run
        that cannot start gives its lease back."""
        from foley.pipeline.attempts import start_ledger  # noqa: PLC0415 - it imports Ray, loaded only for work

        try:
            with self.stopped_if_lease_lost():  # starting Ray takes seconds, in which the lease can be lost
                ray = connect_ray()
                check_gpus(self.config, self.kind, ray.cluster_resources().get("GPU", 0))
                check_local_output(self.args.output, self.config, sum(node["Alive"] for node in ray.nodes()))
                configure_data(self.config.progress, one_row_per_block=one_row_per_block)
                self.ledger = start_ledger(self.id)  # how often each input killed its worker (attempts.py)
        except (ConfigError, LeaseLostError):
            self.lease.give_back()
            raise
        return ray

    def follow(self, videos, total: int) -> None:
        """Consume the pipeline's output as videos finish: a progress line each (and one per staged segment of a
        long video), stop after too many failures. A lost lease stops it (LeaseLostError): another run writes here
        now, so this one leaves at once, its finished rows in the journal."""
        with self.stopped_if_lease_lost():
            self._follow(videos, Progress(total))

    def _follow(self, videos, progress: Progress) -> None:
        max_failures = self.args.max_failures
        failures = 0
        finished: set[str] = set()
        for result in videos.iter_rows():
            self.stop_if_lease_lost()
            if one_row_file := result["journal_row"]:  # every row the last stage journalled, into the batches
                self.journal.add(one_row_file)
            path = result["relative_path"]
            if result["status"] == PENDING:  # a segment of a long video, staged until the rest of it is done
                progress.staged(path, int(result["segment"]) + 1, int(result["segment_count"]))
                continue
            if result["input_uri"] in finished:  # another failed segment of a video already reported
                continue
            finished.add(result["input_uri"])
            self.results.append(result)
            failures += result["status"] == FAILED
            windows = int(result["n_windows"])
            detail = result["error"] if result["status"] != OK else f"{windows} window{'' if windows == 1 else 's'}"
            progress.finished(path, result["status"], detail)
            if max_failures is not None and failures > max_failures:
                self.aborted = True
                break

    def fail_the_unfinished(self, current: pa.Table) -> bool:
        """Every input this run streamed ends with a row of this run; one without (its worker died on every try,
        or its result was lost) becomes a failed row that says so, and is named on stderr. True if any did."""
        finished = rows_of_run(current, self.id)
        unfinished = [row for row in self.planned if row["input_uri"] not in finished]
        for row in unfinished:
            error = (
                f"{row['input_uri']}: this run ended without a result for it; its worker process died on every try "
                "(a crash, or out of memory: see stages.<name>.max_retries and memory_gb) or its result was lost. "
                "The log names the stage; run the job again to retry it (finished work is kept)"
            )
            self.journal.add_rows([self.columns | row | {"status": FAILED, "error": error, "outputs": "[]"}])
            self.results.append({"status": FAILED})
        self.journal.write()
        if unfinished:
            names = ", ".join(row["relative_path"] for row in unfinished[:10])
            more = f" and {len(unfinished) - 10} more" if len(unfinished) > 10 else ""
            count = f"{len(unfinished)} input{'' if len(unfinished) == 1 else 's'}"
            print(f"{count} ended without a result: {names}{more}", file=sys.stderr, flush=True)
        return bool(unfinished)

    def finish(self) -> int:
        """Fold the journal into one manifest, print the summary, give the output root back; 0 if every input is
        ok, else 1. Should the bookkeeping fail (a full disk, storage out of reach), it says so and gives the lease
        back, exit 1: every output published stays, with its row in the journal, and the next run folds it."""
        try:
            with self.stopped_if_lease_lost():
                final = self.fold()
                shards = publish_shards(self.storage, self.args.output, self.shards, final)
        except (StorageError, OSError) as exc:
            self.lease.give_back()
            print(
                f"error: the manifest could not be brought up to date ({first_line(exc)}). Every output this run "
                "published is in place and its row kept in the journal; run the job again to finish (nothing "
                "finished is redone)",
                file=sys.stderr,
                flush=True,
            )
            return 1
        self.lease.give_back()
        counts = {status: sum(r["status"] == status for r in self.results) for status in (OK, FAILED, SKIPPED)}
        print(
            f"done in {time.perf_counter() - self.started:.1f} s: {counts[OK]} ok, {counts[FAILED]} failed, "
            f"{counts[SKIPPED]} skipped, {self.already_done} already done; manifest: "
            f"{self.manifest.compacted_uri} ({len(final)} rows)",
            flush=True,
        )
        for line in shards.lines():
            print(line, flush=True)
        for problem in shards.problems:
            print(f"error: {problem}", file=sys.stderr, flush=True)
        if self.aborted:
            print(f"stopped early: more than --max-failures={self.args.max_failures} inputs failed", file=sys.stderr)
        return 1 if counts[FAILED] or self.aborted or shards.problems else 0

    def fold(self) -> pa.Table:
        """The last journal batch written, every streamed input given a row, the journal folded: the manifest."""
        self.journal.flush()  # the last batch: the fold then reads batches only
        snapshot = self.manifest.snapshot()  # the journal, read once for the check and the fold
        if not self.aborted and self.fail_the_unfinished(snapshot[0]):
            self.journal.flush()
            snapshot = self.manifest.snapshot()
        for line in self.manifest.quarantine_damaged():
            print(f"warning: {line}", file=sys.stderr, flush=True)
        return self.manifest.compact(snapshot)


def rows_of_run(current: pa.Table, run_id: str) -> set[str]:
    """The inputs whose newest row in `current` this run wrote."""
    return set(current.filter(pc.equal(current.column("run_id"), run_id)).column("input_uri").to_pylist())
