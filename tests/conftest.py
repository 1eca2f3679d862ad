"""Shared fixtures: tiny random-weight models saved in their native formats, generated media, one Ray head that
the end-to-end jobs join, and an S3-protocol server on loopback."""

from __future__ import annotations

import json
import os

# Set before anything starts, so that the shared Ray head's workers inherit them too: a hidden hub download must
# fail fast, never hang CI; every Ray the tests start or join checks its token, as production's heads do (Ray reads
# the mode when it is imported); and S3 clients get the moto server's fake credentials. Two test processes share
# the cores, so an OpenMP thread that waits sleeps instead of spinning on a core the other one needs.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["AWS_ACCESS_KEY_ID"] = "test-key-id"
os.environ["AWS_SECRET_ACCESS_KEY"] = "test-secret-never-printed-7d1c"
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from foley.config import FoleyConfig, load_config
from foley.pipeline.kinds import DUB
from foley.pipeline.rows import batch_of, new_row, rows_of
from foley.storage.inputs import InputItem
from foley.testing.random_models import save_tiny_models
from libraries import MIXED_SETTINGS, SHARD_SETTINGS, make_mixed_library, make_shard_dataset
from ray_heads import Head, ensure_token, head_env, start_head, stop_head
from shared_runs import SharedRun, run_once

ROOT = Path(__file__).resolve().parent.parent
FAKE_SECRET = os.environ["AWS_SECRET_ACCESS_KEY"]
OWN_RAY = None  # run_dub's `ray` for a job that must start a local Ray of its own (each caller says why)


# The files that take longest, handed out first, so that no long file runs alone at the end of a parallel run
# (make test's --durations under -n 2 on 2 cores, 2026-12-04: evaluation and comparison 227 s, the tiny bench 164 s,
# the README walk 137 s, training 136 and 113 s, a killed driver 102 s; the fault tests' file, about 8 minutes).
# (Makefile: pytest-xdist with --no-loadscope-reorder, which hands out files in collection order.) test_failures.py
# comes before test_report.py: its first test makes the session's mixed run, which the report test then only reads.
LONGEST_FIRST = (
    "test_faults.py",
    "test_bench.py",  # the tiny bench, and the full bench's stages at real size
    "test_evaluation.py",
    "test_failures.py",
    "test_training.py",
    "test_identity.py",
    "test_segments.py",
    "test_dub_job.py",
    "test_ray_job_submit.py",
    "test_readme.py",
    "test_report.py",
)


