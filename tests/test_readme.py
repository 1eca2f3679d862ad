"""The README says what the code does: its sample count, its commands and the config keys it names exist."""

import importlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import own_ray
from foley.config import FoleyConfig
from jobs.make_samples import SAMPLES

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
FILE_NAME = re.compile(r"\.(json|safetensors|flac|wav|mp4|yaml)$")


def test_the_quickstart_counts_the_sample_videos_make_demo_makes():
    [count] = re.findall(r"make demo\s+# set up, make tiny models and (\d+) sample videos", README)
    assert int(count) == len(SAMPLES) + 1  # and the clip of three shots


def test_every_job_the_readme_runs_exists():
    modules = set(re.findall(r"python -m (jobs(?:\.\w+)+)", README))
    assert "jobs.dub" in modules and "jobs.evaluate" in modules
    for name in modules:
        module = importlib.import_module(name if name != "jobs.bench" else "jobs.bench.__main__")
        assert callable(getattr(module, "main", None)), name


def test_every_config_key_the_readme_names_exists():
    sections = set(FoleyConfig.model_fields)
    named = {
        key
        for key in re.findall(r"`([a-z_]+(?:\.[a-z_<>]+)+)(?:=[^`]*)?`", README)
        if key.split(".")[0] in sections and "<" not in key and not FILE_NAME.search(key)  # clap.json is a file
    }
    assert len(named) > 20
    unknown = []
    for key in sorted(named):
        model, parts = FoleyConfig, key.split(".")
        for part in parts:
            field = getattr(model, "model_fields", {}).get(part)
            if field is None:
                unknown.append(key)
                break
            model = field.annotation
    assert unknown == []


def readme_command(start: str) -> str:
    """The README's first command that begins with `start`, as written: a line of a code block (its comment cut
    off) or an inline code span (joined where the text wraps it)."""
    block_lines = [line.split("  #")[0].strip() for block in README.split("```")[1::2] for line in block.splitlines()]
    spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", README.replace("```", ""))]
    return next(command for command in block_lines + spans if command.startswith(start))


def fresh_clone(folder: Path) -> Path:
    """The repository's tracked files, as `git clone` gives them, with this machine's set-up virtualenv."""
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)  # with its time, so make finds the venv's setup up to date
    (folder / ".venv").symlink_to(ROOT / ".venv")
    return folder


@pytest.mark.slow
def test_a_new_user_follows_the_readme_from_a_fresh_clone(tmp_path):
    """The quickstart, the figure of the cuts, the evaluation of the demo and the report, each run as the README
    writes it, in a shell without the test suite's HF_HUB_OFFLINE (the network is unreachable here, as on an
    air-gapped cluster: nothing may wait on the hub)."""
    clone = fresh_clone(tmp_path / "batch-foley")
    shell = {key: value for key, value in os.environ.items() if key not in {"HF_HUB_OFFLINE", "MAKEFLAGS", "MAKELEVEL"}}
    shell = own_ray(shell) | {"PATH": f"{clone / '.venv/bin'}:{os.environ['PATH']}"}  # a local Ray, as a new user's

    def run(command: str) -> subprocess.CompletedProcess:
        done = subprocess.run(command, shell=True, cwd=clone, env=shell, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    assert subprocess.run(["make", "-q", "setup"], cwd=clone, env=shell).returncode == 0, "run `make setup` first"
    demo = run(readme_command("make demo"))
    assert readme_command("make demo") == "make demo"
    assert "6 ok, 0 failed, 0 skipped" in demo.stdout
    last = demo.stdout.splitlines()[-1]
    assert last == f"report: {clone / 'out/_foley/report/index.html'}" and (clone / last.split(": ")[1]).is_file()

    figure = clone / "docs/cuts.png"
    figure.unlink()
    run(readme_command("python -m jobs.plot_windows"))
    assert figure.stat().st_size > 10_000

    evaluation = run(readme_command("python -m jobs.evaluate --output out --config configs/tiny.yaml"))
    assert "6 videos, 11 windows" in evaluation.stdout and "FD_CLAP n/a" in evaluation.stdout
    assert f"{clone / 'out/_foley/evaluation/summary.json'}" in evaluation.stdout
    summary = json.loads(
        (clone / "out/_foley/evaluation/summary.json").read_text(), parse_constant=lambda word: pytest.fail(word)
    )
    assert summary["fd_clap"] is None and "no reference audio" in summary["reasons"]["fd_clap"]

    report = run(readme_command("python -m jobs.report --output DIR").replace("DIR|s3://...", "out"))
    assert report.stdout.strip() == f"report: {clone / 'out/_foley/report/index.html'}"
    page_data = (clone / "out/_foley/report/data/summary.js").read_text()
    assert '"fd_clap": null' in page_data and "no reference audio" in page_data
