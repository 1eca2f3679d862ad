from pathlib import Path

import pytest

from foley.config import ConfigError, FoleyConfig, load_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("preset", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_preset_loads(preset):
    assert isinstance(load_config(preset), FoleyConfig)


def test_overrides_reach_nested_keys_and_parse_yaml_values():
    config = load_config(
        ROOT / "configs/tiny.yaml",
        ["audioldm.steps=7", "stages.synthesize.concurrency=[1, 3]", "output.peak_dbfs=null"],
    )
    assert config.audioldm.steps == 7
    assert config.stages.synthesize.concurrency == (1, 3)
    assert config.output.peak_dbfs is None


def test_a_stage_reserves_the_host_memory_the_config_gives_it_and_none_by_default():
    from foley.pipeline.stage import stage_options

    tiny = load_config(ROOT / "configs/tiny.yaml", ["stages.synthesize.memory_gb=2.5"])
    assert stage_options(tiny.stages.synthesize)["memory"] == 2.5 * 2**30
    assert "memory" not in stage_options(tiny.stages.map)


def test_bad_keys_and_values_are_named_with_what_is_allowed():
    with pytest.raises(ConfigError) as caught:
        load_config(ROOT / "configs/tiny.yaml", ["audioldm.stepz=3", "audioldm.scheduler=euler", "window.frames=0"])
    message = str(caught.value)
    assert (
        "unknown key 'audioldm.stepz'; did you mean 'audioldm.steps'?" in message
        and "allowed keys here: attention, candidates, dtype, guidance_scale, model" in message
    )
    assert "audioldm.scheduler = 'euler'" in message and "'ddim' or 'dpmsolver++'" in message
    assert "window.frames = 0" in message and "greater than or equal to 1" in message
    assert message.count("(set on the command line)") == 3 and "tiny.yaml" not in message
    with pytest.raises(ConfigError, match=r"window: overlap_seconds \(6.0\) must be at most half of seconds"):
        load_config(ROOT / "configs/tiny.yaml", ["window.overlap_seconds=6"])


def test_a_bad_key_in_a_preset_is_blamed_on_the_preset(tmp_path):
    preset = tmp_path / "mine.yaml"
    preset.write_text("audioldm:\n  step: 3\n")
    with pytest.raises(ConfigError) as caught:
        load_config(preset, ["seed=2"])
    assert "unknown key 'audioldm.step'; did you mean 'audioldm.steps'?" in str(caught.value)
    assert str(caught.value).endswith(f"(in {preset})")


def test_missing_file_and_malformed_override_are_clear():
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("configs/nope.yaml")
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, ["audioldm.steps"])


def test_config_hash_follows_what_changes_the_result_only():
    from foley.pipeline.kinds import DUB, EMBED

    models = {"clip_model": "sha256:c", "mapper_model": "sha256:m", "audioldm_model": "sha256:a", "clap_model": "l"}

    def dub_hash(*overrides):
        return DUB.config_hash(load_config(ROOT / "configs/tiny.yaml", list(overrides)), models)

    assert dub_hash() == dub_hash()
    assert dub_hash() != dub_hash("seed=1") and dub_hash() != dub_hash("audioldm.steps=9")
    assert dub_hash() != dub_hash("input.existing_audio=mix")
    assert dub_hash() == dub_hash("stages.synthesize.batch_size=16") == dub_hash("input.max_width=100")
    assert dub_hash() == dub_hash("stages.map.memory_gb=3")  # scheduling, not the result
    embed = EMBED.config_hash(load_config(ROOT / "configs/tiny.yaml"), models)
    assert embed == EMBED.config_hash(load_config(ROOT / "configs/tiny.yaml", ["seed=3"]), models)
    assert embed != EMBED.config_hash(load_config(ROOT / "configs/tiny.yaml", ["window.frames=2"]), models)
    # What changes the output is in it: the device (CPU and CUDA draw different noise) and the models' content.
    assert dub_hash() != dub_hash("device=cuda")
    assert DUB.config_hash(load_config(ROOT / "configs/tiny.yaml"), models | {"mapper_model": "sha256:n"}) != dub_hash()
    # What the run ignores is not: the dtype on a CPU, the sampling settings of the deterministic zero-shot mapper,
    # and where the code and the models sit on this machine.
    assert dub_hash() == dub_hash("audioldm.dtype=float16")
    assert dub_hash("device=cuda") != dub_hash("device=cuda", "audioldm.dtype=float16")
    assert dub_hash("mapper.checkpoint=null") == dub_hash("mapper.checkpoint=null", "mapper.steps=3")
    assert dub_hash() != dub_hash("mapper.steps=3")
    assert dub_hash() == dub_hash("audioldm.model=/elsewhere/audioldm", "clip.model=local-dir:/elsewhere/clip")
    # How AudioLDM's CLAP reads a sound counts where it ranks candidates, and only there.
    assert dub_hash("clap.seconds=5") == dub_hash() != dub_hash("audioldm.candidates=2")
    for clap in ("clap.seconds=5", "clap.sample_rate=44100", "clap.enable_fusion=true"):
        assert dub_hash("audioldm.candidates=2", clap) != dub_hash("audioldm.candidates=2"), clap


