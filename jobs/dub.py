"""Dub a folder or bucket of silent videos: each video gets a generated, visually matched soundtrack.

    python -m jobs.dub --input DIR|s3://B/P/|LIST.csv --output DIR|s3://B/P/ [--config configs/foley.yaml] \
        [--force] [--max-failures N] [key.path=value ...]

Read top to bottom, this file follows one video from its bucket to the muxed output: list the inputs, drop the
ones already done, then stream them through four Ray Data stages (decode+CLIP, mapper, AudioLDM, mux) and fold
the per-video manifest rows into one Parquet manifest. With RAY_ADDRESS set (as under `ray job submit`) it joins
that cluster; otherwise it starts a local Ray.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

from foley.config import ConfigError, FoleyConfig, load_config
from foley.manifest import Manifest
from foley.models import missing_weights
from foley.stage import FAILED, OK, SKIPPED, new_row, stage_options
from foley.storage import InputItem, Storage, StorageError, UnsafePathError, is_s3, join

log = logging.getLogger("foley.dub")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.dub", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, help="folder, s3:// prefix, or .csv/.parquet list of URIs")
    parser.add_argument("--output", required=True, help="folder or s3:// prefix; outputs mirror input paths")
    parser.add_argument("--config", default="configs/foley.yaml", help="preset YAML (default: configs/foley.yaml)")
    parser.add_argument("--force", action="store_true", help="redo inputs the manifest already has as ok")
    parser.add_argument("--max-failures", type=int, default=None, metavar="N",
                        help="stop the job once more than N inputs have failed")
    parser.add_argument("--existing-audio", choices=("skip", "replace", "mix"), default=None,
                        help="inputs that already have sound (shorthand for input.existing_audio=...)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        shorthands = [f"input.existing_audio={args.existing_audio}"] if args.existing_audio else []
        config = load_config(args.config, [*args.overrides, *shorthands])
        if problems := missing_weights(config):
            raise ConfigError("model weights not found:\n  " + "\n  ".join(problems) +
                              "\n  (train a mapper with jobs.train_mapper, or point the keys at existing weights)")
        storage = Storage(config.storage)
        check_roots(args.input, args.output)
        inputs = storage.list_inputs(args.input, config.input.extensions)
    except (ConfigError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    # 1. Keep only the work left: an input is done when its manifest row is ok under this config's hash.
    if removed := storage.remove_partials(args.output):
        print(f"removed {removed} partial files left by an interrupted run", flush=True)
    manifest = Manifest(args.output, storage)
    todo, already_done = pending_inputs(inputs, manifest.current(), config, args.force)
    print(f"{len(inputs)} inputs under {args.input}: {len(already_done)} already done, {len(todo)} to process "
          f"(config {config.output_hash()})", flush=True)
    rows, results = [], []
    for item in todo:
        try:
            output_uri = join(args.output, item.relative_path)
            if output_uri == item.uri:
                raise UnsafePathError("the output would overwrite the input")
        except UnsafePathError as exc:  # e.g. an object key '../x.mp4': recorded as failed, never written
            manifest.record(new_row(item, "", config) | {"status": FAILED, "error": f"list: {item.uri}: {exc}"})
            results.append({"status": FAILED})
            continue
        rows.append(new_row(item, output_uri, config))

    # 2. Stream the videos through the stages (each a pool of Ray actors that load their models once).
    if rows:
        try:
            results += run_pipeline(rows, config, args.output, args.max_failures)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    # 3. Fold the journal into one manifest and report.
    final = manifest.compact()
    counts = {status: sum(r["status"] == status for r in results) for status in (OK, FAILED, SKIPPED)}
    print(f"done in {time.perf_counter() - started:.1f} s: {counts[OK]} ok, {counts[FAILED]} failed, "
          f"{counts[SKIPPED]} skipped, {len(already_done)} already done; manifest: {manifest.compacted_uri} "
          f"({len(final)} rows)", flush=True)
    aborted = args.max_failures is not None and counts[FAILED] > args.max_failures
    if aborted:
        print(f"stopped early: more than --max-failures={args.max_failures} inputs failed", file=sys.stderr)
    return 1 if counts[FAILED] or aborted else 0


def check_roots(input_root: str, output_root: str) -> None:
    """Outputs inside the input folder would be picked up as inputs by the next run: refuse up front."""
    def normal(root: str) -> str:
        from pathlib import Path

        return root.rstrip("/") + "/" if is_s3(root) else str(Path(root).resolve()) + "/"

    if normal(output_root).startswith(normal(input_root)):
        raise StorageError(f"--output {output_root} is inside --input {input_root}; choose an output outside it")


def check_gpus(config: FoleyConfig, cluster_gpus: float) -> None:
    """Stages that ask for GPUs on a cluster without any would wait forever; say so instead."""
    wanting = [name for name, stage in config.stages if stage.num_gpus > 0]
    if wanting and cluster_gpus == 0:
        message = (f"stages {', '.join(wanting)} ask for GPUs but the Ray cluster has none; set "
                   f"stages.<name>.num_gpus=0 (or use a CPU preset) or run on a cluster with GPU workers")
        if os.environ.get("RAY_ADDRESS"):  # an autoscaling cluster may still add GPU nodes
            log.warning(message)
        else:
            raise ConfigError(message)


def pending_inputs(inputs: list[InputItem], current: dict[str, dict], config: FoleyConfig,
                   force: bool) -> tuple[list[InputItem], list[InputItem]]:
    config_hash = config.output_hash()
    done = [] if force else [
        item for item in inputs
        if current.get(item.uri, {}).get("status") == OK and current[item.uri].get("config_hash") == config_hash
    ]
    done_uris = {item.uri for item in done}
    return [item for item in inputs if item.uri not in done_uris], done


def run_pipeline(rows: list[dict], config: FoleyConfig, output_root: str, max_failures: int | None) -> list[dict]:
    import ray

    from workers.decode_embed import DecodeEmbed
    from workers.map import Map
    from workers.mux import Mux
    from workers.synthesize import Synthesize

    if not ray.is_initialized():
        ray.init(log_to_driver=True)  # joins RAY_ADDRESS when set, else starts a local Ray
    stages = config.stages
    check_gpus(config, ray.cluster_resources().get("GPU", 0))
    videos = ray.data.from_items(rows)

    # DecodeEmbed  INPUT video URI  OUTPUT per-window CLIP means (n_windows x 512)       1:1, frames stay inside
    videos = videos.map_batches(DecodeEmbed, fn_constructor_kwargs={"config": config},
                                **stage_options(stages.decode_embed))
    # Map          INPUT CLIP means OUTPUT CLAP-space embeddings (n_windows x 512)        1:1, windows batched
    videos = videos.map_batches(Map, fn_constructor_kwargs={"config": config}, **stage_options(stages.map))
    # Synthesize   INPUT CLAP embeddings OUTPUT waveforms (n_windows x 163840 @ 16 kHz)  1:1, windows batched
    videos = videos.map_batches(Synthesize, fn_constructor_kwargs={"config": config},
                                **stage_options(stages.synthesize))
    # Mux          INPUT waveforms OUTPUT muxed video at output_uri + its manifest row    1:1, publish atomically
    videos = videos.map_batches(Mux, fn_constructor_kwargs={"config": config, "output_root": output_root},
                                **stage_options(stages.mux))

    results, failures = [], 0
    for result in videos.iter_rows():
        results.append(result)
        failures += result["status"] == FAILED
        detail = result["error"] if result["status"] != OK else f"{result['n_windows']} windows"
        print(f"[{len(results)}/{len(rows)}] {result['status']:<7} {result['relative_path']}  ({detail})",
              flush=True)
        if max_failures is not None and failures > max_failures:
            break
    return results


if __name__ == "__main__":
    sys.exit(main())
