"""What the batch jobs over videos (dub, embed) share: choosing the work left, streaming it, reporting it.

A job lists its inputs, refuses any layout that could write an input, drops those its manifest already has as done
under the same result id (foley.pipeline.kinds), streams the rest through its Ray Data stages, prints a line per
finished video, folds the manifest journal and prints a summary.
"""

from __future__ import annotations

import _thread
import argparse
import json
import logging
import os
import posixpath
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pyarrow as pa
import pyarrow.compute as pc

from foley.config import ConditionsConfig, ConfigError, FoleyConfig, ProgressConfig
from foley.models.identity import ModelIdentities
from foley.pipeline.conditions import (
    LIST_COLUMNS,
    ConditionError,
    video_conditions,
    video_config_hash,
    video_source_edits,
)
from foley.pipeline.kinds import JobKind, clap_settings, container_settings, image_settings, result_id
from foley.pipeline.layout import BOOKKEEPING_DIR, SEGMENTS_DIR
from foley.pipeline.lease import LeaseLostError, OutputLease
from foley.pipeline.manifest import KEY_COLUMNS, Manifest, RunJournal, utc_now
from foley.pipeline.report_assets import media_uri
from foley.pipeline.rows import FAILED, OK, PENDING, SKIPPED, first_line, pipeline_columns, planned_row
from foley.pipeline.segments import clear_stale_staging
from foley.storage.inputs import LIST_SUFFIXES, InputItem, is_image
from foley.storage.publish import is_partial_name
from foley.storage.store import Storage
from foley.storage.uris import StorageError, UnsafePathError, is_s3, join

log = logging.getLogger("foley.job")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="folder, s3:// prefix, or .csv/.parquet list of URIs")
    parser.add_argument("--output", required=True, type=location, help="folder or s3:// prefix")
    parser.add_argument("--config", default="configs/foley.yaml", help="preset YAML (default: configs/foley.yaml)")
    parser.add_argument("--force", action="store_true", help="redo inputs the manifest already has as ok")
    parser.add_argument(
        "--max-failures", type=int, default=None, metavar="N", help="stop the job once more than N inputs have failed"
    )
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")


def location(uri: str) -> str:
    """A location normalised for comparison: the real path of a local file (links and '..' resolved), or the
    s3://bucket/key itself. The output root is read so: `out`, `./out` and `/abs/out` are one location, in the
    result ids as everywhere."""
    return uri if is_s3(uri) else os.path.realpath(uri)


class Locations:
    """location() of many paths, each folder resolved once: a plan compares a million inputs and outputs that sit in
    a few thousand folders. (The real path of a file that is not a link is its folder's real path and its name.)"""

    def __init__(self):
        self.folders: dict[str, str] = {}

    def __call__(self, uri: str) -> str:
        if is_s3(uri):
            return uri
        folder, name = os.path.split(os.path.abspath(uri))
        if not name or os.path.islink(uri):
            return os.path.realpath(uri)
        if folder not in self.folders:
            self.folders[folder] = os.path.realpath(folder)
        return os.path.join(self.folders[folder], name)


def check_roots(input_root: str, output_root: str) -> None:
    """Outputs inside the input folder would be picked up as inputs by the next run: refuse up front."""
    if not input_root.lower().endswith(LIST_SUFFIXES) and (
        (location(output_root).rstrip("/") + "/").startswith(location(input_root).rstrip("/") + "/")
    ):
        raise StorageError(f"--output {output_root} is inside --input {input_root}; choose an output outside it")


def check_no_input_is_written(
    inputs: list[InputItem], output_root: str, outputs: dict[str, tuple[str, ...]], location: Locations
) -> None:
    """Refuse the whole job before any work if an output location holds an input or would be one."""
    where = {location(item.uri): item.uri for item in inputs}
    root = location(output_root).rstrip("/") + "/"
    if inside := [uri for place, uri in where.items() if place.startswith(root)]:
        raise StorageError(
            f"--output {output_root} holds input {inside[0]}"
            + (f" and {len(inside) - 1} more" if inside[1:] else "")
            + "; outputs must never land where inputs are: choose an output folder or prefix that holds no input"
        )
    for input_uri, written in outputs.items():
        for output_uri in written:
            if location(output_uri) in where:
                raise StorageError(
                    f"the output of {input_uri} would be {output_uri}, which is the input "
                    f"{where[location(output_uri)]}; choose another --output"
                )


