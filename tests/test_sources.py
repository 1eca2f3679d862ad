"""Sound sources (SSV2A): detected per window by a tiny random-weight OWLv2 loaded through transformers' loaders,
tracked across frames, mapped and mixed in CLAP space; `exclude` and `boost` edit the mix; `off` changes nothing."""

import json

import numpy as np
import pytest

from conftest import ROOT, held_out_cosine, row_for, run
from foley.media.render import render_test_video
from foley.models.detector import Detection, load_source_detector
from foley.models.identity import ModelIdentities
from foley.models.zero_shot import read_labels
from foley.pipeline.columns import PENDING
from foley.pipeline.kinds import DUB
from foley.pipeline.rows import window_notes
from foley.pipeline.sources import mix_weights, track_sources
from foley.storage.store import Storage


@pytest.fixture(scope="module")
def sources_config(tiny_config):
    return tiny_config.with_overrides("sources.mode=zero_shot")


@pytest.fixture(scope="module")
def found(sources_config, tmp_path_factory):
    """A 12-s clip (two windows) through the decode stage with sources on."""
    from workers.decode_embed import DecodeEmbed

    video = render_test_video(tmp_path_factory.mktemp("sources") / "street.mp4", 12.0, 320, 180, 25)
    [row] = run(DecodeEmbed(sources_config), [row_for(video, sources_config)])
    return row


def test_a_source_seen_in_two_frames_is_one_source_and_two_apart_stay_two(sources_config):
    embedding = np.eye(3, dtype=np.float32)
    dog_left, dog_right = (0.0, 0.0, 0.4, 0.4), (0.6, 0.6, 1.0, 1.0)
    first = [(Detection("dog", 0.8, dog_left), embedding[0]), (Detection("dog", 0.6, dog_right), embedding[1])]
    second = [(Detection("dog", 0.4, (0.05, 0.0, 0.45, 0.4)), embedding[2])]
    notes, embeddings = track_sources([first, second], sources_config.sources)
    assert [(note["label"], note["frames"]) for note in notes] == [("dog", 2), ("dog", 1)]
    assert notes[0]["score"] == pytest.approx((0.8 + 0.4) / 2) and notes[1]["score"] == pytest.approx(0.6 / 2)
    assert notes[0]["box"] == pytest.approx([0.025, 0.0, 0.425, 0.4])
    assert embeddings[0] == pytest.approx(np.array([1, 0, 1]) / np.sqrt(2))  # its two crops, averaged
    assert embeddings[1] == pytest.approx(embedding[1])


def test_the_mix_shares_by_score_and_area_and_edits_remove_or_boost_a_label(sources_config):
    notes = [
        {"label": "dog barking", "score": 0.5, "box": [0.0, 0.0, 0.5, 0.5]},  # 0.5 x 0.25
        {"label": "car engine", "score": 0.25, "box": [0.0, 0.0, 1.0, 0.5]},  # 0.25 x 0.5
    ]
    picture, shares = mix_weights(notes, sources_config.sources)
    assert picture == 0.5 and shares == pytest.approx([0.25, 0.25])
    _, excluded = mix_weights(notes, sources_config.sources.model_copy(update={"exclude": ["car engine"]}))
    assert excluded == pytest.approx([0.5, 0.0])
    _, boosted = mix_weights(notes, sources_config.sources.model_copy(update={"boost": {"dog barking": 3.0}}))
    assert boosted == pytest.approx([0.375, 0.125])
    assert (
        mix_weights(notes, sources_config.sources.model_copy(update={"exclude": ["dog barking", "car engine"]})) is None
    )


def test_the_detector_loads_through_transformers_and_boxes_lie_in_the_frame(sources_config):
    import torch

    config = sources_config.sources.model_copy(update={"max_sources": 3})
    detector = load_source_detector(
        config, sources_config.source_labels(), Storage(sources_config.storage), torch.device("cpu")
    )
    labels = read_labels(ROOT / "configs/labels/vggsound.txt")
    assert len(labels) == 309 and len(detector.labels) == 309  # the file's comment is no label
    frames = np.random.default_rng(0).integers(0, 255, (2, 180, 320, 3), dtype=np.uint8)
    for detections in detector.detect(frames):
        assert 1 <= len(detections) <= 3
        assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
        for detection in detections:
            assert detection.label in labels
            x0, y0, x1, y1 = detection.box
            assert 0 <= x0 <= x1 <= 1 and 0 <= y0 <= y1 <= 1


