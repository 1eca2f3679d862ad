"""The command line the batch jobs share: their common arguments, and how a job that cannot start says why."""

from __future__ import annotations

import argparse
import sys

from foley.pipeline.guard import location
from foley.pipeline.lease import LeaseLostError


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="folder, s3:// prefix, or .csv/.parquet list of URIs")
    parser.add_argument("--output", required=True, type=location, help="folder or s3:// prefix")
    parser.add_argument("--config", default="configs/foley.yaml", help="preset YAML (default: configs/foley.yaml)")
    parser.add_argument("--force", action="store_true", help="redo inputs the manifest already has as ok")
    parser.add_argument(
        "--max-failures", type=int, default=None, metavar="N", help="stop the job once more than N inputs have failed"
    )
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")


def fail_setup(exc: Exception) -> int:
    """Exit 2 for what stopped the job before its work (arguments, configuration, storage); 1 for a lease that
    another run took meanwhile, since nothing is wrong with the command."""
    print(f"error: {exc}", file=sys.stderr)
    return 1 if isinstance(exc, LeaseLostError) else 2