def check_gpus(config: FoleyConfig, kind: JobKind, cluster_gpus: float) -> None:
    """Stages that ask for GPUs on a cluster without any would wait forever; say so instead."""
    wanting = [name for name in kind.stages if getattr(config.stages, name).num_gpus > 0]
    if wanting and cluster_gpus == 0:
        message = (
            f"stages {', '.join(wanting)} ask for GPUs but the Ray cluster has none; set "
            f"stages.<name>.num_gpus=0 (or use a CPU preset) or run on a cluster with GPU workers"
        )
        if os.environ.get("RAY_ADDRESS"):  # an autoscaling cluster may still add GPU nodes
            log.warning(message)
        else:
            raise ConfigError(message)


class RayStartError(ConfigError):
    """This machine could not start or join Ray: the job cannot run as set up (exit 2, like a bad setting)."""


def check_local_output(output_root: str, config: FoleyConfig, nodes: int) -> None:
    """A local output on a cluster of several nodes is written on whichever node runs the last stage, and a long
    video's segments staged on two nodes never meet: refuse it, unless every node mounts that folder."""
    if nodes > 1 and not is_s3(output_root) and not config.storage.shared_local_output:
        raise ConfigError(
            f"--output {output_root} is a local folder, but the Ray cluster has {nodes} nodes: each would write its "
            "part on its own disk. Give an s3:// output, or set storage.shared_local_output=true if every node "
            "mounts that folder at the same path"
        )


def connect_ray():
    """Join the cluster in RAY_ADDRESS (as under `ray job submit`), or start a local Ray."""
    import ray  # noqa: PLC0415 - only once there is work: a run with nothing left to do never starts or loads Ray

    if not ray.is_initialized():
        try:
            ray.init(log_to_driver=True)
        except Exception as exc:  # noqa: BLE001 - whatever stops Ray, the job cannot start; say why, not a traceback
            address = os.environ.get("RAY_ADDRESS")
            where = f"join the Ray cluster at RAY_ADDRESS={address}" if address else "start a local Ray"
            raise RayStartError(
                f"could not {where} ({type(exc).__name__}: {first_line(exc)}); check that the machine has free "
                "memory and space under /tmp (or RAY_TMPDIR, whose path must be short), that no other Ray holds its "
                "ports, and try again"
            ) from None
    return ray


def quiet_progress_when_logged(progress: ProgressConfig) -> None:
    """In a terminal Ray Data draws progress bars, which stay. Into a log file or a job's log it prints its
    execution plans and every stage's progress every 10 s instead, screens of it for a short job, while this job
    prints a line per video with the rate and an ETA. So its INFO lines go only to its own log file (ray-data.log in
    the session's logs), unless progress.non_tty_ray_data_lines asks for them, then one total line per interval.
    (Ray Data reads its interval from the environment when it first logs.)"""
    from ray.data import DataContext  # noqa: PLC0415 - Ray is imported only once there is work

    if sys.stdout.isatty():
        return
    if not progress.non_tty_ray_data_lines:
        for handler in logging.getLogger("ray.data").handlers:
            if isinstance(handler, logging.StreamHandler):  # the console; its file handler keeps every line
                handler.setLevel(logging.WARNING)
        return
    os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", str(progress.non_tty_interval_s))
    DataContext.get_current().enable_operator_progress_bars = progress.non_tty_operator_lines


def own_name_problem(relative_path: str) -> str:
    """Why an input's output would collide with the job's own files (which it deletes or rewrites), or ''. The
    path is judged as it will be joined, normalised: `a/../_foley/x.mp4` lands in `_foley/` too."""
    normalised = posixpath.normpath(relative_path)
    first, name = normalised.split("/", 1)[0], normalised.rsplit("/", 1)[-1]
    if first == BOOKKEEPING_DIR:
        return f"its path {relative_path} would land in {first}/, the job's own folder under the output"
    if is_partial_name(name):
        return f"its name {name} is how the job names its unfinished files, which it deletes"
    return ""


