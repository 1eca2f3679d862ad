"""The README says what the code does: its sample count, its commands and the config keys it names exist."""

import importlib
import re
from pathlib import Path

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