def test_each_window_carries_its_sources_from_the_decode_stage(found, sources_config):
    assert found["status"] == PENDING and found["n_windows"] == 2
    windows = json.loads(found["window_sources"])
    assert len(windows) == 2 and all(1 <= len(sources) <= sources_config.sources.max_sources for sources in windows)
    width = found["clip_embeddings"].shape[1]
    embeddings = found["source_embeddings"].reshape(2, sources_config.sources.max_sources, width)
    for window, sources in enumerate(windows):
        assert {"label", "score", "box", "frames"} <= set(sources[0])
        norms = np.linalg.norm(embeddings[window], axis=1)
        assert norms[: len(sources)] == pytest.approx(1.0, abs=1e-5) and not norms[len(sources) :].any()


def test_the_map_stage_mixes_the_sources_and_an_excluded_label_weighs_nothing(found, sources_config, tiny_config):
    from workers.map import Map

    [mixed] = run(Map(sources_config), [dict(found)])
    notes = window_notes(mixed)
    assert "source_embeddings" not in mixed and "window_sources" not in mixed
    weights = [source["weight"] for note in notes for source in note["sources"]]
    assert sum(weights) == pytest.approx(len(notes) * (1 - sources_config.sources.global_weight), abs=1e-3)

    [picture_only] = run(Map(tiny_config), [dict(found)])
    assert not np.allclose(mixed["clap_embeddings"], picture_only["clap_embeddings"])
    labels = sorted({source["label"] for note in notes for source in note["sources"]})
    excluded = sources_config.with_overrides(f"sources.exclude={json.dumps(labels[:1])}")
    [edited] = run(Map(excluded), [dict(found)])
    for note in window_notes(edited):
        for source in note["sources"]:
            assert (source["weight"] == 0) == (source["label"] == labels[0])
    # Every label excluded: each window sounds exactly as with sources off.
    [muted] = run(Map(sources_config.with_overrides(f"sources.exclude={json.dumps(labels)}")), [dict(found)])
    assert np.array_equal(muted["clap_embeddings"], picture_only["clap_embeddings"])


def test_cycle_mix_keeps_the_candidate_whose_cosines_to_the_sources_spread_least(found, sources_config):
    from workers.map import Map
    from workers.synthesize import Synthesize

    config = sources_config.with_overrides("audioldm.candidates=3", "sources.cycle_mix=true")
    [mapped] = run(Map(config), [dict(found)])
    sources = mapped["source_clap_embeddings"].reshape(2, config.sources.max_sources, -1)
    assert all((np.abs(window).sum(axis=1) > 0).sum() >= 2 for window in sources)  # each window has 2+ sources
    synthesize = Synthesize(config)
    [row] = run(synthesize, [mapped])
    for index, notes in enumerate(window_notes(row)):
        heard = synthesize.embed_audio(row["waveforms"][index][None, None])[0]  # the kept one, as muxed
        weighted = sources[index][np.abs(sources[index]).sum(axis=1) > 0]
        assert len(notes["spreads"]) == 3 and notes["kept"] == int(np.argmin(notes["spreads"]))
        assert float((heard @ weighted.T).std(axis=1)[0]) == pytest.approx(min(notes["spreads"]), abs=1e-3)


def test_cycle_mix_with_a_window_of_no_weighted_source_ranks_by_the_condition(found, sources_config, tiny_config):
    """Every label excluded (or a detector that finds nothing): no window has two weighted sources, so Cycle Mix has
    nothing to spread over and each window keeps its best-scoring candidate; a video beside it in the batch is
    made too (no IndexError fails the batch)."""
    from workers.map import Map
    from workers.synthesize import Synthesize

    config = sources_config.with_overrides("audioldm.candidates=2", "sources.cycle_mix=true")
    labels = sorted({source["label"] for sources in json.loads(found["window_sources"]) for source in sources})
    muted = config.with_overrides(f"sources.exclude={json.dumps(labels)}")
    [mapped] = run(Map(muted), [dict(found)])
    other = dict(mapped, input_uri="other.mp4", relative_path="other.mp4")
    synthesize = Synthesize(muted)
    rows = run(synthesize, [mapped, other])
    assert [row["status"] for row in rows] == [PENDING, PENDING]
    for notes in window_notes(rows[0]):
        assert notes["spreads"] == [0.0, 0.0] and notes["kept"] == int(np.argmax(notes["scores"]))
    assert len(rows[1]["waveforms"]) == rows[1]["n_windows"] == 2  # the video beside it is made, not failed


