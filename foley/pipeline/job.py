"""What the batch jobs over videos (dub, embed) share: choosing the work left, streaming it, reporting it.

A job lists its inputs, drops those its manifest already has as ok under the same config hash, streams the rest
through its Ray Data stages, prints a line per finished video, folds the manifest journal and prints a summary.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from foley.config import ConfigError, FoleyConfig
from foley.pipeline.kinds import JobKind
from foley.pipeline.manifest import Manifest
from foley.pipeline.rows import FAILED, OK, SKIPPED, new_row
from foley.storage.inputs import InputItem
from foley.storage.store import Storage
from foley.storage.uris import StorageError, UnsafePathError, is_s3

log = logging.getLogger("foley.job")


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--input", required=True, help="folder, s3:// prefix, or .csv/.parquet list of URIs")
    parser.add_argument("--output", required=True, help="folder or s3:// prefix")
    parser.add_argument("--config", default="configs/foley.yaml", help="preset YAML (default: configs/foley.yaml)")
    parser.add_argument("--force", action="store_true", help="redo inputs the manifest already has as ok")
    parser.add_argument(
        "--max-failures", type=int, default=None, metavar="N", help="stop the job once more than N inputs have failed"
    )
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")


def check_roots(input_root: str, output_root: str) -> None:
    """Outputs inside the input folder would be picked up as inputs by the next run: refuse up front."""

    def normal(root: str) -> str:
        return root.rstrip("/") + "/" if is_s3(root) else str(Path(root).resolve()) + "/"

    if normal(output_root).startswith(normal(input_root)):
        raise StorageError(f"--output {output_root} is inside --input {input_root}; choose an output outside it")


def check_gpus(config: FoleyConfig, kind: JobKind, cluster_gpus: float) -> None:
    """Stages that ask for GPUs on a cluster without any would wait forever; say so instead."""
    wanting = [name for name in kind.stages if getattr(config.stages, name).num_gpus > 0]
    if wanting and cluster_gpus == 0:
        message = (
            f"stages {', '.join(wanting)} ask for GPUs but the Ray cluster has none; set "
            f"stages.<name>.num_gpus=0 (or use a CPU preset) or run on a cluster with GPU workers"
        )
        if os.environ.get("RAY_ADDRESS"):  # an autoscaling cluster may still add GPU nodes
            log.warning(message)
        else:
            raise ConfigError(message)


def connect_ray():
    """Join the cluster in RAY_ADDRESS (as under `ray job submit`), or start a local Ray."""
    import ray  # noqa: PLC0415 - only once there is work: a run with nothing left to do never starts or loads Ray

    if not ray.is_initialized():
        ray.init(log_to_driver=True)
    return ray


class JobRun:
    """One run of a job over a set of inputs, from choosing the work to the summary line."""

    def __init__(self, args: argparse.Namespace, config: FoleyConfig, kind: JobKind):
        self.args, self.config, self.kind = args, config, kind
        self.started = time.perf_counter()
        self.storage = Storage(config.storage)
        self.manifest = Manifest(args.output, self.storage, kind)
        self.results: list[dict] = []
        self.already_done = 0
        self.aborted = False

    def plan(self, output_for: Callable[[InputItem], str]) -> list[dict]:
        """The rows of the inputs still to do; inputs whose output path would be unsafe are failed right here."""
        check_roots(self.args.input, self.args.output)
        inputs = self.storage.list_inputs(self.args.input, self.config.input.extensions)
        if removed := self.storage.remove_partials(self.args.output):
            print(f"removed {removed} partial files left by an interrupted run", flush=True)
        config_hash = self.kind.config_hash(self.config)
        current = {} if self.args.force else self.manifest.current()
        todo = [
            item
            for item in inputs
            if not (
                current.get(item.uri, {}).get("status") == OK and current[item.uri].get("config_hash") == config_hash
            )
        ]
        self.already_done = len(inputs) - len(todo)
        print(
            f"{len(inputs)} inputs under {self.args.input}: {self.already_done} already done, {len(todo)} to "
            f"process (config {config_hash})",
            flush=True,
        )
        rows = []
        for item in todo:
            try:
                output_uri = output_for(item)
                if output_uri == item.uri:
                    raise UnsafePathError("the output would overwrite the input")
            except UnsafePathError as exc:  # e.g. an object key '../x.mp4': recorded as failed, never written
                self.manifest.record(
                    new_row(item, "", self.config, self.kind) | {"status": FAILED, "error": f"list: {item.uri}: {exc}"}
                )
                self.results.append({"status": FAILED})
                continue
            rows.append(new_row(item, output_uri, self.config, self.kind))
        return rows

    def connect(self):
        """Ray (joined or started), after checking that it can host the stages' resources."""
        ray = connect_ray()
        check_gpus(self.config, self.kind, ray.cluster_resources().get("GPU", 0))
        return ray

    def follow(self, videos, total: int) -> None:
        """Consume the pipeline's output as videos finish: a progress line each, stop after too many failures."""
        max_failures = self.args.max_failures
        failures = 0
        for done, result in enumerate(videos.iter_rows(), start=1):
            self.results.append(result)
            failures += result["status"] == FAILED
            detail = result["error"] if result["status"] != OK else f"{result['n_windows']} windows"
            print(f"[{done}/{total}] {result['status']:<7} {result['relative_path']}  ({detail})", flush=True)
            if max_failures is not None and failures > max_failures:
                self.aborted = True
                break

    def finish(self) -> int:
        """Fold the journal into one manifest, print the summary; 0 if every input is ok, else 1."""
        final = self.manifest.compact()
        counts = {status: sum(r["status"] == status for r in self.results) for status in (OK, FAILED, SKIPPED)}
        print(
            f"done in {time.perf_counter() - self.started:.1f} s: {counts[OK]} ok, {counts[FAILED]} failed, "
            f"{counts[SKIPPED]} skipped, {self.already_done} already done; manifest: "
            f"{self.manifest.compacted_uri} ({len(final)} rows)",
            flush=True,
        )
        if self.aborted:
            print(f"stopped early: more than --max-failures={self.args.max_failures} inputs failed", file=sys.stderr)
        return 1 if counts[FAILED] or self.aborted else 0


def fail_setup(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2
