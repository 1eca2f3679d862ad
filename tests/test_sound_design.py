"""Sound design: conditions composed in CLAP space, negative prompts, ranked candidates, per-video list columns,
alternates, still images and sidecar sound files."""

from __future__ import annotations

import argparse
import json

import ffmpeg
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import finish_rows, row_for, run, run_dub, tiny_overrides
from foley.config import ConditionsConfig
from foley.media.probe import decode_audio
from foley.media.render import render_test_video
from foley.models.audioldm import clap_text_embeddings
from foley.models.clap import load_clap_audio_encoder
from foley.models.conditions import Conditioner, normalised
from foley.pipeline.job import JobRun
from foley.pipeline.kinds import DUB
from foley.pipeline.outputs import dub_outputs
from foley.pipeline.rows import window_notes
from foley.storage.store import Storage
from media_checks import ffprobe_facts, track_name


def audio_titles(path) -> list[str]:
    return [track_name(s) for s in ffprobe_facts(path)["streams"] if s["codec_type"] == "audio"]


def duration_of(path) -> float:
    return float(ffprobe_facts(path)["format"]["duration"])


def text_embedding(synthesize, text: str) -> np.ndarray:
    audioldm = synthesize.audioldm
    return clap_text_embeddings(audioldm.text_encoder, audioldm.tokenizer, [text], synthesize.device)[0].numpy()


def clap_dim(synthesize) -> int:
    return synthesize.audioldm.condition_dim


def sine_file(path, seconds=4.0, frequency=660):
    ffmpeg.input(f"sine=frequency={frequency}:sample_rate=48000:duration={seconds}", f="lavfi").output(str(path)).run(
        quiet=True, overwrite_output=True
    )
    return path


def test_conditions_mix_in_clap_space(tmp_path, tiny_config, synthesize):
    visual = normalised(np.random.default_rng(0).standard_normal(text_embedding(synthesize, "").shape[0]))
    rain = text_embedding(synthesize, "rain on a roof")
    compose = synthesize.conditioner.compose

    alone, weights = compose(visual, ConditionsConfig(prompt="rain on a roof", prompt_weight=1.0), 0.0)
    assert weights == {"prompt": 1.0, "visual": 0.0}
    np.testing.assert_allclose(alone, rain, atol=1e-6)  # weight 1: the prompt's CLAP text embedding itself

    half, weights = compose(visual, ConditionsConfig(prompt="rain on a roof", prompt_weight=0.5), 0.0)
    assert weights == {"prompt": 0.5, "visual": 0.5}
    np.testing.assert_allclose(half, (visual + rain) / np.linalg.norm(visual + rain), atol=1e-6)

    fading = ConditionsConfig(prompt="rain on a roof", prompt_weight=0.0, prompt_weight_end=1.0)
    np.testing.assert_allclose(compose(visual, fading, 0.0)[0], visual, atol=1e-6)
    np.testing.assert_allclose(compose(visual, fading, 1.0)[0], rain, atol=1e-6)
    assert fading.weights_at(0.25) == {"prompt": 0.25, "visual": 0.75}

    # A reference sound mixes in through AudioLDM's own CLAP audio branch.
    encoder = load_clap_audio_encoder(tiny_config.clap, Storage(tiny_config.storage), torch.device("cpu"))
    conditioner = Conditioner(
        synthesize.audioldm.text_encoder,
        synthesize.audioldm.tokenizer,
        synthesize.device,
        Storage(tiny_config.storage),
        encoder,
        max_reference_seconds=60,
    )
    reference = sine_file(tmp_path / "talking.wav")
    expected = encoder.embed([decode_audio(reference, 0.0, 60, 48000)])[0]
    by_reference, _ = conditioner.compose(
        visual, ConditionsConfig(reference_audio=str(reference), reference_weight=1), 0
    )
    np.testing.assert_allclose(by_reference, expected, atol=1e-5)

    with pytest.raises(ValueError, match="every condition has weight 0"):
        ConditionsConfig(visual_weight=0)