def test_sources_off_keep_the_hash_and_on_the_detector_and_its_labels_count(tiny_config, tmp_path):
    identities = ModelIdentities(Storage(tiny_config.storage))
    off = tiny_config.with_overrides("sources.max_sources=2", "sources.exclude=[speech]", "sources.detector=elsewhere")
    assert DUB.model_identities(off, identities) == DUB.model_identities(tiny_config, identities)
    assert "detector_model" not in DUB.model_identities(tiny_config, identities)
    assert DUB.settings(off) == DUB.settings(tiny_config) and "sources" not in DUB.settings(tiny_config)

    on = tiny_config.with_overrides("sources.mode=zero_shot")
    on_models = DUB.model_identities(on, identities)
    assert on_models["detector_model"].startswith("sha256:") and ":labels=" in on_models["detector_model"]
    assert DUB.config_hash(on, on_models) != DUB.config_hash(tiny_config, DUB.model_identities(tiny_config, identities))
    labels = tmp_path / "labels.txt"
    labels.write_text("dog barking\n")
    relabelled = on.with_overrides(f"sources.labels={labels}")
    assert DUB.model_identities(relabelled, identities)["detector_model"] != on_models["detector_model"]
    excluding = on.with_overrides("sources.exclude=[speech]")
    assert DUB.config_hash(excluding, on_models) != DUB.config_hash(on, on_models)


def test_sources_off_give_the_hashes_of_the_release_before_sources():
    """Pinned: the hashes the commit before sound sources (ccd9462) computed for these presets and model identities,
    so every result made before stays done."""
    from foley.config import load_config
    from foley.pipeline.kinds import EMBED

    models = {"clip_model": "sha256:c", "mapper_model": "sha256:m", "audioldm_model": "sha256:a", "clap_model": "l"}
    tiny = load_config(ROOT / "configs/tiny.yaml")
    assert DUB.config_hash(tiny, models) == "9b7a85c6720b68e6"
    assert EMBED.config_hash(tiny, {"clip_model": "sha256:c", "clap_model": "l"}) == "2c42ea95b5c5b0a9"
    assert DUB.config_hash(load_config(ROOT / "configs/foley.yaml"), models) == "fdb3295bc717a37e"


def test_bad_source_settings_are_config_errors():
    from foley.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="sources.frames=9 of each window's window.frames=4"):
        load_config(ROOT / "configs/tiny.yaml", ["sources.frames=9"])
    with pytest.raises(ConfigError, match="boost factors must be finite"):
        load_config(ROOT / "configs/tiny.yaml", ['sources.boost={"dog barking": -1}'])
    with pytest.raises(ConfigError, match="sources.mode"):
        load_config(ROOT / "configs/tiny.yaml", ["sources.mode=everything"])
    with pytest.raises(ConfigError, match="remixer that mapper.checkpoint names"):
        load_config(ROOT / "configs/tiny.yaml", ["sources.mode=remixer", "mapper.checkpoint=null"])
    with pytest.raises(ConfigError, match="cycle_mix ranks candidates by their sound sources"):
        load_config(ROOT / "configs/tiny.yaml", ["sources.mode=zero_shot", "sources.cycle_mix=true"])


def object_pairs(pairs, held_out: set[str], with_sources: bool) -> tuple[tuple, tuple]:
    """(condition, CLAP) of the windows of the object pairs not held out, and of those held out."""

    def matrices(names):
        rows = [pair for pair in pairs if (pair[0] in held_out) == names]
        clip = np.concatenate([np.concatenate(r[1:3], axis=1) if with_sources else r[1] for r in rows])
        return clip, np.concatenate([r[3] for r in rows])

    return matrices(False), matrices(True)


