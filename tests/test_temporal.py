"""The learned temporal aggregator (SSV2A): window.aggregator=learned, its frames from the decode stage to the pairs,
its checkpoint in the Map stage, and its claim on a synthetic temporal relation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT, held_out_cosine, row_for, run
from foley.config import ConfigError, StorageConfig, load_config
from foley.media.render import render_test_video
from foley.models.fit import misfit_models
from foley.models.mapper import MapperSpec, V2AMapper, read_mapper, save_mapper
from foley.pipeline.kinds import DUB, EMBED
from foley.storage.store import Storage
from foley.training.synthetic import synthetic_temporal_pairs

FRAMES = 4  # the tiny preset's window.frames


def aggregator_spec(clip_dim: int, clap_dim: int, frames: int = FRAMES) -> MapperSpec:
    return MapperSpec(
        variant="temporal-aggregator", clip_dim=clip_dim, clap_dim=clap_dim, depth=1, heads=2, head_dim=16,
        frames=frames, kl_weight=1e-3,
    )  # fmt: skip


@pytest.fixture(scope="module")
def aggregator(tiny_config, tmp_path_factory):
    """A random temporal aggregator for the tiny CLIP and CLAP, saved as jobs.train_mapper saves a mapper."""
    torch.manual_seed(0)
    return save_mapper(V2AMapper(aggregator_spec(64, 512)), tmp_path_factory.mktemp("aggregator"))


@pytest.fixture(scope="module")
def learned(tiny_config, aggregator):
    return tiny_config.with_overrides("window.aggregator=learned", f"mapper.checkpoint={aggregator}")


def test_the_learned_aggregator_hears_when_something_appears_where_the_mean_cannot():
    """SSV2A's ablation on a relation of our own: a window's sound depends on when its object appears, which the
    mean over frames hides. Held out: windows never trained on (new scenes, objects and moments)."""
    mean, frames, clap = synthetic_temporal_pairs(1200, 8, 32, 32, objects=6, seed=0)
    size = dict(clip_dim=32, clap_dim=32, depth=1, heads=4, head_dim=16)
    aggregator = MapperSpec(variant="temporal-aggregator", frames=8, kl_weight=1e-3, **size)
    learned = held_out_cosine(aggregator, (frames[:-200], clap[:-200]), (frames[-200:], clap[-200:]), steps=300)
    mean_only = MapperSpec(variant="regression-transformer", **size)
    averaged = held_out_cosine(mean_only, (mean[:-200], clap[:-200]), (mean[-200:], clap[-200:]), steps=300)
    assert learned > 0.8 and learned > averaged + 0.2, (learned, averaged)


def test_the_aggregator_reads_each_frames_moment_and_round_trips_as_a_mapper(aggregator):
    mapper = read_mapper(aggregator)
    assert (mapper.spec.variant, mapper.spec.frames, mapper.spec.condition_dim) == ("temporal-aggregator", 4, 260)
    frames = F.normalize(torch.randn(1, FRAMES, 64, generator=torch.Generator().manual_seed(1)), dim=-1)
    moments = torch.tensor([[0.125, 0.375, 0.625, 0.875]])
    condition = torch.cat([frames, moments[..., None]], dim=2).reshape(1, -1)
    reversed_moments = torch.cat([frames, moments.flip(1)[..., None]], dim=2).reshape(1, -1)
    first, second = (mapper.map(c, [None], 1, 1.0) for c in (condition, reversed_moments))
    assert torch.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert not torch.allclose(first, second, atol=1e-4)  # the same frames at other moments sound otherwise


def test_the_decode_stage_keeps_each_frame_and_the_map_stage_aggregates_them(learned, aggregator, tmp_path):
    from workers.decode_embed import DecodeEmbed
    from workers.map import Map

    video = render_test_video(tmp_path / "walk.mp4", 12.0, 160, 96, 24)
    [row] = run(DecodeEmbed(learned), [row_for(video, learned)])
    windows, width = row["n_windows"], row["clip_embeddings"].shape[1]
    assert row["frame_embeddings"].shape == (windows, FRAMES * (width + 1))
    each = row["frame_embeddings"].reshape(windows, FRAMES, width + 1)
    # The mean that the mean aggregator maps is the mean of these frames; the moments are each frame's in its window.
    mean = each[..., :-1].mean(axis=1)
    assert mean / np.linalg.norm(mean, axis=1, keepdims=True) == pytest.approx(row["clip_embeddings"], abs=1e-5)
    window_seconds = learned.window.seconds
    assert each[0, :, -1] == pytest.approx([(k + 0.5) / FRAMES for k in range(FRAMES)], abs=0.01)
    assert 0.0 < each[1, 0, -1] < each[1, -1, -1] <= (12.0 - 10.24 + 0.64) / window_seconds + 1e-6  # a short last one

    [mapped] = run(Map(learned), [dict(row)])
    assert "frame_embeddings" not in mapped  # the frames end with the Map stage
    expected = read_mapper(aggregator).map(torch.from_numpy(row["frame_embeddings"]), [None] * windows, 1, 1.0)
    assert mapped["clap_embeddings"] == pytest.approx(expected.numpy(), abs=1e-5)


def test_the_embed_job_keeps_the_frames_for_the_aggregator_to_learn_from(learned, tmp_path):
    from foley.pipeline.rows import new_row
    from foley.storage.inputs import InputItem
    from foley.training.pairs import embedding_dims, read_pairs
    from workers.decode_embed import DecodeEmbed
    from workers.write_pairs import WritePairs

    video = render_test_video(tmp_path / "street.mp4", 3.0, 160, 96, 24, with_audio=True)
    uri = str(tmp_path / "pairs/pairs/street.parquet")
    planned = new_row(InputItem(str(video), "street.mp4"), uri, learned, EMBED)
    [row] = run(DecodeEmbed(learned, kind=EMBED, audio_required=True), [planned])
    row["clap_embeddings"] = np.ones((row["n_windows"], 8), np.float32)  # the CLAP stage's, here a stand-in
    WritePairs(learned, str(tmp_path / "pairs")).publish(row)
    storage = Storage(StorageConfig())
    assert embedding_dims(uri, storage) == (64, 8, 0, FRAMES)
    frames, _ = read_pairs([uri], storage, columns=("frames",))
    assert np.array_equal(frames, row["frame_embeddings"])


def test_the_mean_keeps_the_hashes_and_learned_makes_its_own(tiny_config, learned):
    models = {"clip_model": "sha256:c", "mapper_model": "sha256:m", "audioldm_model": "sha256:a", "clap_model": "l"}
    mean = tiny_config.with_overrides("window.aggregator=mean")
    assert DUB.settings(mean) == DUB.settings(tiny_config) and "aggregator" not in DUB.settings(mean)["window"]
    assert DUB.config_hash(learned, models) != DUB.config_hash(tiny_config, models)
    assert EMBED.config_hash(learned, models) != EMBED.config_hash(tiny_config, models)  # pairs with frames differ


def test_an_aggregator_and_a_setting_that_do_not_fit_are_named(tiny_config, learned, aggregator):
    storage = Storage(tiny_config.storage)
    assert misfit_models(learned, storage) == []
    [misfit] = misfit_models(tiny_config.with_overrides(f"mapper.checkpoint={aggregator}"), storage)
    assert "is a temporal aggregator, which needs window.aggregator=learned" in misfit
    [misfit] = misfit_models(tiny_config.with_overrides("window.aggregator=learned"), storage)
    assert "window.aggregator=learned needs a mapper.checkpoint trained with train.variant=temporal-agg" in misfit
    [misfit] = misfit_models(learned.with_overrides("window.frames=8"), storage)
    assert "aggregates 4 frames per window, but window.frames = 8" in misfit
    with pytest.raises(ConfigError, match="temporal aggregator that mapper.checkpoint names"):
        load_config(ROOT / "configs/tiny.yaml", ["window.aggregator=learned", "mapper.checkpoint=null"])
    with pytest.raises(ConfigError, match="sources.mode must be off"):
        load_config(ROOT / "configs/tiny.yaml", ["window.aggregator=learned", "sources.mode=zero_shot"])
