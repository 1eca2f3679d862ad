"""The job manifest: one Parquet row per input under `<output>/_foley/manifest/`.

The last stage journals each video's row the moment its output is published (`rows/<id>.parquet`, one small file
per input, rewritten on a redo), so a job killed at any point loses no finished work. At the end the driver folds
the journal into `manifest.parquet` and then removes the folded journal files; a reader merges both, newest row
per input wins, so a kill during that fold loses nothing either.
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from foley.pipeline.kinds import JobKind
from foley.pipeline.layout import LEGACY_MANIFEST_DIR, MANIFEST_DIR
from foley.pipeline.rows import OK, SKIPPED
from foley.storage.store import Storage
from foley.storage.uris import join

# One entry per window: the part of the video it looks at and the shot it lies in.
FOLDED_NAME, JOURNAL_DIR = "manifest.parquet", "rows"  # under the manifest folder (and the legacy one)
WINDOWS_TYPE = pa.list_(pa.struct([("start_s", pa.float64()), ("end_s", pa.float64()), ("shot", pa.int64())]))
# One entry per segment of a long video: its windows, the synthesis actor and the run that made them, and how long
# synthesis took.
SEGMENTS_TYPE = pa.list_(
    pa.struct(
        [
            ("first_window", pa.int64()),
            ("windows", pa.int64()),
            ("synthesize_worker", pa.string()),
            ("run_id", pa.string()),
            ("seconds_synthesize", pa.float64()),
        ]
    )
)
# One entry per window: what shaped its sound. The weight of each condition where more than the video's own
# picture was mixed, the zero-shot mapper's labels with their weights, and the CLAP scores of its candidates with the
# index of the one kept.
WINDOW_NOTES_TYPE = pa.list_(
    pa.struct(
        [
            ("weights", pa.struct([("visual", pa.float64()), ("prompt", pa.float64()), ("reference", pa.float64())])),
            ("labels", pa.list_(pa.struct([("label", pa.string()), ("weight", pa.float64())]))),
            ("scores", pa.list_(pa.float64())),
            ("kept", pa.int64()),
        ]
    )
)
# manifest column: the row's JSON column
JSON_COLUMNS = {
    "windows": "windows",
    "segments": "segment_info",
    "window_notes": "window_notes",
    "outputs": "output_uris",
}


def manifest_schema(kind: JobKind) -> pa.Schema:
    """The manifest's columns: the job's model identifiers and a seconds_<stage> column per stage."""
    return pa.schema(
        [
            ("input_uri", pa.string()),
            ("input_identity", pa.string()),
            ("output_uri", pa.string()),
            ("outputs", pa.list_(pa.string())),  # every file written, the main one first (a sidecar sound file)
            ("result_id", pa.string()),
            ("run_id", pa.string()),  # the run that wrote the row
            ("run_seq", pa.int64()),  # that run's number on this output root: a later run has a larger one
            ("relative_path", pa.string()),
            ("status", pa.string()),
            ("error", pa.string()),
            ("duration_s", pa.float64()),
            ("n_windows", pa.int64()),
            ("windows", WINDOWS_TYPE),
            ("segments", SEGMENTS_TYPE),
            ("conditions", pa.string()),  # JSON: the conditions that changed the sound (prompt, reference, weights)
            ("window_notes", WINDOW_NOTES_TYPE),
            ("has_audio", pa.bool_()),
            ("audio_level_dbfs", pa.float64()),
            ("notes", pa.string()),
            ("seed", pa.int64()),
            ("config_hash", pa.string()),
            ("model_identities", pa.string()),
            ("decoder", pa.string()),  # what parsed and decoded the video: torchcodec and the FFmpeg it loaded
            *[(model, pa.string()) for model in kind.models],
            *[(f"seconds_{stage}", pa.float64()) for stage in kind.stages],
            ("started_at", pa.timestamp("ms", tz="UTC")),
            ("finished_at", pa.timestamp("ms", tz="UTC")),
        ]
    )


def newer(record: dict, than: dict) -> bool:
    """Whether `record` was written after `than`: by a later run, or by the same run and finished later."""
    return (record.get("run_seq") or 0, record["finished_at"]) >= (than.get("run_seq") or 0, than["finished_at"])


def newest_rows(records: list[dict]) -> dict[str, dict]:
    """The newest of `records` per input, keyed by input URI, and of finished rows of one result, only the newest."""
    latest: dict[str, dict] = {}
    for record in records:
        known = latest.get(record["input_uri"])
        if known is None or newer(record, known):
            latest[record["input_uri"]] = record
    newest: dict[str, dict] = {}
    for record in latest.values():
        finished = record["status"] in (OK, SKIPPED) and record.get("result_id")
        key = f"result:{record['result_id']}" if finished else f"input:{record['input_uri']}"
        known = newest.get(key)
        if known is None or newer(record, known):
            newest[key] = record
    return {record["input_uri"]: record for record in newest.values()}


def utc_now() -> datetime:
    return datetime.now(UTC)


def manifest_row(row: dict, schema: pa.Schema) -> dict:
    """The manifest's columns of a pipeline row, with plain Python types."""
    record = {}
    for field in schema:
        value = row.get(field.name)
        if field.name in JSON_COLUMNS:
            value = json.loads(str(row.get(JSON_COLUMNS[field.name]) or "null"))
        if hasattr(value, "item"):  # numpy scalar
            value = value.item()
        if field.name.endswith("_at") and isinstance(value, float):
            value = datetime.fromtimestamp(value, UTC) if value else None
        record[field.name] = value
    return record