def test_the_negative_prompt_is_the_unconditional_branch(tmp_path, tiny_config, decode_embed, synthesize):
    video = render_test_video(tmp_path / "clip.mp4", 2.0, 160, 96, 24)
    row = row_for(video, tiny_config)
    row["conditions"] = json.dumps(ConditionsConfig(negative_prompt="speech, music").used())
    (row,) = run(decode_embed, [row])
    assert row["n_windows"] == 1
    row["clap_embeddings"] = normalised(np.ones(clap_dim(synthesize)))[None]
    seen = []
    hook = synthesize.audioldm.unet.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["class_labels"].clone()), with_kwargs=True
    )
    try:
        (row,) = run(synthesize, [row])
    finally:
        hook.remove()
    assert row["status"] == "pending" and len(seen) == tiny_config.audioldm.steps
    negative = text_embedding(synthesize, "speech, music")
    for class_labels in seen:  # classifier-free guidance: [unconditional; conditional]
        np.testing.assert_allclose(class_labels[0].numpy(), negative, atol=1e-6)
        np.testing.assert_allclose(class_labels[1].numpy(), row["clap_embeddings"][0], atol=1e-6)


def test_candidates_are_ranked_by_their_clap_score(tmp_path, tiny_config, decode_embed):
    from workers.synthesize import Synthesize

    config = tiny_config.with_overrides("audioldm.candidates=3", "output.alternates=true")
    synthesize = Synthesize(config)
    video = render_test_video(tmp_path / "clip.mp4", 12.0, 160, 96, 24)
    (row,) = run(decode_embed, [row_for(video, config)])
    assert row["n_windows"] == 2
    directions = np.random.default_rng(1).standard_normal((2, clap_dim(synthesize)))
    row["clap_embeddings"] = np.stack([normalised(direction) for direction in directions])
    (row,) = run(synthesize, [row])

    assert row["waveforms"].shape[:2] == (2, 3)  # windows x candidates, best first
    for index, notes in enumerate(window_notes(row)):
        scores = notes["scores"]
        assert len(scores) == 3 and notes["kept"] == int(np.argmax(scores))
        heard = synthesize.embed_audio(row["waveforms"][index : index + 1])
        ranked = np.einsum("wcd,wd->wc", heard, row["clap_embeddings"][index : index + 1])[0]
        assert list(ranked) == sorted(ranked, reverse=True)
        np.testing.assert_allclose(ranked[0], max(scores), atol=1e-4)
        candidates = row["waveforms"][index]
        assert not np.allclose(candidates[0], candidates[1]) and not np.allclose(candidates[1], candidates[2])


def write_list(path, lines: list[dict]) -> str:
    columns = sorted({name for line in lines for name in line} - {"uri"})
    text = ",".join(["uri", *columns]) + "\n"
    text += "".join(",".join([line["uri"], *(str(line.get(c, "")) for c in columns)]) + "\n" for line in lines)
    path.write_text(text)
    return str(path)


