"""Defects a code review reproduced, each at its root: comparisons confined to their folder, S3 folders told from
files by what is there, plot_windows reading the journal, AudioLDM loaded from safetensors only, stale conditions
dropped with their staging, and the report's players under output.mode=both."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import finish_rows, plan_dub
from foley.config import StorageConfig
from foley.media.render import render_test_video
from foley.models.identity import ModelIdentities
from foley.models.weights import local_weights
from foley.storage.store import Storage


@pytest.mark.parametrize("name", ["../report/index", "a/b", ".hidden", "..", ""])
def test_a_comparisons_name_stays_a_plain_file_name(name, capsys):
    from jobs.compare import main

    with pytest.raises(SystemExit) as exited:
        main(["--runs", "/tmp/a", "/tmp/b", "--name", name])
    assert exited.value.code == 2
    assert "is not a plain file name; use letters, digits" in capsys.readouterr().err


def test_an_s3_folder_with_a_dot_is_a_folder_and_takes_in_nothing_beside_it(bucket, tmp_path):
    name, storage = bucket
    storage = Storage(StorageConfig(endpoint_url=storage.config.endpoint_url, cache_dir=str(tmp_path / "cache")))
    storage.write_bytes(f"s3://{name}/models/v1.2/weights.bin", b"v1.2")
    storage.write_bytes(f"s3://{name}/models/v1.20/weights.bin", b"v1.20")
    identities = ModelIdentities(storage)
    first = identities.of(f"s3://{name}/models/v1.2")
    storage.write_bytes(f"s3://{name}/models/v1.20/weights.bin", b"v1.20 retrained")
    assert identities.of(f"s3://{name}/models/v1.2") == first  # the neighbour is not part of it
    storage.write_bytes(f"s3://{name}/models/v1.2/weights.bin", b"v1.2 retrained")
    assert identities.of(f"s3://{name}/models/v1.2") != first
    copy = Path(local_weights(f"s3://{name}/models/v1.2", storage))
    assert copy.is_dir() and (copy / "weights.bin").read_bytes() == b"v1.2 retrained"
    single = Path(local_weights(f"s3://{name}/models/v1.2/weights.bin", storage))
    assert single.read_bytes() == b"v1.2 retrained"


def test_plot_windows_reads_a_run_not_yet_folded(tmp_path, tiny_config):
    """A run still going, or killed before its fold, has its rows in the journal only."""
    from jobs.plot_windows import main

    render_test_video(tmp_path / "in" / "a.mp4", 3.0, 64, 48, 10)
    out = tmp_path / "out"
    [row] = plan_dub(tmp_path / "in", out, tiny_config)
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=3", "-c:a", "aac", str(out / "a.mp4")],
        check=True,
    )
    windows = json.dumps([{"start_s": 0.0, "end_s": 3.0, "shot": 0}])
    finish_rows(out, tiny_config, [row | {"windows": windows, "duration_s": 3.0}])
    (out / "a.mp4").unlink()  # finish_rows wrote a stand-in: the sound again
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=duration=3", "-c:a", "aac", str(out / "a.mp4")],
        check=True,
    )
    assert not (out / "_foley/manifest/manifest.parquet").exists()
    assert main(["--output", str(out), "--video", "a.mp4", "--figure", str(tmp_path / "a.png")]) == 0
    assert (tmp_path / "a.png").read_bytes()[:4] == b"\x89PNG"


def test_audioldm_loads_from_safetensors_only(tiny_models, tmp_path):
    """A pickled .bin can run code as it loads: a folder that holds only those is refused, not unpickled."""
    from diffusers import UNet2DConditionModel

    from foley.config import AudioLDMConfig
    from foley.models.audioldm import AudioLDM

    folder = tmp_path / "audioldm-pickled"
    shutil.copytree(tiny_models["audioldm"], folder)
    unet = UNet2DConditionModel.from_pretrained(folder / "unet")
    shutil.rmtree(folder / "unet")
    unet.save_pretrained(folder / "unet", safe_serialization=False)
    assert not list((folder / "unet").glob("*.safetensors"))
    storage = Storage(StorageConfig())
    with pytest.raises((OSError, EnvironmentError, ValueError)):
        AudioLDM(AudioLDMConfig(model=str(folder)), storage, __import__("torch").device("cpu"))
    AudioLDM(AudioLDMConfig(model=str(tiny_models["audioldm"])), storage, __import__("torch").device("cpu"))


def test_conditions_of_another_segmentation_go_with_their_staging(tmp_path):
    """A --force re-run cut into segments of another size keeps only its own parts, so the evaluation never mixes
    parts of two shapes."""
    import io

    from foley.pipeline.evaluation import conditions_uri, drop_other_conditions, read_conditions

    storage, out = Storage(StorageConfig()), str(tmp_path / "out")

    def keep(first: int, windows: int, value: float) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.full((windows, 4), value, np.float32))
        storage.write_bytes(conditions_uri(out, "result", first), buffer.getvalue())

    keep(0, 16, 1.0)
    keep(16, 4, 1.0)  # the first run: segments of 16 windows
    for first in (0, 4, 8, 12, 16):  # the forced run: segments of 4
        keep(first, 4, 2.0)
    drop_other_conditions(storage, out, "result", {0, 4, 8, 12, 16})
    kept = read_conditions(storage, out, "result")
    assert kept.shape == (20, 4) and (kept == 2.0).all()


def test_the_report_offers_the_video_and_the_sound_under_both(tmp_path):
    """output.mode=both writes the muxed video and the sidecar: the row plays either."""
    page = (Path(__file__).resolve().parent.parent / "foley/pipeline/templates/report.html").read_text()
    video_line = next(line for line in page.splitlines() if 'element("video"' in line)
    audio_line = next(line for line in page.splitlines() if 'element("audio"' in line)
    assert video_line.strip().startswith("if (row.video)") and audio_line.strip().startswith("if (row.audio)")

    from foley.pipeline.report import video_entry

    record = {
        "relative_path": "a.mp4",
        "status": "ok",
        "error": "",
        "duration_s": 3.0,
        "n_windows": 1,
        "result_id": "r",
        "output_uri": "/out/a.mp4",
        "outputs": ["/out/a.mp4", "/out/a.flac"],
    }
    entry = video_entry(record, "/out", set(), {})
    assert entry["video"] == "../../a.mp4" and entry["audio"] == "../../a.flac"