def test_the_trained_remixer_hears_both_objects_of_pairs_it_never_saw_where_the_global_mapper_cannot():
    """SSV2A's claim on the synthetic relation (foley.training.synthetic): a window sounds like both of its objects,
    whose look weighs little in the global embedding. Held out: pairs of objects never seen together."""
    from foley.models.mapper import MapperSpec
    from foley.training.synthetic import synthetic_source_pairs

    pairs = synthetic_source_pairs(objects=8, per_pair=40, clip_dim=32, clap_dim=32, max_sources=3, seed=0)
    held_out = {name for name, *_ in pairs[::5]}  # 6 of the 28 pairs
    size = dict(clip_dim=32, clap_dim=32, depth=2, heads=4, head_dim=16)
    remixer = MapperSpec(variant="source-remixer", max_sources=3, kl_weight=1e-3, **size)
    global_only = MapperSpec(variant="regression-transformer", **size)
    remixed = held_out_cosine(remixer, *object_pairs(pairs, held_out, with_sources=True), steps=300)
    mapped = held_out_cosine(global_only, *object_pairs(pairs, held_out, with_sources=False), steps=300)
    assert remixed > 0.8 and remixed > mapped + 0.15, (remixed, mapped)


def test_a_remixer_checkpoint_loads_and_mixes_the_sources_in_the_map_stage(found, sources_config, tmp_path):
    import torch

    from foley.models.mapper import MapperSpec, V2AMapper, read_mapper, save_mapper
    from workers.map import Map

    width = found["clip_embeddings"].shape[1]
    torch.manual_seed(0)
    spec = MapperSpec(
        variant="source-remixer", clip_dim=width, clap_dim=512, depth=1, heads=2, head_dim=16, max_sources=2
    )
    checkpoint = save_mapper(V2AMapper(spec), tmp_path / "remixer")
    notes = json.loads(found["window_sources"])
    excluded = notes[0][0]["label"]
    config = sources_config.with_overrides(
        "sources.mode=remixer", f"mapper.checkpoint={checkpoint}", f"sources.exclude={json.dumps([excluded])}"
    )
    [remixed] = run(Map(config), [dict(found)])
    assert np.linalg.norm(remixed["clap_embeddings"], axis=1) == pytest.approx(1.0, abs=1e-5)
    for note in window_notes(remixed):
        assert all((s["weight"] == 0) if s["label"] == excluded else s["weight"] is None for s in note["sources"])
    # What the remixer read: the picture, then the best sources that are not excluded, in its two slots.
    reader = read_mapper(checkpoint)
    sources = found["source_embeddings"].reshape(2, -1, width)
    kept = [k for k, s in enumerate(notes[0]) if s["label"] != excluded][:2]
    condition = np.concatenate(
        [found["clip_embeddings"][0], *sources[0][kept]] + [np.zeros(width, np.float32)] * (2 - len(kept))
    )
    expected = reader.map(torch.from_numpy(condition[None]), [None], 1, 1.0)[0].numpy()
    assert remixed["clap_embeddings"][0] == pytest.approx(expected, abs=1e-5)


def test_the_embed_job_keeps_each_windows_sources_for_the_remixer_to_learn_from(sources_config, tmp_path):
    from foley.pipeline.kinds import EMBED
    from foley.pipeline.rows import new_row
    from foley.storage.inputs import InputItem
    from foley.training.pairs import embedding_dims, read_pairs
    from workers.decode_embed import DecodeEmbed
    from workers.write_pairs import WritePairs

    video = render_test_video(tmp_path / "street.mp4", 3.0, 240, 160, 25, with_audio=True)
    planned = new_row(
        InputItem(str(video), "street.mp4"), str(tmp_path / "pairs/pairs/street.parquet"), sources_config, EMBED
    )
    [row] = run(DecodeEmbed(sources_config, kind=EMBED, audio_required=True), [planned])
    row["clap_embeddings"] = np.ones((row["n_windows"], 8), np.float32)  # the CLAP stage's, here a stand-in
    WritePairs(sources_config, str(tmp_path / "pairs")).publish(row)
    storage = Storage(sources_config.storage)
    uri = str(tmp_path / "pairs/pairs/street.parquet")
    width = row["clip_embeddings"].shape[1]
    assert embedding_dims(uri, storage) == (width, 8, sources_config.sources.max_sources, 0)
    clip, _ = read_pairs([uri], storage, columns=("clip", "sources"))
    assert clip.shape == (1, width * (1 + sources_config.sources.max_sources))
    assert np.array_equal(clip[0, width:], row["source_embeddings"][0])