def shared_outputs(outputs: dict[str, tuple[str, ...]], location: Locations) -> dict[str, str]:
    """Inputs that write a file another input writes too: each would overwrite the other's result."""
    by_output: dict[str, list[str]] = {}
    for input_uri, written in outputs.items():
        for output_uri in written:
            by_output.setdefault(location(output_uri), []).append(input_uri)
    return {
        input_uri: f"{' and '.join(group)} map to the same output {output}; list only one of them, or give them "
        "different relative paths"
        for output, group in by_output.items()
        if len(group) > 1
        for input_uri in group
    }


def published(outputs: list[str] | None, sizes: list[int] | None, main: str) -> list[tuple[str, int | None]]:
    """An ok row's files with their sizes as published (None where its row is from before sizes were kept)."""
    uris = outputs if outputs is not None else [main]  # a row from before the outputs column wrote its main one
    return [(uri, sizes[index] if sizes and index < len(sizes) else None) for index, uri in enumerate(uris) if uri]


def finished_results(current: pa.Table) -> dict[str, int]:
    """The manifest's finished rows (their indices in `current`) by result id: ok, or skipped (a decision that is
    final too). Done work is found by what it is, not by where its input sits, so a moved library finds its
    results."""
    finished = pc.is_in(current.column("status"), pa.array([OK, SKIPPED])).to_pylist()
    return {result: index for index, result in enumerate(current.column("result_id").to_pylist()) if finished[index]}


