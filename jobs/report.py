"""Write the static report of a dub job: a page to review thousands of outputs at a glance.

    python -m jobs.report --output DIR|s3://B/P/ [--config configs/foley.yaml] [key.path=value ...]

jobs.dub writes it when it ends (unless report.enabled is false); run this to refresh it, e.g. after
jobs.evaluate. Open `<output>/_foley/report/index.html` from disk, or serve the bucket: every link is relative.
"""

from __future__ import annotations

import argparse
import sys

from foley.config import ConfigError, load_config
from foley.pipeline.cli import fail_setup
from foley.pipeline.guard import location
from foley.pipeline.report import write_report
from foley.storage.uris import StorageError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=location, help="the dub job's output folder or s3:// prefix")
    parser.add_argument("--config", default="configs/foley.yaml", help="preset YAML (its report and storage keys)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")
    args = parser.parse_args(argv)
    try:
        page = write_report(load_config(args.config, args.overrides), args.output)
    except (ConfigError, StorageError) as exc:
        return fail_setup(exc)
    print(f"report: {page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
