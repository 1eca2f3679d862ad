"""The job's own files live under one reserved folder, `<output>/_foley/`; an output from before it still counts."""

from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from foley.config import StorageConfig
from foley.pipeline.kinds import DUB
from foley.pipeline.layout import LEGACY_MANIFEST_DIR, MANIFEST_DIR
from foley.pipeline.manifest import Manifest, manifest_schema
from foley.storage.store import Storage


def legacy_row(name: str, hour: int) -> dict:
    return {
        "input_uri": f"/lib/{name}",
        "relative_path": name,
        "result_id": f"id-{name}",
        "status": "ok",
        "finished_at": datetime(2026, 11, 1, hour, tzinfo=UTC),
    }


def test_a_manifest_from_before_the_reserved_folder_still_counts_and_is_left_in_place(tmp_path):
    legacy = tmp_path / LEGACY_MANIFEST_DIR
    (legacy / "rows").mkdir(parents=True)
    schema = manifest_schema(DUB)
    pq.write_table(
        pa.Table.from_pylist([legacy_row("a.mp4", 1), legacy_row("b.mp4", 1)], schema=schema),
        legacy / "manifest.parquet",
    )
    pq.write_table(pa.Table.from_pylist([legacy_row("b.mp4", 2)], schema=schema), legacy / "rows" / "b.parquet")
    before = {path: path.read_bytes() for path in legacy.rglob("*.parquet")}

    manifest = Manifest(str(tmp_path), Storage(StorageConfig()), DUB)
    current = manifest.current()
    assert sorted(current) == ["/lib/a.mp4", "/lib/b.mp4"]
    assert current["/lib/b.mp4"]["finished_at"].hour == 2  # the journal's newer row wins, as it did before
    manifest.record({**legacy_row("c.mp4", 3), "finished_at": None})
    assert sorted(manifest.current()) == ["/lib/a.mp4", "/lib/b.mp4", "/lib/c.mp4"]

    folded = manifest.compact().to_pylist()
    assert [row["relative_path"] for row in folded] == ["a.mp4", "b.mp4", "c.mp4"]
    assert (tmp_path / MANIFEST_DIR / "manifest.parquet").exists()
    assert {path: path.read_bytes() for path in legacy.rglob("*.parquet")} == before  # never deleted or rewritten
    (legacy / "manifest.parquet").unlink()  # once folded here, the old folder is no longer read
    assert sorted(manifest.current()) == ["/lib/a.mp4", "/lib/b.mp4", "/lib/c.mp4"]


def test_the_newest_row_is_the_later_runs_whatever_the_node_clocks_say(tmp_path):
    """Rows are ordered by the run that wrote them (run_seq; runs on one output follow each other under the lease),
    and by finish time only within a run: a node whose clock is an hour behind cannot resurrect an older row."""
    manifest = Manifest(str(tmp_path / "out"), Storage(StorageConfig()), DUB)

    def row(run_seq: int, hour: int, status: str) -> dict:
        return legacy_row("a.mp4", hour) | {"run_seq": run_seq, "status": status, "result_id": f"id-{run_seq}"}

    manifest.record(row(3, 10, "failed"))
    manifest.compact()  # run 3's row, folded
    manifest.record(row(4, 9, "ok"))  # run 4, on a node whose clock is behind
    assert manifest.current()["/lib/a.mp4"]["run_seq"] == 4
    manifest.compact()
    manifest.record(row(2, 11, "failed"))  # a late row of an earlier run, with a clock ahead
    assert manifest.current()["/lib/a.mp4"]["run_seq"] == 4
    assert manifest.compact().column("run_seq").to_pylist() == [4]