def rows_of_run(current: pa.Table, run_id: str) -> set[str]:
    """The inputs whose newest row in `current` this run wrote."""
    return set(current.filter(pc.equal(current.column("run_id"), run_id)).column("input_uri").to_pylist())


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
        self._clap_identity: str | None = None
        self.identities = ModelIdentities(self.storage)  # content digests, cached per node by size and mtime
        self.planned: list[dict] = []  # the rows this run streams: each must end with a row of this run
        self.sequence = 0  # this run's number on its output root, set by the plan
        self.journal: RunJournal | None = None  # the rows this run writes to the manifest, made by the plan
        self.columns = pipeline_columns(config, kind)  # a row's columns besides the plan's, for rows failed here
        self._conditions: dict[tuple, tuple[str, dict, dict] | Exception] = {}  # by an input's list cells
        # A run that loses its lease stops at once: the renewing thread interrupts the driver wherever it waits.
        self.lease = OutputLease(self.storage, args.output, self.id, config.lease, on_lost=_thread.interrupt_main)

    def plan(self, outputs_for: Callable[[InputItem], tuple[str, ...]]) -> list[dict]:
        """The rows of the inputs still to do, after refusing any layout that could write an input.

        `outputs_for` names every file an input's result writes, the main one first. Inputs whose output path
        would be unsafe, that share an output with another input, or whose list line is invalid fail right here.
        """
        check_roots(self.args.input, self.args.output)
        try:
            with self.stopped_if_lease_lost():
                return self._plan(outputs_for)
        except BaseException:
            self.lease.give_back()
            raise

    @contextmanager
    def stopped_if_lease_lost(self) -> Iterator[None]:
        """The renewing thread interrupts the driver wherever it waits once the lease is lost (another run took
        it): that interrupt becomes a LeaseLostError, which the jobs end on with exit 1; a user's ^C stays one."""
        try:
            yield
        except KeyboardInterrupt:
            if not self.lease.lost:
                raise
            raise LeaseLostError(
                f"{self.lease.lost}. This run stopped writing; what it finished is kept and published, and a later "
                "run (once the other one ends) does the rest"
            ) from None

    def _plan(self, outputs_for: Callable[[InputItem], tuple[str, ...]]) -> list[dict]:
        extensions, columns = self.config.input.extensions, ()
        if self.kind.sound_design:
            extensions, columns = extensions + self.config.input.image_extensions, LIST_COLUMNS
        listing = self.storage.list_inputs(self.args.input, extensions, columns)
        inputs, outputs, refused = listing.items, {}, {}
        for item in inputs:
            if item.problem:  # a broken link, a list line with no usable location
                refused[item.uri] = item.problem
            elif collision := own_name_problem(item.relative_path):
                refused[item.uri] = f"{collision}; rename or move the file"
            else:
                try:  # e.g. an object key '../x.mp4'
                    outputs[item.uri] = outputs_for(item)
                except UnsafePathError as exc:
                    refused[item.uri] = str(exc)
        locations = Locations()
        check_no_input_is_written(inputs, self.args.output, outputs, locations)
        self.lease.take()  # the first write; from here to finish(), this run alone writes under the output root
        refused |= shared_outputs(outputs, locations)

        models = self.identify_models()
        config_hash = self.kind.config_hash(self.config, models)
        current, _ = self.manifest.snapshot(columns=KEY_COLUMNS)  # not the whole rows of a large library
        for line in self.manifest.quarantine_damaged():
            print(f"warning: {line}", file=sys.stderr, flush=True)
        # Runs on one output follow each other (the lease): this one's number orders its rows after every earlier
        # row, whatever the clocks of the nodes that wrote them say.
        self.sequence = 1 + (pc.max(current.column("run_seq")).as_py() or 0)
        self.journal = RunJournal(self.manifest, self.id, self.sequence, self.config.journal)
        finished = {} if self.args.force else finished_results(current)
        done_inputs = current.column("input_uri").to_pylist()
        moved: dict[str, str] = {}  # result id: its input's new location
        rows, done_before = [], []  # to do; (row, index in current) of results finished before
        shared = {
            "run_id": self.id,
            "run_seq": self.sequence,
            "model_identities": json.dumps(models, sort_keys=True),
            "settings": json.dumps(self.kind.settings(self.config), sort_keys=True),  # jobs.compare reads them
        }
        for item in inputs:
            written = outputs.get(item.uri, ("",))
            row = planned_row(item, written[0]) | shared  # one string of each shared value for every row
            if written[1:]:
                row["output_uris"] = json.dumps(written)
            try:
                own = self.own_settings(item, row) if item.uri not in refused else {}
            except (ConditionError, StorageError) as exc:
                refused[item.uri], own = str(exc), {}
            row["config_hash"] = video_config_hash(config_hash, own)
            row["result_id"] = result_id(row["config_hash"], item.identity, written[0])
            row["staging_uri"] = join(self.args.output, f"{SEGMENTS_DIR}/{row['result_id']}")
            if self.kind.sound_design and self.config.report.enabled:
                row["report_uri"] = media_uri(self.args.output, row["result_id"])
            if item.uri in refused:  # recorded as failed, never written
                failed = {"status": FAILED, "error": f"{item.uri}: {refused[item.uri]}", "output_uris": "[]"}
                self.journal.add_rows([self.columns | row | failed])
                self.results.append({"status": FAILED})
            elif (done := finished.get(row["result_id"])) is not None:
                done_before.append((row, done))
            else:
                rows.append(row)
        unpublished = self.unpublished(current, [done for _, done in done_before])
        for row, done in done_before:
            if done in unpublished:  # its output is gone or not what was published: made again
                rows.append(row)
                continue
            self.already_done += 1
            if done_inputs[done] != row["input_uri"]:  # the library moved: its row follows the input (by this run)
                moved[row["result_id"]] = row["input_uri"]
        self.journal.add_records(self.moved_rows(moved))
        self.journal.write()
        self.identities.save()  # the reference sounds' digests too
        self.planned = rows
        self.clear_leftovers({row["result_id"] for row in rows})
        self.manifest.record_left_out(left_out := listing.left_out_line())
        if left_out:
            print(left_out, flush=True)
        print(
            f"{len(inputs)} inputs under {self.args.input}: {self.already_done} already done, {len(rows)} to "
            f"process (config {config_hash})",
            flush=True,
        )
        return rows

    def unpublished(self, current: pa.Table, done: list[int]) -> set[int]:
        """Of these finished rows (indices in `current`), those whose outputs are not all there at the size each was
        published with (a row from before sizes were kept: only that it is there). An output deleted, or cut short
        behind the job's back, is made again. Prints how many, with examples."""
        status = current.column("status").to_pylist()
        done = [index for index in done if status[index] == OK]  # a skipped input wrote nothing
        if not done:
            return set()
        outputs, sizes = current.column("outputs").to_pylist(), current.column("output_sizes").to_pylist()
        main = current.column("output_uri").to_pylist()
        expected = {index: published(outputs[index], sizes[index], main[index]) for index in done}
        found = self.storage.sizes([uri for files in expected.values() for uri, _ in files], self.args.output)
        broken = {
            index
            for index, files in expected.items()
            if any(uri not in found or size not in (None, found[uri]) for uri, size in files)
        }
        if broken:
            names = ", ".join(sorted(main[index] for index in broken)[:3])
            print(
                f"{len(broken)} finished output{'s are' if len(broken) > 1 else ' is'} missing or not the size it was "
                f"published with (e.g. {names}); made again",
                flush=True,
            )
        return broken

    def moved_rows(self, moved: dict[str, str]) -> list[dict]:
        """The finished rows of results whose input moved (by result id: its new location), journalled again by this
        run under the new location."""
        if not moved:
            return []
        current, _ = self.manifest.snapshot()  # the whole rows, read only when some input moved
        wanted = current.filter(pc.is_in(current.column("result_id"), pa.array(list(moved))))
        now = utc_now()
        return [
            record | {"input_uri": moved[record["result_id"]], "run_seq": self.sequence, "finished_at": now}
            for record in wanted.to_pylist()
            if record["status"] in (OK, SKIPPED)
        ]

    def own_settings(self, item: InputItem, row: dict) -> dict:
        """What this input's result depends on beyond the job's settings (foley.pipeline.conditions); its
        conditions and kind go into the row."""
        if not self.kind.sound_design:
            return {}
        row["conditions"], own, edits = self.conditions_of(item.columns)
        own = dict(own)
        if edits:
            row["source_edits"] = json.dumps(edits, sort_keys=True)
            own["sources"] = edits
        if is_image(item.relative_path, self.config.input.image_extensions):
            row["image"] = True
            own["image"] = image_settings(self.config)
        return own | container_settings(self.config, row["output_uri"])

    def conditions_of(self, columns: tuple[tuple[str, str], ...]) -> tuple[str, dict, dict]:
        """The conditions of inputs with these list cells (JSON, for the row), what of them goes into their hash,
        and their sound-source edits; worked out once per distinct cells (a folder's million inputs share the
        job's), or the error they give."""
        if columns not in self._conditions:
            try:
                self._conditions[columns] = (
                    *self._own_conditions(video_conditions(self.config.conditions, columns)),
                    video_source_edits(self.config.sources, columns),
                )
            except (ConditionError, StorageError) as exc:
                self._conditions[columns] = exc
        if isinstance(known := self._conditions[columns], Exception):
            raise known
        return known

    def _own_conditions(self, conditions: ConditionsConfig) -> tuple[str, dict]:
        own = {}
        if conditions.hashed() != self.config.conditions.hashed():
            own["conditions"] = conditions.hashed()
        if reference := conditions.reference_audio:
            if not self.storage.identity(reference):
                raise StorageError(f"its reference_audio {reference} does not exist; fix the path or URI")
            own["reference_audio"] = self.identities.of(reference)  # its content: a copy elsewhere is one sound
            if not self.config.uses_clap():  # the CLAP that embeds it is a model of this video only
                own["clap_model"] = self.clap_identity()
                own["clap"] = clap_settings(self.config)
        return json.dumps(conditions.used(), sort_keys=True), own

    @staticmethod
    def own_references(rows: list[dict]) -> bool:
        """Whether any of these videos has a reference sound (the synthesis stage then loads AudioLDM's CLAP)."""
        return any(json.loads(row["conditions"] or "{}").get("reference_audio") for row in rows)

    def clap_identity(self) -> str:
        """The identity of AudioLDM's CLAP, for videos with a reference sound of their own (where it is missing, the
        videos that need it fail, the others go on)."""
        if self._clap_identity is None:
            self._clap_identity = clap_identity(self.storage, self.config, "a reference sound")
        return self._clap_identity

    def clear_leftovers(self, results: set[str]) -> None:
        """What an interrupted run left that this one cannot use: partial files, publication claims, and staged
        segments of results this run does not make (the staged segments of the rest are kept: they resume)."""
        if removed := self.storage.remove_partials(self.args.output):
            print(f"removed {removed} partial files left by an interrupted run", flush=True)
        if removed := clear_stale_staging(self.storage, self.args.output, keep=results):
            print(f"removed {removed} staged segments of results this run does not make", flush=True)

    def identify_models(self) -> dict[str, str]:
        """Each model's identity; an unpinned hub model is pinned to the commit it resolved to, so that every worker
        loads exactly what the hash names."""
        models = self.kind.model_identities(self.config, self.identities)
        self.identities.save()
        audioldm = models.get("audioldm_model", "")
        if audioldm.startswith("hub:") and not self.config.audioldm.revision:
            self.config = self.config.with_overrides(f"audioldm.revision={audioldm.rsplit('@', 1)[1]}")
        return models

    def connect(self):
        """Ray (joined or started), after checking that it can host the stages' resources and reach the output;
        a run that cannot start gives its lease back."""
        from foley.pipeline.attempts import start_ledger  # noqa: PLC0415 - it imports Ray, loaded only for work

        try:
            with self.stopped_if_lease_lost():  # starting Ray takes seconds, in which the lease can be lost
                ray = connect_ray()
                check_gpus(self.config, self.kind, ray.cluster_resources().get("GPU", 0))
                check_local_output(self.args.output, self.config, sum(node["Alive"] for node in ray.nodes()))
                quiet_progress_when_logged(self.config.progress)
                # A batch whose task failed is logged and dropped, not the end of the job: its videos have no row
                # at the end, and finish() fails them by name.
                ray.data.DataContext.get_current().max_errored_blocks = -1
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
            self._follow(videos, total)

    def _follow(self, videos, total: int) -> None:
        max_failures = self.args.max_failures
        failures = 0
        finished: set[str] = set()
        streaming = time.perf_counter()
        for result in videos.iter_rows():
            if one_row_file := result["journal_row"]:  # every row the last stage journalled, into the batches
                self.journal.add(one_row_file)
            path = result["relative_path"]
            if result["status"] == PENDING:  # a segment of a long video, staged until the rest of it is done
                segment, count = int(result["segment"]) + 1, int(result["segment_count"])
                print(f"[{len(finished)}/{total}] segment {segment}/{count} of {path} staged", flush=True)
                continue
            if result["input_uri"] in finished:  # another failed segment of a video already reported
                continue
            finished.add(result["input_uri"])
            self.results.append(result)
            failures += result["status"] == FAILED
            windows = int(result["n_windows"])
            detail = result["error"] if result["status"] != OK else f"{windows} window{'' if windows == 1 else 's'}"
            pace = pace_line(len(finished), total, time.perf_counter() - streaming)
            print(f"[{len(finished)}/{total}] {result['status']:<7} {path}  ({detail})  {pace}", flush=True)
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
            self.journal.add_rows([self.columns | row | {"status": FAILED, "error": error, "output_uris": "[]"}])
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
        if self.aborted:
            print(f"stopped early: more than --max-failures={self.args.max_failures} inputs failed", file=sys.stderr)
        return 1 if counts[FAILED] or self.aborted else 0

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


