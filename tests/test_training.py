"""Training the mapper: checkpoints, resuming, and learning a known relation from synthetic pairs."""

import json
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from foley.config import StorageConfig
from foley.models.mapper import MapperSpec, V2AMapper, read_mapper
from foley.storage.store import Storage
from foley.training.checkpoints import CheckpointStore
from foley.training.synthetic import write_synthetic_pairs


def test_a_checkpoint_restores_weights_and_optimizer_state_bit_exact(tmp_path):
    spec = MapperSpec(variant="diffusion-transformer", clip_dim=16, clap_dim=8, depth=1, heads=2, head_dim=8)
    mapper = V2AMapper(spec)
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=1e-3)
    for _ in range(3):
        loss = mapper(torch.randn(4, 16), torch.randn(4, 8), 0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    store = CheckpointStore(str(tmp_path), Storage(StorageConfig()))
    store.save(mapper, optimizer, epoch=2, step=3, history=[{"epoch": 1}, {"epoch": 2}])
    store.save(mapper, optimizer, epoch=3, step=3, history=[{"epoch": 1}, {"epoch": 2}, {"epoch": 3}])
    assert store.latest()["folder"] == "epoch-0003"
    assert not [p for p in (tmp_path / "checkpoint").rglob("*") if p.is_file() and "epoch-0002" in str(p)]

    fresh = V2AMapper(spec)
    fresh_optimizer = torch.optim.AdamW(fresh.parameters(), lr=1e-3)
    epoch, step, history = store.restore(store.latest(), fresh, fresh_optimizer)
    assert (epoch, step, len(history)) == (3, 3, 3)
    for name, tensor in mapper.state_dict().items():
        assert torch.equal(tensor, fresh.state_dict()[name]), name
    saved, restored = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert saved["param_groups"] == restored["param_groups"]
    for index, values in saved["state"].items():
        for name, value in values.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(restored["state"][index][name])), name


def train_job(ray, data, output, *overrides, fresh=False) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "jobs.train_mapper",
        "--data",
        str(data),
        "--output",
        str(output),
        "--config",
        str(ROOT / "configs/train-smoke.yaml"),
        *(["--fresh"] if fresh else []),
        *overrides,
    ]
    return subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, timeout=900, env=ray.client_env(os.environ)
    )


@pytest.fixture(scope="module")
def synthetic_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("pairs")
    write_synthetic_pairs(str(root), Storage(StorageConfig()), count=4000, clip_dim=512, clap_dim=512, files=40)
    return root


REGRESSION = ["train.variant=regression-mlp", "train.depth=1", "train.mlp_expansion=2"]


@pytest.mark.slow
def test_regression_learns_the_relation_and_a_rerun_resumes_at_the_right_step(synthetic_data, tmp_path, ray_cluster):
    first = train_job(ray_cluster, synthetic_data, tmp_path, *REGRESSION, "train.epochs=3")
    assert first.returncode == 0, first.stdout + first.stderr
    steps_per_epoch = json.loads((tmp_path / "metrics.json").read_text())["epochs"][0]["step"]

    resumed = train_job(ray_cluster, synthetic_data, tmp_path, *REGRESSION, "train.epochs=6")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert f"resuming after epoch 3 (step {3 * steps_per_epoch})" in resumed.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [entry["epoch"] for entry in metrics["epochs"]] == [1, 2, 3, 4, 5, 6]
    assert [entry["step"] for entry in metrics["epochs"]] == [steps_per_epoch * e for e in range(1, 7)]
    assert abs(metrics["before_training_val_cosine"]) < 0.1
    assert abs(metrics["epochs"][-1]["no_mapper_cosine"]) < 0.1
    assert metrics["final_val_cosine"] >= 0.9

    other = train_job(ray_cluster, synthetic_data, tmp_path, *REGRESSION, "train.depth=2", "train.epochs=7")
    assert other.returncode == 2 and "another architecture" in other.stderr


