"""laion_clap without the hub, and the zero-shot mapper, on tiny random-weight models."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from foley.config import ClapConfig, StorageConfig
from foley.models.clap import load_clap_audio_encoder, read_clap_weights, text_branch_config
from foley.storage.store import Storage
from foley.testing.random_models import TINY_CLAP_DIM


def test_audioldm_clap_loads_offline_from_a_local_folder(tiny_models, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    encoder = load_clap_audio_encoder(
        ClapConfig(checkpoint=str(tiny_models["clap"])), Storage(StorageConfig()), torch.device("cpu")
    )
    rng = np.random.default_rng(0)
    waves = [rng.uniform(-0.3, 0.3, n).astype(np.float32) for n in (48000 * 10, 48000 * 3, 491520)]
    embeddings = encoder.embed(waves)
    assert embeddings.shape == (3, 512) and np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
    assert np.array_equal(embeddings, encoder.embed(waves))  # long windows are centre-cropped, not randomly
    assert len(encoder.centre_crop(waves[2])) == 480000


def test_the_text_branch_geometry_comes_from_the_checkpoint(tiny_models):
    config = text_branch_config(read_clap_weights(tiny_models["clap"], ClapConfig(checkpoint=str(tiny_models["clap"]))))
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (768, 1, 64)


def test_a_released_laion_clap_checkpoint_loads_from_s3(tiny_models, bucket, tmp_path):
    name, storage = bucket
    state = load_file(tiny_models["clap"] / "clap.safetensors")
    torch.save({"epoch": 0, "state_dict": {f"module.{key}": t for key, t in state.items()}}, tmp_path / "clap.pt")
    storage.publish(tmp_path / "clap.pt", f"s3://{name}/models/clap.pt")
    storage = Storage(StorageConfig(endpoint_url=storage.config.endpoint_url, cache_dir=str(tmp_path)))
    encoder = load_clap_audio_encoder(
        ClapConfig(checkpoint=f"s3://{name}/models/clap.pt"), storage, torch.device("cpu")
    )
    assert encoder.embed_dim == 512


@pytest.fixture(scope="module")
def zero_shot(tiny_config):
    from foley.models.mapping import load_mapper

    config = tiny_config.model_copy(update={"mapper": tiny_config.mapper.model_copy(update={"checkpoint": None})})
    return load_mapper(config, Storage(config.storage), torch.device("cpu"))


def test_zero_shot_puts_most_weight_on_the_label_the_window_shows(zero_shot):
    assert len(zero_shot.labels) == 309  # the VGGSound vocabulary ships with the project
    for label in ("dog barking", "playing bagpipes", "thunder", "chainsawing trees"):
        index = zero_shot.labels.index(label)
        weights = zero_shot.label_weights(zero_shot.label_image_embeddings[index : index + 1])[0]
        assert weights.argmax().item() == index and weights[index] > 0.5, label
        assert (weights > 0).sum().item() == zero_shot.top_k and weights.sum().item() == pytest.approx(1.0)


def test_zero_shot_output_is_the_normalised_mix_of_label_sounds(zero_shot):
    window = torch.nn.functional.normalize(torch.randn(2, zero_shot.clip_dim), dim=-1)
    mapped = zero_shot.map(window)
    expected = torch.nn.functional.normalize(zero_shot.label_weights(window) @ zero_shot.label_sound_embeddings, dim=-1)
    assert torch.allclose(mapped, expected) and torch.allclose(mapped.norm(dim=-1), torch.ones(2))


def test_the_map_stage_uses_zero_shot_and_says_why_when_no_checkpoint_is_configured(tiny_config):
    from foley.pipeline.kinds import DUB
    from foley.pipeline.rows import batch_of, new_row, rows_of, window_notes
    from foley.storage.inputs import InputItem
    from workers.map import Map

    config = tiny_config.model_copy(update={"mapper": tiny_config.mapper.model_copy(update={"checkpoint": None})})
    row = new_row(InputItem("a.mp4", "a.mp4"), "out.mp4", config, DUB)
    stage = Map(config)
    thunder = stage.mapper.labels.index("thunder")
    row["clip_embeddings"] = torch.cat(
        [stage.mapper.label_image_embeddings[thunder : thunder + 1], torch.nn.functional.normalize(torch.randn(2, 64))]
    ).numpy()
    [result] = rows_of(stage(batch_of([row])))
    assert result["status"] == "pending" and result["clap_embeddings"].shape == (3, TINY_CLAP_DIM)
    assert result["mapper_model"] == "zero-shot:vggsound.txt"
    # The labels each window's sound was mixed from, heaviest first, with their weights: a reviewer sees why.
    notes = window_notes(result)
    assert len(notes) == 3 and all(len(note["labels"]) == config.mapper.zero_shot_top_k for note in notes)
    assert notes[0]["labels"][0]["label"] == "thunder" and notes[0]["labels"][0]["weight"] > 0.5
    for note in notes:
        weights = [label["weight"] for label in note["labels"]]
        assert weights == sorted(weights, reverse=True) and sum(weights) == pytest.approx(1.0, abs=1e-3)
