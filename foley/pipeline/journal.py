"""A run's rows on their way into the manifest's journal (foley.pipeline.manifest): gathered by the driver and written
one batch file at a time, so that reading the journal back costs a request per batch, not per row."""

from __future__ import annotations

import io
import logging
import time

import pyarrow as pa
import pyarrow.parquet as pq

from foley.config import JournalConfig
from foley.pipeline.manifest import BATCH_PREFIX, Manifest, manifest_row, read_parquet, utc_now
from foley.storage.uris import StorageError, join

log = logging.getLogger("foley.manifest")


class RunJournal:
    """The rows of one run as the driver receives them (the last stage's one-row files) or makes them, written to
    the journal one batch at a time, so that reading the journal back costs a request per batch, not per row."""

    def __init__(self, manifest: Manifest, run_id: str, run_seq: int, config: JournalConfig):
        self.manifest, self.run_id, self.run_seq, self.config = manifest, run_id, run_seq, config
        self.waiting: list[pa.Table] = []
        self.batches = 0
        self.last_write = time.monotonic()

    def add(self, one_row_file: bytes) -> None:
        """A row the last stage journalled, as it wrote it."""
        self._add(read_parquet(one_row_file, uri="a row the last stage sent"))

    def add_rows(self, rows: list[dict]) -> None:
        """Pipeline rows the driver decided itself (refused by the plan, left without a result)."""
        self.add_records([manifest_row(row, self.manifest.schema) for row in rows])

    def add_records(self, records: list[dict]) -> None:
        """Manifest rows the driver made (see add_rows; a result found under its input's new location)."""
        if records:
            records = [record | {"finished_at": record["finished_at"] or utc_now()} for record in records]
            self._add(pa.Table.from_pylist(records, schema=self.manifest.schema))

    def _add(self, table: pa.Table) -> None:
        self.waiting.append(table)
        if (
            sum(len(waiting) for waiting in self.waiting) >= self.config.batch_rows
            or time.monotonic() - self.last_write >= self.config.batch_seconds
        ):
            self.write()

    def flush(self) -> None:
        """Write the waiting rows now, or raise: the fold must not go on without them."""
        self.write()
        if self.waiting:
            raise StorageError(f"the journal's last batch could not be written under {self.manifest.journal_root}")

    def write(self) -> None:
        """Write the waiting rows as one batch file. Should that fail, they wait for the next batch; the rows of the
        last stage are in its one-row files meanwhile."""
        if not self.waiting:
            return
        name = f"{BATCH_PREFIX}{self.run_seq:08d}-{self.run_id}-{self.batches:06d}.parquet"
        sink = io.BytesIO()
        pq.write_table(pa.concat_tables(self.waiting), sink)
        try:
            self.manifest.storage.write_bytes(join(self.manifest.journal_root, name), sink.getvalue())
        except StorageError as exc:  # a full disk, an S3 outage: the rows stay here
            log.warning("a batch of the manifest's journal could not be written (%s); it is tried again later", exc)
            return
        self.waiting, self.batches, self.last_write = [], self.batches + 1, time.monotonic()
