"""Extract paired (CLIP, CLAP) window embeddings from videos that have sound: the mapper's training data.

    python -m jobs.embed --input DIR|s3://B/P/|LIST.csv --output DIR|s3://B/P/ [--config configs/foley.yaml] \
        [--force] [--max-failures N] [key.path=value ...]

Per window, the CLIP mean embedding comes from exactly the dub job's DecodeEmbed stage, and the CLAP audio
embedding from the same window's own audio (laion_clap). Each video's pairs land in
<output>/pairs/<relative path>.parquet; the manifest and resumability work as in jobs.dub.
"""

from __future__ import annotations

import argparse
import logging
import sys

from foley.config import ConfigError, load_config
from foley.pipeline.cli import add_common_arguments, fail_setup
from foley.pipeline.job import JobRun
from foley.pipeline.kinds import EMBED
from foley.pipeline.lease import LeaseLostError
from foley.pipeline.stage import stage_options
from foley.storage.uris import StorageError, join
from foley.training.pairs import PAIRS_DIR


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.embed", description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        run = JobRun(args, config, EMBED)
        rows = run.plan(outputs_for=lambda item: (join(args.output, f"{PAIRS_DIR}/{item.relative_path}.parquet"),))
        config = run.config  # with an unpinned hub model pinned to the commit the plan identified
        ray = run.connect() if rows else None
    except (ConfigError, StorageError) as exc:
        return fail_setup(exc)
    if not rows:
        return run.finish()

    # The stages import torch and the model libraries: a run with nothing left to do never loads them.
    from workers.clap_embed import ClapEmbed  # noqa: PLC0415
    from workers.decode_embed import DecodeEmbed  # noqa: PLC0415
    from workers.write_pairs import WritePairs  # noqa: PLC0415

    stages = config.stages
    videos = ray.data.from_items(rows)
    # DecodeEmbed  INPUT video URI  OUTPUT per-window CLIP means (as in jobs.dub)            1:1
    videos = videos.map_batches(
        DecodeEmbed,
        fn_constructor_kwargs={"config": config, "kind": EMBED, "audio_required": True},
        **stage_options(stages.decode_embed),
    )
    # ClapEmbed    INPUT video + windows OUTPUT per-window CLAP audio embeddings           1:1, windows batched
    videos = videos.map_batches(ClapEmbed, fn_constructor_kwargs={"config": config}, **stage_options(stages.clap_embed))
    # WritePairs   INPUT both embeddings OUTPUT pairs/<video>.parquet + its manifest row     1:1, atomic write
    videos = videos.map_batches(
        WritePairs,
        fn_constructor_kwargs={"config": config, "output_root": args.output},
        **stage_options(stages.write_pairs),
    )
    try:
        run.follow(videos, total=len(rows))
    except LeaseLostError as exc:  # another run writes here now: leave at once, folding nothing
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    return run.finish()


if __name__ == "__main__":
    sys.exit(main())