def test_every_setting_declares_whether_it_is_part_of_a_result():
    """A setting added without a declaration would be left out of every result id, or counted by accident."""
    from pydantic import BaseModel

    from foley.config import FoleyConfig, declared_identity

    def undeclared(model: type[BaseModel], prefix: str) -> list[str]:
        missing = []
        for name, field in model.model_fields.items():
            if declared_identity(field) is None:
                missing.append(prefix + name)
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                missing += undeclared(field.annotation, f"{prefix}{name}.")
        return missing

    assert undeclared(FoleyConfig, "") == []
    assert len(FoleyConfig.model_fields["stages"].annotation.model_fields) == 8  # the walk reaches nested sections


# Config hashes of results that earlier releases made (the tiny preset, these overrides, these model identities):
# declaring identity on each setting keeps every one, so no finished result is redone.
EARLIER_HASHES = {
    (): ("71bb74ef618e963c", "cec44c008cdb24e3"),
    ("window.cuts=off",): ("85caa6357301a5bd", "0cd76e944ae433fd"),
    ("window.aggregator=learned", "mapper.checkpoint=/x"): ("dd24689d509fc934", "427436f6aaae5643"),
    ("decode.device=cuda", "stages.decode_embed.num_gpus=1"): ("99dae763b794301e", "9a4adacd9187ec4f"),
    ("mapper.checkpoint=/x", "mapper.steps=7"): ("86df6e4529996a84", "cec44c008cdb24e3"),
    ("audioldm.candidates=3",): ("4174498b303c70ff", "cec44c008cdb24e3"),
    ("input.existing_audio=mix", "input.mix_gain_db=-3"): ("b770cf54c4603e8e", "cec44c008cdb24e3"),
    ("output.mode=both",): ("e4de8d58501904d0", "cec44c008cdb24e3"),
    ("output.alternates=true", "audioldm.candidates=2"): ("feedd901638fabe5", "cec44c008cdb24e3"),
    ("output.audio_codecs={.ts: mp2}",): ("75fa154d52e12366", "cec44c008cdb24e3"),
    ("conditions.prompt=seaside", "conditions.prompt_weight=0.2"): ("0e4e644bb6415a08", "cec44c008cdb24e3"),
    ("conditions.reference_audio=/r.wav",): ("9e20b23942a89b17", "cec44c008cdb24e3"),
    ("clap.seconds=5", "audioldm.candidates=2"): ("961fac773932ce12", "de739994d4daca31"),
    ("sources.mode=zero_shot", "sources.exclude=[speech]"): ("4e88d5016501bf46", "f11a04979d3fadbd"),
}


@pytest.mark.parametrize("overrides", EARLIER_HASHES)
def test_results_of_earlier_releases_keep_their_hashes(overrides):
    from foley.pipeline.kinds import DUB, EMBED

    models = {"clip_model": "c", "mapper_model": "m", "audioldm_model": "a", "clap_model": "l", "detector_model": "d"}
    config = load_config(ROOT / "configs/tiny.yaml", list(overrides))
    assert (DUB.config_hash(config, models), EMBED.config_hash(config, models)) == EARLIER_HASHES[overrides]