def pace_line(done: int, total: int, elapsed_s: float) -> str:
    """The rate so far and when the rest should be done at that rate: '2.4 videos/min, ETA 3m10s'."""
    per_minute = done / max(elapsed_s, 1e-9) * 60
    left_s = (total - done) / per_minute * 60
    return f"{per_minute:.1f} videos/min, ETA {clock(left_s)}" if done < total else f"{per_minute:.1f} videos/min"


def clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def clap_identity(storage: Storage, config: FoleyConfig, needed_by: str) -> str:
    """The identity of AudioLDM's CLAP (clap.checkpoint), or a StorageError that says how to make it."""
    try:
        return ModelIdentities(storage).of(config.clap.checkpoint)
    except ConfigError:  # neither there nor a hub model
        raise StorageError(
            f"{needed_by} needs AudioLDM's CLAP, but clap.checkpoint={config.clap.checkpoint} does not exist; make it "
            "with python -m jobs.convert_audioldm_clap, or set clap.checkpoint to where it is"
        ) from None


def fail_setup(exc: Exception) -> int:
    """Exit 2 for what stopped the job before its work (arguments, configuration, storage); 1 for a lease that
    another run took meanwhile, since nothing is wrong with the command."""
    print(f"error: {exc}", file=sys.stderr)
    return 1 if isinstance(exc, LeaseLostError) else 2