def test_a_remixer_and_sources_mode_that_do_not_fit_are_named_before_the_job_starts(tiny_config, tiny_models, tmp_path):
    from foley.models.fit import misfit_models
    from foley.models.mapper import MapperSpec, V2AMapper, save_mapper

    storage = Storage(tiny_config.storage)
    plain = tiny_config.with_overrides("sources.mode=remixer")  # the tiny preset's mapper is a diffusion prior
    [misfit] = misfit_models(plain, storage)
    assert "sources.mode=remixer needs a mapper.checkpoint trained with train.variant=source-remixer" in misfit
    spec = MapperSpec(variant="source-remixer", clip_dim=64, clap_dim=512, depth=1, heads=2, head_dim=8, max_sources=2)
    remixer = save_mapper(V2AMapper(spec), tmp_path / "remixer")
    [misfit] = misfit_models(tiny_config.with_overrides(f"mapper.checkpoint={remixer}"), storage)
    assert "is a source remixer, which needs sources.mode=remixer" in misfit
    assert (
        misfit_models(tiny_config.with_overrides(f"mapper.checkpoint={remixer}", "sources.mode=remixer"), storage) == []
    )


def test_a_list_line_edits_its_own_sources_and_gets_a_hash_of_its_own(tmp_path, sources_config, tiny_config):
    import argparse
    import csv

    from foley.pipeline.job import JobRun
    from foley.pipeline.outputs import dub_outputs

    def write_list(path, lines: list[dict]) -> str:
        with open(path, "w", newline="") as sink:  # as a spreadsheet writes it: cells with commas quoted
            writer = csv.DictWriter(sink, ["uri", "sources_exclude", "sources_boost"])
            writer.writeheader()
            writer.writerows(lines)
        return str(path)

    videos = [render_test_video(tmp_path / "library" / f"{name}.mp4", 1.0, 64, 48, 12) for name in "abcd"]

    def plan(config, lines: list[dict], name: str) -> tuple[list[dict], dict]:
        args = argparse.Namespace(
            input=write_list(tmp_path / f"{name}.csv", lines), output=str(tmp_path / name), force=False
        )
        run_ = JobRun(args, config, DUB)
        rows = run_.plan(lambda item: dub_outputs(args.output, item, config))
        run_.lease.give_back()
        failed = {r["relative_path"]: r["error"] for r in run_.manifest.current().values() if r["status"] == "failed"}
        return rows, failed

    lines = [
        {"uri": str(videos[0])},
        {"uri": str(videos[1]), "sources_exclude": "speech; bee, wasp, etc. buzzing", "sources_boost": "car engine=2"},
        {"uri": str(videos[2]), "sources_boost": "car engine=loud"},
        {"uri": str(videos[3]), "sources_boost": "car engine=inf"},
    ]
    rows, failed = plan(sources_config, lines, "on")
    plain, edited = rows
    assert plain["source_edits"] == "" and plain["config_hash"] != edited["config_hash"]
    assert json.loads(edited["source_edits"]) == {
        "boost": {"car engine": 2.0},
        "exclude": ["speech", "bee, wasp, etc. buzzing"],  # ';' separates labels, which may hold commas
    }
    assert set(failed) == {"c.mp4", "d.mp4"} and all("sources_boost as 'label=factor" in e for e in failed.values())
    rows, failed = plan(tiny_config, lines[:2], "off")  # sources off: the edit has nothing to edit
    assert [row["relative_path"] for row in rows] == ["a.mp4"]
    assert "edits sound sources (sources_boost, sources_exclude) but they are off" in failed["b.mp4"]


def test_the_map_stage_follows_a_videos_own_source_edits(found, sources_config):
    from workers.map import Map

    labels = sorted({source["label"] for window in json.loads(found["window_sources"]) for source in window})
    stage = Map(sources_config)
    [edited] = run(stage, [dict(found, source_edits=json.dumps({"exclude": labels[:1]}))])
    [plain] = run(stage, [dict(found)])
    edited_weights = [s for note in window_notes(edited) for s in note["sources"]]
    assert all((s["weight"] == 0) == (s["label"] == labels[0]) for s in edited_weights)
    assert any(s["label"] == labels[0] and s["weight"] > 0 for note in window_notes(plain) for s in note["sources"])
