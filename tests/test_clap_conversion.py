"""AudioLDM's own CLAP: converted from its original checkpoint, both branches in the space AudioLDM reads."""

import collections
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from foley.config import AudioLDMConfig, ClapConfig, StorageConfig
from foley.models.audioldm import load_audioldm_text_encoder
from foley.models.clap import AUDIOLDM_CLAP_PREFIX, POSITION_IDS, load_clap_audio_encoder
from foley.models.tokenizers import byte_level_tokenizer
from foley.storage.store import Storage
from foley.testing.random_models import TINY_CLAP_DIM
from jobs.convert_audioldm_clap import main as convert

CPU = torch.device("cpu")
TEXTS = ["dog barking", "rain on a tin roof", "a chainsaw in the distance"]


@pytest.fixture(scope="module")
def original(tiny_models) -> Path:
    """The tiny original AudioLDM checkpoint from which the tiny AudioLDM's text encoder was converted."""
    return tiny_models["clap"].parent / "audioldm-original.ckpt"


def test_both_branches_of_audioldm_clap_land_in_one_space(tiny_models, original, tmp_path, capsys):
    assert convert(["--checkpoint", str(original), "--output", str(tmp_path / "clap")]) == 0
    assert f"wrote {tmp_path / 'clap' / 'clap.safetensors'}" in capsys.readouterr().out
    storage = Storage(StorageConfig())
    encoder = load_clap_audio_encoder(ClapConfig(checkpoint=str(tmp_path / "clap")), storage, CPU)
    text_encoder, _ = load_audioldm_text_encoder(AudioLDMConfig(model=str(tiny_models["audioldm"])), storage, CPU)

    tokens = byte_level_tokenizer()(TEXTS, padding="max_length", truncation=True, return_tensors="pt")
    with torch.no_grad():
        laion = encoder.module.model.get_text_embedding(dict(tokens))
        diffusers = torch.nn.functional.normalize(text_encoder(**tokens).text_embeds, dim=-1)
    assert laion.shape == (len(TEXTS), TINY_CLAP_DIM) and not torch.allclose(laion[0], laion[1], atol=1e-3)
    assert torch.allclose(laion, diffusers, atol=1e-5)

    checkpoint = torch.load(original, weights_only=True)["state_dict"]
    clap = {key.removeprefix(AUDIOLDM_CLAP_PREFIX): t for key, t in checkpoint.items() if AUDIOLDM_CLAP_PREFIX in key}
    audio = {key: t for key, t in encoder.module.model.state_dict().items() if key.startswith("audio_")}
    assert audio and all(torch.equal(tensor, clap[key]) for key, tensor in audio.items())
    converted = load_file(tmp_path / "clap" / "clap.safetensors")
    assert set(converted) == set(clap) - {POSITION_IDS}  # no UNet or VAE weights came along
    info = json.loads((tmp_path / "clap" / "clap.json").read_text())
    assert info["source_checkpoint"] == original.name and info["keys"] == len(converted)
    assert info["source_sha256"] == hashlib.sha256(original.read_bytes()).hexdigest()


def test_a_checkpoint_without_audioldm_clap_is_refused(tmp_path, capsys):
    torch.save({"state_dict": {"model.diffusion_model.out.weight": torch.zeros(2)}}, tmp_path / "unet.ckpt")
    assert convert(["--checkpoint", str(tmp_path / "unet.ckpt"), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: ") and "not an AudioLDM checkpoint: no cond_stage_model.model.* keys" in error
    assert not (tmp_path / "out").exists()


class Payload:
    """Unpickling this object touches a file: proof that a loader executed pickled code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class LightningStateDict(collections.OrderedDict):
    """A state dict of a class of its own: unpickling it would import code named by the file."""


@pytest.mark.parametrize("kind", ["payload", "dict subclass"])
def test_a_checkpoint_that_pickles_objects_is_refused_not_unpickled(tmp_path, capsys, kind):
    marker = tmp_path / "code-ran"
    state = {"payload": Payload(marker)} if kind == "payload" else LightningStateDict(x=torch.zeros(1))
    torch.save({"state_dict": state}, tmp_path / "audioldm.ckpt")
    assert convert(["--checkpoint", str(tmp_path / "audioldm.ckpt"), "--output", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    blocked = "GLOBAL getattr" if kind == "payload" else f"GLOBAL {LightningStateDict.__module__}.LightningStateDict"
    assert "audioldm.ckpt" in error and "is refused" in error and blocked in error and "weights_only" not in error
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "location, audio_model, message",
    [
        ("audioldm-s-full-v2.ckpt", "HTSAT-tiny", "is neither a folder made by `python -m jobs.convert_audioldm_clap`"),
        ("clap.safetensors", "HTSAT-tiny", "is neither a folder made by"),
        ("empty", "HTSAT-tiny", "the folder lacks clap.safetensors or clap.json"),
        ("converted", "HTSAT-base", "holds a CLAP with audio_model 'HTSAT-tiny', but clap.audio_model is 'HTSAT-base'"),
        ("missing.pt", "HTSAT-tiny", "no such file or folder"),
    ],
)
def test_the_loader_refuses_what_is_not_a_clap_of_the_configured_kind(
    tiny_models, tmp_path, location, audio_model, message
):
    if location == "converted":
        path = tiny_models["clap"]
    else:
        path = tmp_path / location
        if location == "empty":
            path.mkdir()
        elif location != "missing.pt":
            path.write_bytes(b"not a CLAP")
    config = ClapConfig(checkpoint=str(path), audio_model=audio_model)
    with pytest.raises((ValueError, FileNotFoundError), match="clap.checkpoint") as refused:
        load_clap_audio_encoder(config, Storage(StorageConfig()), CPU)
    assert message in str(refused.value)


def test_a_conversion_reads_from_and_writes_to_s3(original, bucket, tmp_path, monkeypatch):
    name, storage = bucket
    monkeypatch.setenv("AWS_ENDPOINT_URL", storage.config.endpoint_url)
    monkeypatch.setenv("FOLEY_CACHE_DIR", str(tmp_path / "cache"))
    storage.publish(original, f"s3://{name}/originals/audioldm-s-full-v2.ckpt")
    argv = ["--checkpoint", f"s3://{name}/originals/audioldm-s-full-v2.ckpt", "--output", f"s3://{name}/models/clap/"]
    assert convert(argv) == 0
    assert not list((tmp_path / "cache").rglob("*.ckpt"))  # the downloaded checkpoint is not kept
    info = json.loads(storage.read_bytes(f"s3://{name}/models/clap/clap.json"))
    assert info["source_checkpoint"] == "audioldm-s-full-v2.ckpt"
    encoder = load_clap_audio_encoder(ClapConfig(checkpoint=f"s3://{name}/models/clap/"), storage, CPU)
    assert encoder.embed_dim == TINY_CLAP_DIM