def test_a_prompt_column_changes_only_its_video_and_its_hash(tmp_path, tiny_config):
    library = tmp_path / "library"
    videos = [render_test_video(library / f"{name}.mp4", 1.0, 64, 48, 12) for name in ("a", "b")]

    def plan(list_path: str) -> list[dict]:
        args = argparse.Namespace(input=list_path, output=str(tmp_path / "out"), force=False)
        run_ = JobRun(args, tiny_config, DUB)
        rows = run_.plan(lambda item: dub_outputs(args.output, item, tiny_config))
        run_.lease.give_back()  # the plan alone is this run: the next one takes the output root
        return rows

    first = plan(write_list(tmp_path / "plain.csv", [{"uri": str(v)} for v in videos]))
    finish_rows(tmp_path / "out", tiny_config, first)
    storage_run = JobRun(argparse.Namespace(input="", output=str(tmp_path / "out"), force=False), tiny_config, DUB)
    prompted = [{"uri": str(videos[0])}, {"uri": str(videos[1]), "prompt": "seaside", "prompt_weight": 0.7}]
    second = plan(write_list(tmp_path / "prompted.csv", prompted))

    assert [row["relative_path"] for row in second] == ["b.mp4"]  # a is done under the same result
    assert second[0]["config_hash"] != first[1]["config_hash"] and first[0]["config_hash"] == first[1]["config_hash"]
    assert json.loads(second[0]["conditions"])["prompt"] == "seaside"

    # A line that cannot be read fails that video before any work, naming the file, the column and the problem.
    missing = tmp_path / "nowhere.wav"
    bad = [{"uri": str(videos[0]), "prompt_weight": "loud"}, {"uri": str(videos[1]), "reference_audio": missing}]
    # A weight no float32 mix can hold (it would make NaN or a DC track) is refused as out of range.
    bad.append({"uri": str(render_test_video(library / "c.mp4", 1.0, 64, 48, 12)), "visual_weight": "1e39"})
    assert plan(write_list(tmp_path / "bad.csv", bad)) == []
    failed = {
        r["relative_path"]: r["error"] for r in storage_run.manifest.current().values() if r["status"] == "failed"
    }
    assert "a.mp4" in failed["a.mp4"] and "prompt_weight" in failed["a.mp4"]
    assert f"reference_audio {missing} does not exist" in failed["b.mp4"]
    assert "column visual_weight: Input should be less than or equal to 1" in failed["c.mp4"]


@pytest.mark.slow  # own job: settings under test: alternates, sidecars, images
def test_alternates_sidecars_and_images_end_to_end(tmp_path, tiny_config, tiny_models, ray_cluster):
    library = tmp_path / "library"
    clip = render_test_video(library / "clip.mp4", 3.0, 160, 96, 24)
    windy = render_test_video(library / "windy.mkv", 2.0, 160, 96, 24)
    photo = library / "photo.png"
    ffmpeg.input("testsrc2=size=200x150", f="lavfi").output(str(photo), vframes=1).run(quiet=True)
    listing = write_list(
        tmp_path / "list.csv",
        [{"uri": str(clip)}, {"uri": str(windy), "prompt": "wind", "negative_prompt": "speech"}, {"uri": str(photo)}],
    )
    overrides = tiny_overrides(tiny_models, tmp_path / "cache")
    out = tmp_path / "out"
    result = run_dub(
        ray_cluster,
        listing,
        out,
        [
            *overrides,
            "audioldm.candidates=2",
            "output.alternates=true",
            "output.mode=both",
            "output.image_output=video",
            "output.image_seconds=3",
        ],
    )
    assert result.returncode == 0, result.stdout + result.stderr

    for video in (clip, windy):
        assert audio_titles(out / video.name) == ["Generated Foley", "Alternate 2"]
        assert abs(duration_of(out / video.with_suffix(".flac").name) - duration_of(video)) < 0.05
    assert abs(duration_of(out / "photo.mp4") - 3.0) < 0.1 and audio_titles(out / "photo.mp4") == ["Generated Foley"]

    manifest = {r["relative_path"]: r for r in pq.read_table(out / "_foley/manifest" / "manifest.parquet").to_pylist()}
    assert manifest["clip.mp4"]["outputs"] == [str(out / "clip.mp4"), str(out / "clip.flac")]
    assert json.loads(manifest["windy.mkv"]["conditions"])["prompt"] == "wind"
    assert all(len(note["scores"]) == 2 for note in manifest["clip.mp4"]["window_notes"])
    assert manifest["photo.png"]["status"] == "ok" and manifest["photo.png"]["duration_s"] == 3.0

    # Sidecars only: the sound files, and no copy of any video.
    audio_only = tmp_path / "audio-only"
    result = run_dub(ray_cluster, listing, audio_only, [*overrides, "output.mode=audio"])
    assert result.returncode == 0, result.stdout + result.stderr
    written = sorted(p.name for p in audio_only.iterdir() if not p.name.startswith("_"))
    assert written == ["clip.flac", "photo.flac", "windy.flac"]
    assert abs(duration_of(audio_only / "clip.flac") - duration_of(clip)) < 0.05
    assert abs(duration_of(audio_only / "photo.flac") - tiny_config.output.image_seconds) < 0.05