class Manifest:
    def __init__(self, output_root: str, storage: Storage, kind: JobKind):
        self.storage = storage
        self.schema = manifest_schema(kind)
        self.root = join(output_root, MANIFEST_DIR)
        self.compacted_uri = join(self.root, FOLDED_NAME)
        self.journal_root = join(self.root, JOURNAL_DIR)
        self.listing_uri = join(self.root, "listing.json")
        self.legacy_root = join(output_root, LEGACY_MANIFEST_DIR)

    def _journal_uri(self, input_uri: str) -> str:
        return join(self.journal_root, hashlib.sha256(input_uri.encode()).hexdigest()[:32] + ".parquet")

    def record(self, row: dict) -> None:
        """Journal one finished (ok, failed or skipped) row; it replaces any earlier row of the same input."""
        record = manifest_row(row, self.schema)
        record["finished_at"] = record["finished_at"] or utc_now()
        self.storage.write_bytes(self._journal_uri(record["input_uri"]), self._to_parquet([record]))

    def record_moved(self, record: dict, input_uri: str, run_seq: int) -> None:
        """Journal a finished row again under the input's new location (the same result: same content, settings
        and output), by the run that found it there; it replaces the row of the old location (current() keeps one
        row per result)."""
        moved = record | {"input_uri": input_uri, "run_seq": run_seq, "finished_at": utc_now()}
        self.storage.write_bytes(self._journal_uri(input_uri), self._to_parquet([moved]))

    def record_left_out(self, left_out: str) -> None:
        """What the last run's listing left out of the input ('' for nothing), for the report to say."""
        self.storage.write_bytes(self.listing_uri, json.dumps({"left_out": left_out}).encode())

    def left_out(self) -> str:
        if not self.storage.exists(self.listing_uri):
            return ""
        return json.loads(self.storage.read_bytes(self.listing_uri))["left_out"]

    def _journal(self, root: str) -> dict[str, dict]:
        rows = {}
        for uri in self.storage.list_prefix(join(root, JOURNAL_DIR) + "/"):
            if uri.endswith(".parquet"):
                for record in pq.read_table(io.BytesIO(self.storage.read_bytes(uri))).to_pylist():
                    rows[uri] = record
        return rows

    def _folded(self, root: str) -> list[dict]:
        uri = join(root, FOLDED_NAME)
        if not self.storage.exists(uri):
            return []
        return pq.read_table(io.BytesIO(self.storage.read_bytes(uri))).to_pylist()

    def _legacy(self) -> list[dict]:
        """The rows a job from before the reserved folder left in `_manifest/`, until the first fold here holds
        them (they are left in place: the job never deletes what an older version of it published)."""
        if self.storage.exists(self.compacted_uri):
            return []
        return self._folded(self.legacy_root) + list(self._journal(self.legacy_root).values())

    def snapshot(self) -> tuple[dict[str, dict], list[str]]:
        """The current rows (see current()) and the journal files they were read from, each read once."""
        journal = self._journal(self.root)
        return newest_rows(self._legacy() + self._folded(self.root) + list(journal.values())), list(journal)

    def current(self) -> dict[str, dict]:
        """The newest row of every input that has one, keyed by input URI; of finished rows of one result (an
        input that moved), only the newest. Newest means of the latest run (run_seq; rows from before it came
        first), then, within a run, the later finish."""
        return self.snapshot()[0]

    def compact(self, snapshot: tuple[dict[str, dict], list[str]] | None = None) -> list[dict]:
        """Fold the journal into manifest.parquet (written whole, in one step), then drop the folded files: those
        of `snapshot` (a snapshot() the caller just took, so the journal is not read twice) or of a fresh one."""
        current, journal_uris = snapshot or self.snapshot()
        rows = sorted(current.values(), key=lambda record: record["relative_path"])
        self.storage.write_bytes(self.compacted_uri, self._to_parquet(rows))
        for uri in journal_uris:
            self.storage.delete(uri)
        return rows

    def _to_parquet(self, records: list[dict]) -> bytes:
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records, schema=self.schema), sink)
        return sink.getvalue()
