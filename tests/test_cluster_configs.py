"""The cluster configs parse, and every command they run names a real job module, real flags and valid keys."""

import importlib
import re
import shlex
from pathlib import Path

import pytest
import yaml

from foley.config import load_config

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = ROOT / "cluster"


def documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((CLUSTER / name).read_text()) if doc]


def job_commands(name: str) -> list[list[str]]:
    """Every `python -m jobs.X ...` a config runs, as argument lists."""
    commands = []

    def visit(node):
        if isinstance(node, dict):
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            if node and all(isinstance(v, str) for v in node) and "jobs." in " ".join(node):
                commands.append(node[node.index("python") :])
            else:
                for value in node:
                    visit(value)
        elif isinstance(node, str) and "python -m jobs." in node:
            commands.append(shlex.split(node[node.index("python -m jobs.") :]))

    for doc in documents(name):
        visit(doc)
    return commands


@pytest.mark.parametrize("name", ["kuberay-rayjob.yaml", "kuberay-nightly.yaml"])
def test_entrypoints_name_real_modules_flags_and_keys(name):
    commands = job_commands(name)
    assert commands, f"{name} runs no job"
    for command in commands:
        assert command[:2] == ["python", "-m"]
        module = importlib.import_module(command[2])
        args = module.parse_args(command[3:])  # argparse exits on an unknown flag
        assert (ROOT / args.config).is_file()
        load_config(ROOT / args.config, args.overrides)  # raises on an unknown key or a bad value


def test_kubernetes_manifests_have_the_expected_shape():
    [rayjob] = documents("kuberay-rayjob.yaml")
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    spec = rayjob["spec"]["rayClusterSpec"]
    assert spec["authOptions"]["mode"] == "token"
    [gpu] = spec["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["maxReplicas"] >= 1
    assert gpu["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"

    cluster, cron = documents("kuberay-nightly.yaml")
    assert cluster["kind"] == "RayCluster" and cron["kind"] == "CronJob"
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert len(cron["spec"]["schedule"].split()) == 5
    submit = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert submit["command"][:3] == ["ray", "job", "submit"]
    assert f"http://{cluster['metadata']['name']}-head-svc:8265" in submit["command"]


def test_aws_launcher_config_has_a_cpu_head_and_an_autoscaling_gpu_group():
    [config] = documents("aws.yaml")
    nodes = config["available_node_types"]
    assert nodes[config["head_node_type"]]["resources"] == {"CPU": 0}
    assert nodes["gpu_worker"]["min_workers"] == 0 and nodes["gpu_worker"]["max_workers"] >= 1
    setup = " ".join(config["setup_commands"])
    for path in re.findall(r"-c (\S+)", setup):
        assert (ROOT / path).is_file()


def test_dockerfile_copies_what_exists():
    for line in (CLUSTER / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY"):
            for source in line.split()[2:-1]:
                assert (ROOT / source).exists(), source


def test_readme_points_at_every_cluster_file():
    section = (ROOT / "README.md").read_text().split("## Running on a cluster", 1)[1].split("\n## ", 1)[0]
    for path in CLUSTER.iterdir():
        assert f"cluster/{path.name}" in section, path.name
