"""The README and the docs pages say what the code does: the sample count, the commands and the config keys they
name exist, the README stays short and its links to docs/ lead somewhere."""

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
PAGES = {path.name: path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))}
DOCS = "\n".join([README, *PAGES.values()])  # the README and every docs page, the README first
FILE_NAME = re.compile(r"\.(json|safetensors|flac|wav|mp4|yaml)$")


def test_the_quickstart_counts_the_sample_videos_make_demo_makes():
    [count] = re.findall(r"make demo\s+# set up, make tiny models and (\d+) sample videos", README)
    assert int(count) == len(SAMPLES) + 1  # and the clip of three shots


def test_every_job_the_readme_and_the_docs_run_exists():
    modules = set(re.findall(r"python -m (jobs(?:\.\w+)+)", DOCS))
    assert "jobs.dub" in modules and "jobs.evaluate" in modules
    assert {"jobs.bench.decoders", "jobs.bench.bookkeeping", "jobs.convert_audioldm_clap"} <= modules  # docs pages
    for name in modules:
        module = importlib.import_module(name if name != "jobs.bench" else "jobs.bench.__main__")
        assert callable(getattr(module, "main", None)), name


def test_every_config_key_the_readme_and_the_docs_name_exists():
    sections = set(FoleyConfig.model_fields)
    named = {
        key
        for key in re.findall(r"`([a-z_]+(?:\.[a-z_<>]+)+)(?:=[^`]*)?`", DOCS)
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


def test_the_readme_stays_short():
    assert len(README.splitlines()) < 400


def heading_anchors(page: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces as hyphens."""
    lines = re.sub(r"```.*?```", "", page, flags=re.S).splitlines()
    headings = [line.lstrip("#").strip() for line in lines if line.startswith("#")]
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_link_into_docs_leads_to_a_page_and_a_heading():
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([^)\s]+))?\)", README)
    assert len(links) > 10
    for path, anchor in links:
        assert (ROOT / path).exists(), path
        if anchor:
            assert anchor in heading_anchors((ROOT / path).read_text()), f"{path}#{anchor}"
    for name, page in PAGES.items():  # the docs pages' links to each other and to their files
        for path, anchor in re.findall(r"\]\(([\w./-]+)(?:#([^)\s]+))?\)", page):
            assert (ROOT / "docs" / path).exists(), f"{name}: {path}"
            if anchor and path.endswith(".md"):
                assert anchor in heading_anchors((ROOT / "docs" / path).read_text()), f"{name}: {path}#{anchor}"


def test_the_readmes_ray_job_submit_is_the_one_its_test_runs():
    """tests/test_ray_job_submit.py runs the command of docs/cluster.md; the README shows the same one."""

    def command(page: str) -> str:
        [found] = re.findall(r"```bash\n(RAY_AUTH_MODE=token ray job submit --address http://HEAD.*?)```", page, re.S)
        return found

    assert command(README) == command(PAGES["cluster.md"])


def readme_command(start: str) -> str:
    """The first command that begins with `start` in the README, else in a docs page, as written: a line of a code
    block (its comment cut off) or an inline code span (joined where the text wraps it)."""
    for page in [README, *PAGES.values()]:
        block_lines = [line.split("  #")[0].strip() for block in page.split("```")[1::2] for line in block.splitlines()]
        spans = [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", page.replace("```", ""))]
        for command in block_lines + spans:
            if command.startswith(start):
                return command
    raise AssertionError(f"no command begins with {start!r} in the README or docs/")


def fresh_clone(folder: Path) -> Path:
    """The repository's tracked files, as `git clone` gives them, with this machine's set-up virtualenv."""
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True).stdout
    for name in tracked.decode().split("\0"):
        if name and (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)  # with its time, so make finds the venv's setup up to date
    (folder / ".venv").symlink_to(ROOT / ".venv")
    return folder


@pytest.mark.slow  # own job: a fresh clone, as a new user runs it
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
