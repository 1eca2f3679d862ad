"""The job manifest: one Parquet row per input under `<output>/_foley/manifest/`.

Rows reach it through a journal (`rows/`), so that a job killed at any point loses no finished work:
- the last stage writes each video's row as a one-row file the moment its output is published
  (`rows/<input digest>-<run id>.parquet`), and hands the same row to the driver;
- the driver writes the rows it receives as one file per batch (`rows/batch-<run seq>-<run id>-<n>.parquet`, every
  journal.batch_rows rows or journal.batch_seconds; foley.pipeline.journal), with the rows it makes itself (inputs
  refused by the plan, moved results, inputs left without a result). A batch stands for the one-row files of its
  rows, which are then never read: a reader reads the batches, and only the one-row files no batch holds (those of a
  run killed before its last batch);
- at the end the driver folds the journal into `manifest.parquet` (written whole, in one step) and then deletes the
  journal files it read or that a batch stood for (1,000 per request in S3). A reader merges the folded manifest and
  the journal, newest row per input wins, so a kill during the fold loses nothing either.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from foley.pipeline.columns import COLUMNS, OK, SKIPPED, TIME, TIMES, Column, kind_columns
from foley.pipeline.kinds import JobKind
from foley.pipeline.layout import LEGACY_MANIFEST_DIR, MANIFEST_DIR
from foley.storage.store import Storage
from foley.storage.uris import StorageError, join

log = logging.getLogger("foley.manifest")

FOLDED_NAME, JOURNAL_DIR = "manifest.parquet", "rows"  # under the manifest folder (and the legacy one)
BATCH_PREFIX = "batch-"  # a journal file of the driver's, many rows; the others hold one row each


def manifest_columns(kind: JobKind) -> tuple[Column, ...]:
    """The columns of a row that the manifest keeps (foley.pipeline.columns), with the job's model identifiers and
    a seconds_<stage> column per stage."""
    every = (*COLUMNS, *kind_columns(kind.models, kind.stages), *TIMES)
    return tuple(column for column in every if column.manifest is not None)


def manifest_schema(kind: JobKind) -> pa.Schema:
    return pa.schema([(column.name, column.manifest) for column in manifest_columns(kind)])


# What the newest row of each input is chosen by (newest_rows), and what a plan checks of a finished result's
# outputs: a plan reads only these of a large manifest.
KEY_COLUMNS = ("input_uri", "output_uri", "result_id", "status", "run_seq", "finished_at", "outputs", "output_sizes")
QUARANTINE_DIR = "quarantine"  # under the manifest folder: damaged journal files, moved aside, never deleted


class DamagedFileError(StorageError):
    """A manifest or journal file that is not readable Parquet (cut short, empty, overwritten)."""


def read_parquet(content: bytes, columns: tuple[str, ...] | None = None, uri: str = "") -> pa.Table:
    """A manifest or journal file's table: all of its columns, or those of `columns` it has."""
    try:
        source = pq.ParquetFile(io.BytesIO(content))
        names = set(source.schema_arrow.names)
        return source.read(columns=None if columns is None else [name for name in columns if name in names])
    except (pa.ArrowException, OSError) as exc:  # Arrow reports a damaged file as ArrowInvalid or OSError
        raise DamagedFileError(f"{uri or 'a manifest file'} is damaged ({len(content)} bytes: {exc})") from None


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A table read from any version's manifest or journal, with exactly `schema`'s columns: a column it lacks is
    null, one it has beyond them is dropped."""
    columns = [
        table.column(field.name).cast(field.type)
        if field.name in table.column_names
        else pa.nulls(len(table), field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def _last_of_each(table: pa.Table, key: str, order: list[str]) -> pa.Table:
    """Of the rows of each `key`, the last in `order` (ascending): sorted by key then order, a row is the last of
    its key when the next row's key differs."""
    sort_keys = [(column, "ascending", "at_start") for column in (key, *order)]
    table = table.take(pc.sort_indices(table, sort_keys=sort_keys))
    keys = table.column(key).combine_chunks()
    if len(keys) == 0:
        return table
    differs = pc.not_equal(keys.slice(0, len(keys) - 1), keys.slice(1))
    return table.filter(pa.concat_arrays([differs, pa.array([True])]))