def pytest_collection_modifyitems(items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # a stable sort: every other file keeps its place


def pytest_configure(config):
    """Ray's token is made once, before parallel test processes (pytest-xdist) could each make one."""
    if not hasattr(config, "workerinput"):
        ensure_token(head_env())


@pytest.fixture(scope="session")
def ray_cluster() -> Head:
    """One local Ray head (token authentication on) for every end-to-end test that only needs a cluster to exist:
    its jobs join it through RAY_ADDRESS, as under `ray job submit`, instead of each paying Ray's start-up."""
    head = start_head(head_env(), f"/tmp/ray-tests-{uuid.uuid4().hex[:6]}")
    try:
        yield head
    finally:
        stop_head(head.sid)


@pytest.fixture
def ray_joined(ray_cluster, monkeypatch) -> Head:
    """This test's own process joins the shared head (for a job run in-process), and leaves it afterwards."""
    import ray

    for key, value in ray_cluster.client_env({}).items():
        monkeypatch.setenv(key, value)
    yield ray_cluster
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    return save_tiny_models(tmp_path_factory.mktemp("tiny-models"))


def tiny_overrides(models: dict[str, Path], cache_dir: Path) -> list[str]:
    return [
        f"clip.model=local-dir:{models['clip']}",
        f"mapper.checkpoint={models['mapper']}",
        f"audioldm.model={models['audioldm']}",
        f"clap.checkpoint={models['clap']}",
        f"sources.detector={models['detector']}",
        f"evaluation.classifier.checkpoint={models['panns']}",
        f"storage.cache_dir={cache_dir}",
    ]


@pytest.fixture(scope="session")
def tiny_config(tiny_models, tmp_path_factory) -> FoleyConfig:
    cache = tmp_path_factory.mktemp("cache")
    return load_config(ROOT / "configs" / "tiny.yaml", tiny_overrides(tiny_models, cache))


def dub_command(input_root, output_root, overrides, *extra, checkout: Path = ROOT) -> list[str]:
    """`python -m jobs.dub` with the tiny preset (of `checkout`), as a user runs it."""
    return [
        sys.executable,
        "-m",
        "jobs.dub",
        "--input",
        str(input_root),
        "--output",
        str(output_root),
        "--config",
        str(checkout / "configs/tiny.yaml"),
        *extra,
        *overrides,
    ]


def own_ray(env: dict) -> dict:
    """`env` for a job that must start a local Ray of its own: no cluster address, and a Ray temp folder of its
    own, since ray.init() would otherwise join the newest local cluster in /tmp/ray (a multi-node test's)."""
    return env | {"RAY_ADDRESS": "", "RAY_TMPDIR": tempfile.mkdtemp(prefix="rw", dir="/tmp")}  # short: socket paths


def run_dub(
    ray: Head | None, input_root, output_root, overrides, *extra, checkout: Path = ROOT
) -> subprocess.CompletedProcess:
    """Run the job to the end from `checkout` (this one, or a copy elsewhere), on the `ray` head (the tests' shared
    one), or with OWN_RAY on an embedded local Ray of its own, as `python -m jobs.dub` runs on one machine."""
    env = os.environ | {"PYTHONPATH": str(checkout)}
    return subprocess.run(
        dub_command(input_root, output_root, overrides, *extra, checkout=checkout),
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=900,
        env=ray.client_env(env) if ray else own_ray(env),
    )


# For a job that a test kills part-way: AudioLDM at 20 steps, not the tiny preset's 3, keeps a window at about 1.5 s
# of CPU, so the moment to kill it (between two events the test waits for) lasts seconds on a loaded machine.
SLOW_SYNTHESIS = ["audioldm.steps=20"]


def start_dub(input_root, output_root, overrides, log_path: Path) -> subprocess.Popen:
    """Start the job in the background, in a session of its own with its own local Ray (so that a test can kill
    all of it at once, as when the machine of an embedded run dies), its output going to `log_path`."""
    with open(log_path, "w") as log:
        return subprocess.Popen(
            dub_command(input_root, output_root, overrides),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=own_ray(os.environ),
        )


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol server (moto) on loopback; boto3 reaches it through endpoint_url."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server._server.server_port}"
    server.stop()


@pytest.fixture
def bucket(s3_endpoint, request):
    """A fresh bucket per test, and a Storage that talks to it."""
    import re

    from foley.config import StorageConfig
    from foley.storage.store import Storage

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    storage = Storage(StorageConfig(endpoint_url=s3_endpoint))
    storage.s3.create_bucket(Bucket=name)
    return name, storage


# Runs shared by the whole session (shared_runs.py): each dubbed once, read by every test of a facet of it.


@pytest.fixture(scope="session")
def shared_folder(tmp_path_factory, worker_id) -> Path:
    """The folder every test process of this session shares (pytest-xdist's each have their own below it)."""
    base = tmp_path_factory.getbasetemp()
    return base if worker_id == "master" else base.parent


@pytest.fixture(scope="session")
def mixed_run(shared_folder, tiny_models, ray_cluster) -> SharedRun:
    """The mixed library (libraries.py: ok, failed and skipped inputs, sound sources on, sound files beside the
    videos), dubbed in root/"out"; its facts: the error each bad input must get."""

    def dub(root: Path):
        errors = make_mixed_library(root / "in")
        overrides = [*tiny_overrides(tiny_models, root / "cache"), *MIXED_SETTINGS]
        return run_dub(ray_cluster, root / "in", root / "out", overrides), {"errors": errors}

    return run_once(shared_folder / "mixed", dub)


@pytest.fixture(scope="session")
def shard_run(shared_folder, tiny_models, ray_cluster) -> SharedRun:
    """The WebDataset dataset (libraries.py: two shards, a broken sample, captions), dubbed in root/"out"; its facts:
    each shard's members as written."""

    def dub(root: Path):
        members = make_shard_dataset(root / "in")
        overrides = [*tiny_overrides(tiny_models, root / "cache"), *SHARD_SETTINGS]
        facts = {"members": {shard: [[name, data.hex()] for name, data in kept] for shard, kept in members.items()}}
        return run_dub(ray_cluster, root / "in", root / "out", overrides), facts

    return run_once(shared_folder / "shards", dub)


# The dub job's plan alone, in-process: what a run would do with a library and a manifest.


def plan_dub(input_root, output_root, config, *extra) -> list[dict]:
    """The dub job's plan, with its arguments parsed as on the command line: the rows it would process."""
    from foley.pipeline.job import JobRun
    from foley.pipeline.kinds import DUB
    from foley.pipeline.outputs import dub_outputs
    from jobs.dub import parse_args

    args = parse_args(["--input", str(input_root), "--output", str(output_root), *extra])
    run = JobRun(args, config, DUB)
    rows = run.plan(outputs_for=lambda item: dub_outputs(args.output, item, config))
    run.lease.give_back()  # the plan alone is this run: the next one takes the output root
    return rows


def finish_rows(output_root, config, rows: list[dict]) -> None:
    """Publish a stand-in output of each row and journal the row with its size, as the Mux stage does."""
    import argparse

    from foley.pipeline.job import JobRun
    from foley.pipeline.kinds import DUB

    run = JobRun(argparse.Namespace(output=str(output_root)), config, DUB)
    for row in rows:
        outputs = json.loads(row["outputs"])
        for uri in outputs:
            run.storage.write_bytes(uri, b"a published output")
        sizes = json.dumps([len(b"a published output")] * len(outputs))
        run.manifest.record(row | {"status": "ok", "output_sizes": sizes})


# Stages called in-process, the way Ray Data calls them (a numpy batch of rows); models loaded once per session.


@pytest.fixture(scope="session")
def decode_embed(tiny_config):
    from workers.decode_embed import DecodeEmbed

    return DecodeEmbed(tiny_config)


@pytest.fixture(scope="session")
def synthesize(tiny_config):
    from workers.synthesize import Synthesize

    return Synthesize(tiny_config)


def row_for(path: Path, config, output: Path | None = None, relative: str | None = None) -> dict:
    item = InputItem(str(path), relative or path.name)
    return new_row(item, str(output or path.with_name("out-" + path.name)), config, DUB)


def run(stage, rows):
    return rows_of(stage(batch_of(rows)))


def one_window(duration_s: float) -> str:
    """The `windows` column of a video short enough for one window (rows built by hand for the Mux stage)."""
    return json.dumps([{"start_s": 0.0, "end_s": duration_s, "shot": 0}])


def held_out_cosine(spec, train: tuple, held_out: tuple, steps: int) -> float:
    """Train a mapper variant in-process on (condition, CLAP) rows `train` (AdamW, batches of 64, seeded); its mean
    cosine on the rows `held_out`, mapped as the dub job maps."""
    import torch
    import torch.nn.functional as F

    from foley.models.mapper import V2AMapper

    (condition, clap), (val_condition, val_clap) = (tuple(map(torch.from_numpy, rows)) for rows in (train, held_out))
    torch.manual_seed(0)
    mapper = V2AMapper(spec)
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=1e-3, weight_decay=0.01)
    draw = torch.Generator().manual_seed(0)
    for _ in range(steps):
        batch = torch.randint(0, len(condition), (64,), generator=draw)
        loss = mapper(condition[batch], clap[batch], 0.1, draw)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    generators = [torch.Generator().manual_seed(i) for i in range(len(val_condition))]
    mapped = mapper.eval().map(val_condition, generators, 1, 1.0)
    return float((mapped * F.normalize(val_clap, dim=-1)).sum(-1).mean())


@pytest.fixture
def small_disk(tmp_path):
    """`mount(name, size)`: a folder under tmp_path on a tmpfs of `size` (e.g. "700k"), a disk that fills up as a
    real one does (writes fail with ENOSPC). Skipped, with the reason, where this machine cannot mount one."""
    mounted = []

    def mount(name: str, size: str) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"a small disk (tmpfs) cannot be mounted here: {done.stderr.decode().strip()}")
        mounted.append(folder)
        return folder

    yield mount
    for folder in mounted:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path, leave_bytes: int) -> Path:
    """Fill the file system under `folder` until `leave_bytes` are free; the filler file, to delete to free it."""
    import shutil

    filler = folder / "filler.bin"
    free = shutil.disk_usage(folder).free
    with open(filler, "wb") as file:
        file.write(b"\0" * max(free - leave_bytes, 0))
    return filler
