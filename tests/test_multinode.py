"""The dub job on a multi-node Ray cluster on this machine, with S3 input and output (a loopback moto server).

Each node has its own cache folder (FOLEY_CACHE_DIR in its environment) and a custom resource, so DecodeEmbed and
Mux run on different nodes: Mux cannot rely on the copy DecodeEmbed made, and the job must remove the copies on
every node that made them.
"""

import io
import os
import sys

import pyarrow.parquet as pq
import pytest

from conftest import dub_command, tiny_overrides
from foley.media.render import render_test_video
from media_checks import plays, streams

NODES = ("decode-node", "mux-node")


@pytest.fixture
def two_node_cluster(tmp_path):
    from ray.cluster_utils import Cluster

    caches = {name: tmp_path / f"cache-{name}" for name in NODES}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    for name in NODES:
        cluster.add_node(num_cpus=2, resources={name: 1}, env_vars={"FOLEY_CACHE_DIR": str(caches[name])})
    cluster.wait_for_nodes()
    yield cluster.address, caches
    cluster.shutdown()


@pytest.mark.slow  # own job: many nodes: a cluster of its own
def test_dub_on_two_nodes_with_s3_leaves_no_copies_behind(two_node_cluster, bucket, tmp_path, tiny_models, s3_endpoint):
    address, caches = two_node_cluster
    name, storage = bucket
    clips = {"a.mp4": 2.0, "sub/b.mp4": 3.0, "c.mkv": 2.5}
    for relative, seconds in clips.items():
        storage.publish(
            render_test_video(tmp_path / "src" / relative, seconds, 96, 64, 12), f"s3://{name}/in/{relative}"
        )
    overrides = [
        *tiny_overrides(tiny_models, tmp_path / "driver-cache"),
        f"storage.endpoint_url={s3_endpoint}",
        "stages.decode_embed.resources={decode-node: 0.5}",
        "stages.mux.resources={mux-node: 0.5}",
    ]
    import subprocess

    result = subprocess.run(
        dub_command(f"s3://{name}/in/", f"s3://{name}/out/", overrides),
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"RAY_ADDRESS": address},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "3 ok, 0 failed" in result.stdout
    for relative in clips:
        local = tmp_path / "result" / relative
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(storage.read_bytes(f"s3://{name}/out/{relative}"))
        assert plays(local) and streams(local) == ["video", "audio"], relative
    manifest = pq.read_table(io.BytesIO(storage.read_bytes(f"s3://{name}/out/_foley/manifest/manifest.parquet")))
    assert manifest.column("status").to_pylist() == ["ok"] * 3
    for node, cache in caches.items():
        assert (cache / "inputs").is_dir(), f"{node} never fetched an input: the stages did not run apart"
        leftovers = [path for path in (cache / "inputs").rglob("*") if path.is_file()]
        assert not leftovers, f"{node} kept {leftovers}"

    # A local output folder on a cluster of several nodes would be written on whichever node runs Mux, and a long
    # video's segments staged on different nodes would never meet: refused before any work, unless it is shared.
    render_test_video(tmp_path / "local-in" / "a.mp4", 1.0, 64, 48, 10)
    refused = subprocess.run(
        dub_command(tmp_path / "local-in", tmp_path / "local-out", overrides),
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"RAY_ADDRESS": address},
    )
    assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
    assert f"--output {tmp_path / 'local-out'} is a local folder, but the Ray cluster has 3 nodes" in refused.stderr
    assert "storage.shared_local_output=true" in refused.stderr
    assert not (tmp_path / "local-out" / "a.mp4").exists()

    # Without RAY_ADDRESS a job starts a Ray of its own, even while this cluster runs here: ray.init() alone would
    # join the newest cluster on the machine (this one), with its nodes and the refusal above.
    own = subprocess.run(
        [sys.executable, "-c", "from foley.pipeline.ray_session import connect_ray; print(len(connect_ray().nodes()))"],
        capture_output=True,
        text=True,
        timeout=300,
        env={key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"},
    )
    assert own.returncode == 0 and own.stdout.split()[-1] == "1", own.stdout[-3000:] + own.stderr[-3000:]