def newest_rows(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    """The newest row of each input in `tables` (in the order they were written: a later table wins a tie), and of
    the finished rows of one result (an input that moved), only the newest. Newest means of the latest run
    (run_seq; rows from before it came first), then, within a run, the later finish. In Arrow: a library of a
    million inputs is never held as Python rows."""
    table = pa.concat_tables([conform(table, schema) for table in tables]) if tables else schema.empty_table()
    order = ["_run", "finished_at", "_written"]
    table = table.append_column("_run", pc.fill_null(table.column("run_seq"), 0))
    table = table.append_column("_written", pa.array(range(len(table)), pa.int64()))
    table = _last_of_each(table, "input_uri", order)
    finished = pc.and_(
        pc.is_in(table.column("status"), pa.array([OK, SKIPPED])),
        pc.not_equal(pc.fill_null(table.column("result_id"), ""), ""),
    )
    one_per = pc.if_else(
        finished,
        pc.binary_join_element_wise("result:", table.column("result_id"), ""),
        pc.binary_join_element_wise("input:", table.column("input_uri"), ""),
    )
    table = _last_of_each(table.append_column("_one_per", one_per), "_one_per", order)
    # One ok row per output location: an input that moved and changed made its result anew, at the same output,
    # and its new row supersedes the old input's (whose output it replaced).
    ok = pc.fill_null(
        pc.and_(pc.equal(table.column("status"), OK), pc.not_equal(pc.fill_null(table.column("output_uri"), ""), "")),
        False,
    )
    per_output = pc.if_else(
        ok,
        pc.binary_join_element_wise("output:", table.column("output_uri"), ""),
        pc.binary_join_element_wise("input:", table.column("input_uri"), ""),
    )
    table = _last_of_each(table.append_column("_per_output", per_output), "_per_output", order)
    return table.drop_columns(["_run", "_written", "_one_per", "_per_output"])


JSON_COLUMNS = {column.name for column in COLUMNS if column.json}  # carried as JSON text, kept decoded


def utc_now() -> datetime:
    return datetime.now(UTC)


def manifest_row(row: dict, schema: pa.Schema) -> dict:
    """The manifest's columns of a pipeline row, with plain Python types (its JSON columns decoded)."""
    record = {}
    for field in schema:
        value = row.get(field.name)
        if field.name in JSON_COLUMNS:
            value = json.loads(str(value or "null"))
        if hasattr(value, "item"):  # numpy scalar
            value = value.item()
        if field.type == TIME and isinstance(value, float):
            value = datetime.fromtimestamp(value, UTC) if value else None
        record[field.name] = value
    return record


def one_row_name(input_uri: str, run_id: str | None) -> str:
    """The name of the journal file the last stage writes for one input's row in one run."""
    return f"{hashlib.sha256(input_uri.encode()).hexdigest()[:32]}-{run_id or 'unknown'}.parquet"


class Manifest:
    def __init__(self, output_root: str, storage: Storage, kind: JobKind):
        self.storage = storage
        self.schema = manifest_schema(kind)
        self.root = join(output_root, MANIFEST_DIR)
        self.compacted_uri = join(self.root, FOLDED_NAME)
        self.journal_root = join(self.root, JOURNAL_DIR)
        self.listing_uri = join(self.root, "listing.json")
        self.quarantine_root = join(self.root, QUARANTINE_DIR)
        self.legacy_root = join(output_root, LEGACY_MANIFEST_DIR)
        self.damaged: dict[str, str] = {}  # journal files found damaged: why

    def record(self, row: dict) -> bytes:
        """Journal one finished (ok, failed or skipped) row as a file of its own; its Parquet bytes, for the
        driver's batch. Should the file not be written (a full disk), the driver's batch still holds the row, and
        only a driver killed before that batch loses it: the input is then done again, never left wrong."""
        record = manifest_row(row, self.schema)
        record["finished_at"] = record["finished_at"] or utc_now()
        content = self.to_parquet([record])
        uri = join(self.journal_root, one_row_name(record["input_uri"], record["run_id"]))
        try:
            self.storage.write_bytes(uri, content)
        except StorageError as exc:
            log.warning("%s's row could not be journalled by the last stage (%s); the driver keeps it", uri, exc)
        return content

    def record_left_out(self, left_out: str) -> None:
        """What the last run's listing left out of the input ('' for nothing), for the report to say."""
        self.storage.write_bytes(self.listing_uri, json.dumps({"left_out": left_out}).encode())

    def left_out(self) -> str:
        if not self.storage.exists(self.listing_uri):
            return ""
        try:
            return str(json.loads(self.storage.read_bytes(self.listing_uri))["left_out"])
        except (ValueError, KeyError, TypeError):  # damaged: the next run writes it again
            return ""

    def _journal(self, root: str, columns: tuple[str, ...] | None) -> tuple[list[pa.Table], list[str]]:
        """The journal's tables (`columns` of them, or all), and every file of it: the batches, then the one-row
        files no batch holds, each read storage.parallel_requests at a time (one-row files a batch stands for are
        listed, not read). A damaged file is passed over (see damaged)."""
        uris = [uri for uri in self.storage.list_prefix(join(root, JOURNAL_DIR) + "/") if uri.endswith(".parquet")]
        batches = [uri for uri in uris if uri.rsplit("/", 1)[-1].startswith(BATCH_PREFIX)]
        tables = self._readable(batches, columns and (*columns, "run_id"))
        held = {
            one_row_name(input_uri, run_id)
            for table in tables
            for input_uri, run_id in zip(
                table.column("input_uri").to_pylist(), table.column("run_id").to_pylist(), strict=True
            )
        }
        singles = [uri for uri in uris if uri not in batches and uri.rsplit("/", 1)[-1] not in held]
        tables += self._readable(singles, columns)
        return tables, [uri for uri in uris if uri not in self.damaged]

    def _readable(self, uris: list[str], columns: tuple[str, ...] | None) -> list[pa.Table]:
        """The tables of these journal files; a damaged one is noted in `damaged`, with why, and passed over: the
        rows it held are lost, so their inputs are redone (a batch's rows are still in their one-row files, which
        are read instead)."""
        tables = []
        for uri, content in zip(uris, self.storage.read_many(uris), strict=True):
            try:
                tables.append(read_parquet(content, columns, uri))
            except DamagedFileError as exc:
                if uri not in self.damaged:
                    log.warning("%s; its rows are passed over, and their inputs redone", exc)
                self.damaged[uri] = str(exc)
        return tables

    def quarantine_damaged(self) -> list[str]:
        """Move the damaged journal files found so far aside, into `quarantine/` beside the journal (never deleted:
        a person may want to look), so that no later run reads them again. What was moved, as lines to print."""
        moved = []
        for uri, why in sorted(self.damaged.items()):
            aside = join(self.quarantine_root, uri.rsplit("/", 1)[-1])
            self.storage.write_bytes(aside, self.storage.read_bytes(uri))
            self.storage.delete(uri)
            moved.append(f"{why}: moved to {aside}; the inputs whose rows it held are redone")
        self.damaged.clear()
        return moved

    def _folded(self, root: str, columns: tuple[str, ...] | None) -> list[pa.Table]:
        uri = join(root, FOLDED_NAME)
        if not self.storage.exists(uri):
            return []
        try:
            return [read_parquet(self.storage.read_bytes(uri), columns, uri)]
        except DamagedFileError as exc:
            raise DamagedFileError(
                f"{exc}. It holds the rows of every finished input, so no run goes on without it: restore it from a "
                "copy (S3 versioning, a backup), or move it aside to start the bookkeeping over (every input it "
                "held is then done again; outputs are overwritten, never deleted)"
            ) from None

    def _legacy(self, columns: tuple[str, ...] | None) -> list[pa.Table]:
        """The rows a job from before the reserved folder left in `_manifest/`, until the first fold here holds
        them (they are left in place: the job never deletes what an older version of it published)."""
        if self.storage.exists(self.compacted_uri):
            return []
        return self._folded(self.legacy_root, columns) + self._journal(self.legacy_root, columns)[0]

    def snapshot(self, columns: tuple[str, ...] | None = None) -> tuple[pa.Table, list[str]]:
        """The current rows (see current()), as one table, and the journal files they stand on, each read once.
        With `columns` (among them KEY_COLUMNS), only those: what a plan needs of a manifest of a million rows."""
        schema = self.schema if columns is None else pa.schema([self.schema.field(name) for name in columns])
        journal, uris = self._journal(self.root, columns)
        tables = self._legacy(columns) + self._folded(self.root, columns) + journal
        return newest_rows(tables, schema), uris

    def current(self) -> dict[str, dict]:
        """The newest row of every input that has one, keyed by input URI; of finished rows of one result (an
        input that moved), only the newest. Newest means of the latest run (run_seq; rows from before it came
        first), then, within a run, the later finish."""
        return {row["input_uri"]: row for row in self.snapshot()[0].to_pylist()}

    def compact(self, snapshot: tuple[pa.Table, list[str]] | None = None) -> pa.Table:
        """Fold the journal into manifest.parquet (written whole, in one step), then delete the folded files: those
        of `snapshot` (a snapshot() the caller just took, so the journal is not read twice) or of a fresh one."""
        current, journal_uris = snapshot or self.snapshot()
        rows = current.sort_by("relative_path")
        sink = io.BytesIO()
        pq.write_table(rows, sink)
        self.storage.write_bytes(self.compacted_uri, sink.getvalue())
        self.storage.delete_many(journal_uris)
        return rows

    def to_parquet(self, records: list[dict]) -> bytes:
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records, schema=self.schema), sink)
        return sink.getvalue()
