"""Put evaluated runs side by side: the settings that differ between them against their numbers, in one table.

    python -m jobs.compare --runs A B [C ...] [--name NAME] [--config configs/foley.yaml] [key.path=value ...]

Each run is a dub job's output, a folder or s3:// prefix, that `python -m jobs.evaluate` has scored. A run's
settings and models are those its finished videos were made with, as its manifest records them; its numbers are
its `_foley/evaluation/summary.json`. The settings that are the same in every run are left out, so the table shows
what was compared: mean against learned aggregation, sound sources on against off, 10 against 25 AudioLDM steps.

The table is printed as Markdown and written into each run, as `_foley/comparisons/<name>.md`, `.json` and
`.html`. The name defaults to one made from the runs' locations, so rerunning the same comparison replaces it. Each
run's report, when it has one, is written again so that it links to the comparison. The numbers only compare
between runs scored with the same CLAP and the same classifier; the table says so when they differ.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import re
import sys
from collections import Counter

from foley.config import ConfigError, FoleyConfig, load_config
from foley.pipeline.cli import fail_setup
from foley.pipeline.columns import OK
from foley.pipeline.evaluation import SCORE_NAMES
from foley.pipeline.guard import location
from foley.pipeline.kinds import DUB
from foley.pipeline.layout import COMPARISONS_DIR, EVALUATION_DIR, REPORT_DIR
from foley.pipeline.manifest import Manifest
from foley.pipeline.report import write_report
from foley.storage.store import Storage
from foley.storage.uris import StorageError, join

SCORED_WITH = ("clap_model", "classifier", "reference")  # a difference here makes the numbers incomparable


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.compare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True, type=location, help="dub job outputs, scored by evaluate")
    parser.add_argument(
        "--name", default=None, type=comparison_name, help="the comparison's file name (default: from the runs)"
    )
    parser.add_argument("--config", default="configs/foley.yaml", help="preset YAML (its storage and report keys)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")
    return parser.parse_args(argv)


def comparison_name(name: str) -> str:
    """--name as a plain file name: the comparison stays in _foley/comparisons/ and cannot overwrite the report."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}", name) or ".." in name:
        raise argparse.ArgumentTypeError(
            f"{name!r} is not a plain file name; use letters, digits, '.', '_' and '-' (no '/' or '..'), e.g. "
            "steps-10-vs-25"
        )
    return name


def flatten(settings: dict, prefix: str = "") -> dict[str, str]:
    """{"audioldm": {"steps": 10}} -> {"audioldm.steps": "10"}."""
    flat = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = json.dumps(value) if not isinstance(value, str) else value
    return flat


def run_facts(storage: Storage, run: str) -> dict:
    """A run's settings and models (flattened; several values joined by " | " when its videos differ) and its
    evaluation summary."""
    summary_uri = join(run, f"{EVALUATION_DIR}/summary.json")
    if not storage.exists(summary_uri):
        raise StorageError(f"{run} has not been evaluated: run python -m jobs.evaluate --output {run} first")
    records = [r for r in Manifest(run, storage, DUB).current().values() if r["status"] == OK]
    values: dict[str, Counter] = {}
    for record in records:
        made_with = flatten(json.loads(record.get("settings") or "{}")) | {
            f"model.{name}": identity for name, identity in json.loads(record["model_identities"] or "{}").items()
        }
        for key, value in made_with.items():
            values.setdefault(key, Counter())[value] += 1
    if records and not any(record.get("settings") for record in records):
        values["settings"] = Counter({"not recorded (made before jobs.compare)": 1})
    return {
        "run": run,
        "videos": len(records),
        "settings": {key: " | ".join(sorted(counts)) for key, counts in values.items()},
        "summary": json.loads(storage.read_bytes(summary_uri)),
    }


def comparison(runs: list[dict]) -> dict:
    """The settings that differ between the runs, each run's numbers, and what makes the numbers incomparable."""
    keys = sorted({key for run in runs for key in run["settings"]})
    differing = [key for key in keys if len({run["settings"].get(key, "") for run in runs}) > 1]
    scored_with = [name for name in SCORED_WITH if len({str(run["summary"].get(name)) for run in runs}) > 1]
    return {
        "settings": differing,
        "rows": [
            {
                "run": run["run"],
                "videos": run["videos"],
                "windows": run["summary"].get("windows"),
                "settings": {key: run["settings"].get(key, "") for key in differing},
                "numbers": {name: run["summary"].get(name) for name in SCORE_NAMES},
                "scored_with": {name: run["summary"].get(name) for name in SCORED_WITH},
            }
            for run in runs
        ],
        "warnings": [
            f"the runs were scored with different {name.replace('_', ' ')}s; their numbers do not compare"
            for name in scored_with
        ],
    }


def shown(value) -> str:
    return "n/a" if value is None else f"{value:.4g}" if isinstance(value, float) else str(value)


def table_cells(table: dict) -> tuple[list[str], list[list[str]]]:
    heads = ["run", "videos", *table["settings"], *SCORE_NAMES.values()]
    cells = [
        [row["run"], str(row["videos"]), *row["settings"].values(), *(shown(v) for v in row["numbers"].values())]
        for row in table["rows"]
    ]
    return heads, cells


def markdown(table: dict) -> str:
    heads, cells = table_cells(table)
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in cells]
    if not table["settings"]:
        lines.append("\nThe runs were made with the same settings and models.")
    return "\n".join([*lines, *(f"\nWarning: {warning}." for warning in table["warnings"])]) + "\n"


def html_page(table: dict, name: str) -> str:
    heads, cells = table_cells(table)
    row_html = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells)
    notes = "".join(f"<p>Warning: {html.escape(w)}.</p>" for w in table["warnings"])
    return (
        f'<!doctype html><meta charset="utf-8"><title>{html.escape(name)}</title>'
        "<style>table{border-collapse:collapse;font:14px sans-serif}td,th{border:1px solid #ccc;padding:4px}</style>"
        f"<h1>{html.escape(name)}</h1><table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in heads)}</tr>"
        f"{row_html}</table>{notes}\n"
    )


def compare(config: FoleyConfig, runs: list[str], name: str | None) -> tuple[dict, str, str]:
    """The table, its Markdown and its name, written into every run."""
    storage = Storage(config.storage)
    table = comparison([run_facts(storage, run) for run in runs])
    name = name or "comparison-" + hashlib.sha256("\n".join(runs).encode()).hexdigest()[:10]  # same runs, same file
    text = markdown(table)
    for run in runs:
        folder = join(run, f"{COMPARISONS_DIR}/{name}")
        storage.write_bytes(f"{folder}.md", text.encode())
        storage.write_bytes(f"{folder}.json", json.dumps(table, indent=2).encode())
        storage.write_bytes(f"{folder}.html", html_page(table, name).encode())
        if config.report.enabled and storage.exists(join(run, f"{REPORT_DIR}/index.html")):
            write_report(config, run)  # so that the run's report links to the comparison
    return table, text, name


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config, args.overrides)
        _, text, name = compare(config, args.runs, args.name)
    except (ConfigError, StorageError) as exc:
        return fail_setup(exc)
    print(text, end="", flush=True)
    for run in args.runs:
        print(f"written: {join(run, COMPARISONS_DIR)}/{name}.md (.json, .html)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
