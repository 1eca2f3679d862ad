"""Checkpoints never run code: our mapper loads from safetensors only, other weights load weights-only."""

import pickle
from pathlib import Path

import pytest
import torch
from safetensors import SafetensorError

from foley.config import ClipConfig, MapperConfig, StorageConfig
from foley.models.clip import load_clip
from foley.models.mapping import load_trained_mapper
from foley.storage.store import Storage
from foley.testing.random_models import save_tiny_mapper


class Payload:
    """Unpickling this object touches a file: proof that a loader executed pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickled_clip_checkpoint_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"state_dict": Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        load_clip(
            ClipConfig(model="ViT-B-32", pretrained=str(tmp_path / "evil.pt")),
            Storage(StorageConfig()),
            torch.device("cpu"),
        )
    assert not marker.exists()


def test_a_mapper_checkpoint_that_is_a_pickle_is_refused_without_running_it(tmp_path):
    folder = save_tiny_mapper(tmp_path / "mapper", clip_dim=8, clap_dim=8)
    marker = tmp_path / "code-ran"
    (folder / "mapper.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(SafetensorError, match="deserializing"):
        load_trained_mapper(MapperConfig(checkpoint=str(folder)), Storage(StorageConfig()), torch.device("cpu"))
    assert not marker.exists()


def test_a_pickled_clap_checkpoint_is_refused_without_running_it(tmp_path):
    from foley.models.clap import read_clap_checkpoint

    marker = tmp_path / "code-ran"
    torch.save({"state_dict": {"module.x": Payload(marker)}}, tmp_path / "clap.pt")
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        read_clap_checkpoint(tmp_path / "clap.pt")
    assert not marker.exists()
