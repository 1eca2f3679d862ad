"""Damaged bookkeeping and odd libraries, through the dub job's plan: a journal file cut short is quarantined and
only its rows are redone, a damaged manifest is named with what to do, an output deleted or cut short behind the
job's back is made again, and a moved-and-changed input leaves one row per output."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, dub_command, finish_rows, plan_dub, tiny_overrides
from foley.media.render import render_test_video
from foley.pipeline.kinds import DUB
from foley.pipeline.manifest import Manifest, one_row_name
from foley.storage.store import Storage
from foley.storage.uris import StorageError


def library(root: Path, names=("a.mp4", "b.mp4", "c.mp4")) -> Path:
    for name in names:
        render_test_video(root / name, 1.0, 64, 48, 10)
    return root


def journal_file(output: Path, row: dict) -> Path:
    return output / "_foley/manifest/rows" / one_row_name(row["input_uri"], row["run_id"])


def test_a_journal_file_cut_short_is_quarantined_and_only_its_rows_are_redone(tmp_path, tiny_config, capsys):
    videos, out = library(tmp_path / "in"), tmp_path / "out"
    first = plan_dub(videos, out, tiny_config)
    finish_rows(out, tiny_config, first)  # a run killed before its fold: its rows are in the journal only
    damaged = journal_file(out, first[1])
    damaged.write_bytes(damaged.read_bytes()[:40])

    redone = plan_dub(videos, out, tiny_config)
    assert [row["relative_path"] for row in redone] == ["b.mp4"]
    said = capsys.readouterr().err
    assert f"{damaged} is damaged (40 bytes" in said and "the inputs whose rows it held are redone" in said
    aside = out / "_foley/manifest/quarantine" / damaged.name
    assert aside.read_bytes() and not damaged.exists()  # moved aside, never deleted


def test_a_damaged_batch_costs_nothing_while_its_rows_one_row_files_remain(tmp_path, tiny_config):
    from foley.config import JournalConfig
    from foley.pipeline.journal import RunJournal

    videos, out = library(tmp_path / "in"), tmp_path / "out"
    first = plan_dub(videos, out, tiny_config)
    finish_rows(out, tiny_config, first)
    manifest = Manifest(str(out), Storage(tiny_config.storage), DUB)
    journal = RunJournal(manifest, first[0]["run_id"], first[0]["run_seq"], JournalConfig(batch_rows=10))
    for row in first:
        journal.add(journal_file(out, row).read_bytes())
    journal.write()
    [batch] = (out / "_foley/manifest/rows").glob("batch-*.parquet")
    batch.write_bytes(b"PAR1 cut short")
    assert plan_dub(videos, out, tiny_config) == []  # the batch's rows are read from their own files instead
    assert (out / "_foley/manifest/quarantine" / batch.name).exists()


def test_a_damaged_manifest_is_named_with_what_to_do(tmp_path, tiny_config, tiny_models):
    videos, out = library(tmp_path / "in"), tmp_path / "out"
    finish_rows(out, tiny_config, plan_dub(videos, out, tiny_config))
    Manifest(str(out), Storage(tiny_config.storage), DUB).compact()
    folded = out / "_foley/manifest/manifest.parquet"
    folded.write_bytes(folded.read_bytes()[:100])
    with pytest.raises(StorageError, match="restore it from a copy"):
        plan_dub(videos, out, tiny_config)
    # As a user meets it: exit 2 before Ray starts, the file named, no traceback, and the lease given back.
    command = dub_command(videos, out, tiny_overrides(tiny_models, tmp_path / "cache"))
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"error: {folded} is damaged (100 bytes" in result.stderr and "Traceback" not in result.stderr
    assert not (out / "_foley/lease.json").exists()


@pytest.mark.parametrize("harm", ["deleted", "cut short", "replaced"])
def test_an_output_harmed_behind_the_jobs_back_is_made_again(tmp_path, tiny_config, capsys, harm):
    videos, out = library(tmp_path / "in"), tmp_path / "out"
    finish_rows(out, tiny_config, plan_dub(videos, out, tiny_config))
    if harm == "deleted":
        (out / "b.mp4").unlink()
    elif harm == "cut short":
        (out / "b.mp4").write_bytes((out / "b.mp4").read_bytes()[:5])
    else:
        (out / "b.mp4").write_bytes(b"a different file, longer than the one published")
    assert [row["relative_path"] for row in plan_dub(videos, out, tiny_config)] == ["b.mp4"]
    assert "1 finished output is missing or not the size it was published with" in capsys.readouterr().out


def test_an_ok_row_in_s3_whose_output_is_gone_is_made_again(tmp_path, tiny_config, bucket):
    name, storage = bucket
    config = tiny_config.with_overrides(f"storage.endpoint_url={storage.config.endpoint_url}")
    videos, out = library(tmp_path / "in"), f"s3://{name}/out"
    finish_rows(out, config, plan_dub(videos, out, config))
    storage.s3.put_object(Bucket=name, Key="out/c.mp4", Body=b"cut")
    assert [row["relative_path"] for row in plan_dub(videos, out, config)] == ["c.mp4"]


def test_a_moved_and_changed_input_leaves_one_row_per_output(tmp_path, tiny_config):
    """mv A B; touch B/x.mp4: x is made again (its content changed), and its new row supersedes the old input's,
    whose output it replaced, so the report counts one result for one file."""
    import os

    old, out = library(tmp_path / "A", ("x.mp4", "y.mp4")), tmp_path / "out"
    finish_rows(out, tiny_config, plan_dub(old, out, tiny_config))
    moved = old.rename(tmp_path / "B")
    os.utime(moved / "x.mp4", ns=(10**18, 10**18))
    [redone] = plan_dub(moved, out, tiny_config)
    assert redone["relative_path"] == "x.mp4"
    finish_rows(out, tiny_config, [redone])
    current = Manifest(str(out), Storage(tiny_config.storage), DUB).current()
    assert sorted(current) == [str(moved / "x.mp4"), str(moved / "y.mp4")]
    assert [row["output_uri"] for row in current.values()].count(str(out / "x.mp4")) == 1
