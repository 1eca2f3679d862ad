"""jobs.embed end to end on a local Ray: paired CLIP/CLAP window embeddings of videos that have sound."""

import os
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, tiny_overrides
from foley.media.render import render_test_video
from foley.pipeline.kinds import DUB
from foley.pipeline.rows import batch_of, new_row, rows_of
from foley.storage.inputs import InputItem


def embed_job(ray, input_root, output_root, overrides) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "jobs.embed",
        "--input",
        str(input_root),
        "--output",
        str(output_root),
        "--config",
        str(ROOT / "configs/tiny.yaml"),
        *overrides,
    ]
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=ray.client_env(os.environ)
    )


@pytest.mark.slow  # own job: the embed job's own run: the pairs it writes are its point
def test_embed_writes_window_pairs_that_match_the_dub_path(tmp_path, tiny_models, tiny_config, ray_cluster):
    render_test_video(tmp_path / "in" / "a.mp4", 4.0, 320, 240, 25, with_audio=True)
    render_test_video(tmp_path / "in" / "b/long.mkv", 15.0, 256, 144, 30, with_audio=True)
    render_test_video(tmp_path / "in" / "silent.mp4", 3.0, 160, 120, 25)
    (tmp_path / "in" / "broken.mp4").write_bytes(b"\x00" * 100)
    overrides = tiny_overrides(tiny_models, tmp_path / "cache")

    result = embed_job(ray_cluster, tmp_path / "in", tmp_path / "out", overrides)
    assert result.returncode == 1, result.stdout + result.stderr  # the broken input fails the run, nothing else
    assert "2 ok, 1 failed, 1 skipped" in result.stdout

    pairs = pq.read_table(tmp_path / "out/pairs/b/long.mkv.parquet")
    assert pairs.column_names == [
        "video_id",
        "window_start_s",
        "window_end_s",
        "clip",
        "clap",
        "clip_model",
        "clap_model",
    ]
    assert pairs.schema.field("clip").type.list_size == 64 and pairs.schema.field("clap").type.list_size == 512
    assert pairs.column("window_start_s").to_pylist() == pytest.approx([0.0, 9.6])
    assert pairs.column("window_end_s").to_pylist() == pytest.approx([10.24, 15.0], abs=0.05)
    assert set(pairs.column("video_id").to_pylist()) == {"b/long.mkv"}
    clap = np.stack(pairs.column("clap").to_numpy(zero_copy_only=False))
    assert np.allclose(np.linalg.norm(clap, axis=1), 1, atol=1e-5) and not np.allclose(clap[0], clap[1])

    from workers.decode_embed import DecodeEmbed  # the dub job's own path gives the same CLIP embeddings

    config = tiny_config.model_copy(
        update={"input": tiny_config.input.model_copy(update={"existing_audio": "replace"})}
    )  # as when dubbing over a video's own sound
    [dub_row] = rows_of(
        DecodeEmbed(config)(
            batch_of([new_row(InputItem(str(tmp_path / "in/b/long.mkv"), "b/long.mkv"), "x.mkv", config, DUB)])
        )
    )
    clip = np.stack(pairs.column("clip").to_numpy(zero_copy_only=False))
    assert np.allclose(clip, dub_row["clip_embeddings"], atol=1e-5)

    rows = {
        row["relative_path"]: row
        for row in pq.read_table(tmp_path / "out/_foley/manifest/manifest.parquet").to_pylist()
    }
    assert rows["silent.mp4"]["status"] == "skipped" and "no audio track" in rows["silent.mp4"]["error"]
    assert rows["broken.mp4"]["status"] == "failed" and "broken.mp4" in rows["broken.mp4"]["error"]
    assert set(rows["a.mp4"]) >= {"clip_model", "clap_model", "seconds_clap_embed"}

    again = embed_job(ray_cluster, tmp_path / "in", tmp_path / "out", overrides)
    # The ok videos and the skipped silent one are final under the same result (a skipped input is not fetched
    # again every night); only the failed one is retried.
    assert "3 already done, 1 to process" in again.stdout