@pytest.mark.slow
def test_the_diffusion_prior_learns_the_relation_and_writes_its_report(synthetic_data, tmp_path, ray_cluster):
    result = train_job(ray_cluster, synthetic_data, tmp_path, "train.epochs=10")
    assert result.returncode == 0, result.stdout + result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["variant"] == "diffusion-transformer"
    assert abs(metrics["before_training_val_cosine"]) < 0.1
    assert metrics["final_val_cosine"] >= 0.8
    assert metrics["epochs"][-1]["val_cosine"] == metrics["final_val_cosine"]
    for figure in ("training_curves.png", "cosine_histogram.png"):
        assert (tmp_path / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    mapper = read_mapper(tmp_path)  # what jobs.dub loads
    assert mapper.spec.clip_dim == 512 and mapper.spec.variant == "diffusion-transformer"


@pytest.mark.slow
def test_the_source_remixer_trains_with_ray_train_on_pairs_with_sources(tmp_path, ray_cluster):
    from foley.training.synthetic import write_synthetic_source_pairs

    data = tmp_path / "source-pairs"
    write_synthetic_source_pairs(str(data), Storage(StorageConfig()), objects=6, per_pair=10, dim=64, max_sources=3)
    remixer = ["train.variant=source-remixer", "train.val_fraction=0.2", "train.depth=1", "train.head_dim=16"]
    result = train_job(ray_cluster, data, tmp_path / "remixer", *remixer, "train.epochs=2", "train.val_max_pairs=20")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "source-remixer mapper 64 -> 64" in result.stdout and "(no mapper: n/a)" in result.stdout
    metrics = json.loads((tmp_path / "remixer/metrics.json").read_text())
    assert (
        metrics["variant"] == "source-remixer" and metrics["final_val_cosine"] > metrics["before_training_val_cosine"]
    )
    mapper = read_mapper(tmp_path / "remixer")  # what jobs.dub loads with sources.mode=remixer
    assert (mapper.spec.clip_dim, mapper.spec.max_sources, mapper.spec.condition_dim) == (64, 3, 256)

    plain = tmp_path / "plain-pairs"
    write_synthetic_pairs(str(plain), Storage(StorageConfig()), count=200, clip_dim=64, clap_dim=64, files=10)
    refused = train_job(ray_cluster, plain, tmp_path / "refused", *remixer)
    assert refused.returncode == 2 and "these pairs have none" in refused.stderr


@pytest.mark.slow  # own job: a Ray Train run of its own, as the other training tests
def test_the_temporal_aggregator_trains_with_ray_train_on_pairs_that_keep_each_frame(tmp_path, ray_cluster):
    from foley.training.synthetic import write_synthetic_temporal_pairs

    data = tmp_path / "temporal-pairs"
    write_synthetic_temporal_pairs(str(data), Storage(StorageConfig()), count=120, frames=4, dim=32, files=6)
    settings = ["train.variant=temporal-aggregator", "train.val_fraction=0.3", "train.depth=1", "train.head_dim=16"]
    result = train_job(ray_cluster, data, tmp_path / "aggregator", *settings, "train.epochs=2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "temporal-aggregator mapper 32 -> 32" in result.stdout
    metrics = json.loads((tmp_path / "aggregator/metrics.json").read_text())
    assert metrics["variant"] == "temporal-aggregator" and len(metrics["epochs"]) == 2
    mapper = read_mapper(tmp_path / "aggregator")  # what jobs.dub loads with window.aggregator=learned
    assert (mapper.spec.frames, mapper.spec.condition_dim, mapper.spec.kl_weight) == (4, 4 * 33, 1e-3)

    plain = tmp_path / "plain-pairs"
    write_synthetic_pairs(str(plain), Storage(StorageConfig()), count=60, clip_dim=32, clap_dim=32, files=6)
    refused = train_job(ray_cluster, plain, tmp_path / "refused", *settings)
    assert refused.returncode == 2 and "these pairs keep only their mean" in refused.stderr