def test_decoding_on_the_gpu_needs_a_gpu_and_is_part_of_the_result():
    from foley.pipeline.kinds import DUB

    models = {"clip_model": "sha256:c", "mapper_model": "sha256:m", "audioldm_model": "sha256:a", "clap_model": "l"}
    assert DUB.settings(load_config(ROOT / "configs/tiny.yaml"))["decode"] == {"frames": "sampled", "size": "clip"}
    on_a_gpu = [f"stages.{stage}.num_gpus=1" for stage in ("decode_embed", "map", "synthesize")]
    cpu, nvdec = (load_config(ROOT / "configs/tiny.yaml", [*on_a_gpu, f"decode.device={d}"]) for d in ("cpu", "cuda"))
    assert DUB.config_hash(cpu, models) != DUB.config_hash(nvdec, models)
    with pytest.raises(ConfigError, match=r"decode.device=cuda .* but stages.decode_embed.num_gpus is 0"):
        load_config(ROOT / "configs/tiny.yaml", ["decode.device=cuda"])


def test_relative_weight_paths_become_absolute(tmp_path, monkeypatch):
    """Existing relative paths resolve against the project root; hub ids stay hub ids."""
    project = tmp_path / "project"
    (project / "configs").mkdir(parents=True)
    (project / "models/mapper").mkdir(parents=True)
    (project / "models/audioldm").mkdir(parents=True)
    (project / "configs/local.yaml").write_text(
        "mapper: {checkpoint: models/mapper}\naudioldm: {model: models/audioldm}\n"
    )
    monkeypatch.chdir(tmp_path)  # not the project root: paths must still resolve
    config = load_config(project / "configs/local.yaml")
    assert config.mapper.checkpoint == str(project / "models/mapper")
    assert config.audioldm.model == str(project / "models/audioldm")
    assert load_config(None).audioldm.model == "cvssp/audioldm-s-full-v2"  # a hub id stays a hub id


def test_models_that_do_not_fit_and_a_missing_reference_are_refused_before_ray_starts(tmp_path, tiny_models, capsys):
    import ray

    from conftest import tiny_overrides
    from foley.testing.random_models import save_tiny_clip
    from jobs.dub import main

    wider = save_tiny_clip(tmp_path / "clip-128", embed_dim=128)
    (tmp_path / "in").mkdir()
    overrides = [*tiny_overrides(tiny_models, tmp_path / "cache"), f"clip.model=local-dir:{wider}"]
    arguments = ["--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"), "--config", "configs/tiny.yaml"]
    assert main([*arguments, *overrides]) == 2
    error = capsys.readouterr().err
    assert f"mapper.checkpoint = '{tiny_models['mapper']}' maps 64-d CLIP embeddings" in error
    assert f"clip.model = 'local-dir:{wider}' makes 128-d ones; use the CLIP the mapper was trained with" in error
    assert (
        main([*arguments, *tiny_overrides(tiny_models, tmp_path / "cache"), "conditions.reference_audio=no.wav"]) == 2
    )
    assert (
        "conditions.reference_audio = 'no.wav': no such file, and every video would need it" in capsys.readouterr().err
    )
    assert not ray.is_initialized() and not (tmp_path / "out").exists()
    assert main([*arguments, *tiny_overrides(tiny_models, tmp_path / "cache")]) == 0  # the fitting pair: nothing to do


def test_yaml_words_reach_settings_as_words_everywhere(tmp_path):
    """YAML 1.1 reads off, on, yes and no as booleans; a setting whose choices are words gets the word, from the
    command line and from a preset alike, and a yes/no setting still takes them."""
    config = load_config(ROOT / "configs/tiny.yaml", ["sources.mode=off", "window.cuts=off", "report.enabled=no"])
    assert (config.sources.mode, config.window.cuts, config.report.enabled) == ("off", "off", False)
    preset = tmp_path / "configs" / "words.yaml"
    preset.parent.mkdir()
    preset.write_text("sources: {mode: off}\nwindow: {cuts: off}\nreport: {enabled: yes}\noutput: {alternates: on}\n")
    config = load_config(preset)
    assert (config.sources.mode, config.window.cuts, config.report.enabled, config.output.alternates) == (
        "off",
        "off",
        True,
        True,
    )
