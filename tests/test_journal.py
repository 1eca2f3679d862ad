"""The manifest's journal at scale: the driver's batches stand for the last stage's one-row files, so reading it back
costs a request per batch; a job killed between batches, or during the fold, loses no row (a real S3 server, moto)."""

from collections import Counter
from datetime import UTC, datetime

import pytest

from foley.config import JournalConfig
from foley.pipeline.journal import RunJournal
from foley.pipeline.kinds import DUB
from foley.pipeline.manifest import Manifest
from foley.storage.store import Storage


def finished_row(index: int, run: int, status: str = "ok") -> dict:
    return {
        "input_uri": f"s3://library/v{index:03d}.mp4",
        "relative_path": f"v{index:03d}.mp4",
        "result_id": f"result-{index}-{run}",
        "run_id": f"run{run}",
        "run_seq": run,
        "status": status,
        "finished_at": datetime(2026, 12, 1, 10, index % 60, tzinfo=UTC).timestamp(),
    }


def journal_a_run(manifest: Manifest, run: int, indices: range, batch_rows: int) -> RunJournal:
    """What a run does: the last stage writes each row's file and hands it over; the driver batches them."""
    journal = RunJournal(manifest, f"run{run}", run, JournalConfig(batch_rows=batch_rows, batch_seconds=3600))
    for index in indices:
        journal.add(manifest.record(finished_row(index, run)))
    return journal


def requests_of(storage: Storage) -> Counter:
    requests: Counter = Counter()
    storage.s3.meta.events.register("before-send.s3", lambda request, **_: requests.update([request.method]))
    return requests


def test_a_journal_is_read_back_a_batch_at_a_time_and_the_fold_deletes_it_in_one_request(bucket):
    name, storage = bucket
    journal_a_run(Manifest(f"s3://{name}/out", storage, DUB), 1, range(25), batch_rows=10)  # killed: 5 not batched

    reader = Manifest(f"s3://{name}/out", Storage(storage.config), DUB)
    requests = requests_of(reader.storage)
    current = reader.current()
    assert sorted(row["relative_path"] for row in current.values()) == [f"v{index:03d}.mp4" for index in range(25)]
    # Two listings (the journal, and the folder of jobs from before `_foley/`), the two batches, the five rows no
    # batch holds.
    assert requests["GET"] == 2 + 2 + 5

    requests.clear()
    folded = reader.compact().to_pylist()
    assert len(folded) == 25 and {row["status"] for row in folded} == {"ok"}
    assert requests["POST"] == 1  # the 25 + 2 journal files, in one DeleteObjects request
    assert storage.list_prefix(f"s3://{name}/out/_foley/manifest/rows/") == []
    assert len(reader.current()) == 25


def test_a_later_runs_row_is_read_even_where_an_earlier_batch_holds_its_input(bucket):
    name, storage = bucket
    manifest = Manifest(f"s3://{name}/out", storage, DUB)
    journal_a_run(manifest, 1, range(4), batch_rows=4)  # run 1: all four in one batch
    manifest.record(finished_row(2, 2, status="failed"))  # run 2 redoes v002 (forced), and is killed
    current = Manifest(f"s3://{name}/out", storage, DUB).current()
    assert current["s3://library/v002.mp4"]["run_seq"] == 2 and current["s3://library/v002.mp4"]["status"] == "failed"
    assert [current[f"s3://library/v{index:03d}.mp4"]["run_seq"] for index in (0, 1, 3)] == [1, 1, 1]


class Killed(BaseException):
    """The job's process ends here: nothing after it runs (not an error anything would catch)."""


class DiesDuringTheFold(Storage):
    """Real storage, whose process is killed at one point of the fold."""

    def __init__(self, config, at: str):
        super().__init__(config)
        self.at = at

    def write_bytes(self, uri: str, data: bytes) -> None:
        if self.at == "writing the manifest" and uri.endswith("/manifest.parquet"):
            raise Killed
        super().write_bytes(uri, data)

    def delete_many(self, uris: list[str]) -> None:
        if self.at == "halfway through the deletes":
            super().delete_many(uris[: len(uris) // 2])
            raise Killed
        super().delete_many(uris)


@pytest.mark.parametrize("at", ["writing the manifest", "halfway through the deletes"])
def test_a_job_killed_during_the_fold_loses_no_row(bucket, at):
    name, storage = bucket
    journal_a_run(Manifest(f"s3://{name}/out", storage, DUB), 1, range(12), batch_rows=5).write()
    journal_a_run(Manifest(f"s3://{name}/out", storage, DUB), 2, range(6, 9), batch_rows=5)  # redone, not batched
    expected = Manifest(f"s3://{name}/out", storage, DUB).current()
    assert [expected[f"s3://library/v{index:03d}.mp4"]["run_seq"] for index in (5, 6, 8, 9)] == [1, 2, 2, 1]

    with pytest.raises(Killed):
        Manifest(f"s3://{name}/out", DiesDuringTheFold(storage.config, at), DUB).compact()

    after = Manifest(f"s3://{name}/out", storage, DUB)
    assert after.current() == expected  # every row, and the newest of each input
    assert after.compact().to_pylist() == sorted(expected.values(), key=lambda row: row["relative_path"])
    assert storage.list_prefix(f"s3://{name}/out/_foley/manifest/rows/") == []
