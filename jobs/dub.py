"""Dub a folder or bucket of silent videos: each video gets a generated, visually matched soundtrack.

    python -m jobs.dub --input DIR|s3://B/P/|LIST.csv --output DIR|s3://B/P/ [--config configs/foley.yaml] \
        [--force] [--max-failures N] [--existing-audio skip|replace|mix] [key.path=value ...]

Read top to bottom, this file follows one video from its bucket to the muxed output: list the inputs, drop the
ones already done, then stream them through four Ray Data stages (decode+CLIP, mapper, AudioLDM, mux) and fold
the per-video manifest rows into one Parquet manifest. A long video travels as segments of windows, so that its
windows spread over every actor; the segment that completes it publishes it. With RAY_ADDRESS set (as under
`ray job submit`) it joins that cluster; otherwise it starts a local Ray.
"""

from __future__ import annotations

import argparse
import logging
import sys

from foley.config import ConfigError, FoleyConfig, load_config
from foley.models.fit import misfit_models
from foley.models.weights import missing_weights
from foley.pipeline.cli import add_common_arguments, fail_setup
from foley.pipeline.job import JobRun
from foley.pipeline.kinds import DUB
from foley.pipeline.lease import LeaseLostError
from foley.pipeline.outputs import dub_outputs
from foley.pipeline.report import write_report
from foley.pipeline.stage import stage_options
from foley.storage.store import Storage
from foley.storage.uris import StorageError


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.dub", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument(
        "--existing-audio",
        choices=("skip", "replace", "mix"),
        default=None,
        help="inputs that already have sound (shorthand for input.existing_audio=...)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        shorthands = [f"input.existing_audio={args.existing_audio}"] if args.existing_audio else []
        config = load_config(args.config, [*args.overrides, *shorthands])
        if problems := missing_weights(config):
            raise ConfigError(
                "model weights not found:\n  "
                + "\n  ".join(problems)
                + "\n  (train a mapper with jobs.train_mapper, make AudioLDM's CLAP with jobs.convert_audioldm_clap, "
                "or point the keys at existing weights; under `ray job submit --working-dir`, git-ignored folders "
                "such as models/ are not uploaded: name the weights by s3:// or hub id)"
            )
        storage = Storage(config.storage)
        if misfits := misfit_models(config, storage):
            raise ConfigError("models that do not fit each other:\n  " + "\n  ".join(misfits))
        if (reference := config.conditions.reference_audio) and not storage.exists(reference):
            raise ConfigError(
                f"conditions.reference_audio = {reference!r}: no such file, and every video would need it; point it "
                "at a sound file (local or s3://) or leave it out"
            )
        # 1. The work left: every input whose result (settings, model content, input content, output location)
        #    the manifest does not already have. Nothing starts if an output could land on an input.
        run = JobRun(args, config, DUB)
        rows = run.plan(outputs_for=lambda item: dub_outputs(args.output, item, config))
        config = run.config  # with an unpinned hub model pinned to the commit the plan identified
        # Each video, or segment of one, a Ray Data block of its own: what spreads one long video's segments over
        # every actor of the next stage.
        ray = run.connect(one_row_per_block=True) if rows else None
    except (ConfigError, StorageError) as exc:
        return fail_setup(exc)
    if not rows:
        return finish(run, config, args.output)

    # 2. Stream the videos through the stages; each is a pool of Ray actors that load their models once. (The
    #    stages import torch and the model libraries, so a run with nothing left to do never loads them.)
    from workers.decode_embed import DecodeEmbed  # noqa: PLC0415
    from workers.map import Map  # noqa: PLC0415
    from workers.mux import Mux  # noqa: PLC0415
    from workers.synthesize import Synthesize  # noqa: PLC0415

    stages = config.stages
    videos = ray.data.from_items(rows)
    # DecodeEmbed  INPUT video URI  OUTPUT per-window CLIP means (windows x 512), planned per shot
    #              1:1, or one row per segment of window.segment_windows windows still to make (long videos)
    videos = videos.map_batches(
        DecodeEmbed,
        fn_constructor_kwargs={"config": config, "kind": DUB, "segment_windows": config.window.segment_windows},
        **stage_options(stages.decode_embed),
    )
    # Map          INPUT CLIP means OUTPUT CLAP-space embeddings (windows x 512)          1:1, windows batched
    videos = videos.map_batches(Map, fn_constructor_kwargs={"config": config}, **stage_options(stages.map))
    # Synthesize   INPUT CLAP embeddings OUTPUT waveforms (windows x 163840 @ 16 kHz)    1:1, windows batched
    #              (plus a prompt, a reference sound, a negative prompt; N candidates ranked by AudioLDM's CLAP)
    videos = videos.map_batches(
        Synthesize,
        fn_constructor_kwargs={"config": config, "own_references": run.own_references(rows)},
        **stage_options(stages.synthesize),
    )
    # Mux          INPUT waveforms OUTPUT muxed video at output_uri + its manifest row    1:1, publish atomically
    #              (a segment is staged until its video's last one arrives; that one assembles and publishes)
    videos = videos.map_batches(
        Mux, fn_constructor_kwargs={"config": config, "output_root": args.output}, **stage_options(stages.mux)
    )
    try:
        run.follow(videos, total=len(rows))
    except LeaseLostError as exc:  # another run writes here now: leave at once, folding nothing
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1

    # 3. Fold the journal into one manifest, write the report page and print the summary.
    return finish(run, config, args.output)


def finish(run: JobRun, config: FoleyConfig, output: str) -> int:
    code = run.finish()
    if config.report.enabled:
        try:
            print(f"report: {write_report(config, output)}", flush=True)
        except (OSError, ValueError, StorageError) as exc:  # the outputs and the manifest are written already
            print(f"the report could not be written ({exc}); retry with python -m jobs.report", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
