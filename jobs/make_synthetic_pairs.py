"""Write synthetic (CLIP, CLAP) pairs with a known non-linear relation, in the format jobs.embed writes.

    python -m jobs.make_synthetic_pairs --output DIR|s3://B/P/ [--pairs 4000] [--dim 512] [--files 40] [--seed 0]
    python -m jobs.make_synthetic_pairs --relation sources --output DIR [--objects 12] [--per-pair 60] \
        [--max-sources 4] [--dim 512] [--seed 0]
    python -m jobs.make_synthetic_pairs --relation temporal --output DIR [--pairs 4000] [--frames 16] [--files 40]

For trying jobs.train_mapper without paired videos (configs/train-smoke.yaml trains on them in minutes). The
`sources` relation is SSV2A's (foley.training.synthetic): two objects per window, one file per pair of objects,
so the held-out files are pairs never seen together; train.variant=source-remixer learns from its source slots.
The `temporal` relation's sound depends on when in the window an object appears, which the mean over frames hides;
train.variant=temporal-aggregator learns from its frames.
"""

from __future__ import annotations

import argparse

from foley.config import StorageConfig
from foley.storage.store import Storage
from foley.training.synthetic import (
    write_synthetic_pairs,
    write_synthetic_source_pairs,
    write_synthetic_temporal_pairs,
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.make_synthetic_pairs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True)
    parser.add_argument("--pairs", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=512, help="size of both embeddings (512 for the real models)")
    parser.add_argument("--files", type=int, default=40, help="pair files; the held-out split is by file")
    parser.add_argument("--seed", type=int, default=0, help="fixes the relation and the samples")
    parser.add_argument("--relation", choices=("mlp", "sources", "temporal"), default="mlp")
    parser.add_argument("--objects", type=int, default=12, help="sources: objects, one file per pair of them")
    parser.add_argument("--per-pair", type=int, default=60, help="sources: windows per pair of objects")
    parser.add_argument("--max-sources", type=int, default=4, help="sources: source slots per window")
    parser.add_argument("--frames", type=int, default=16, help="temporal: frames per window (window.frames)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.relation == "sources":
        files = write_synthetic_source_pairs(
            args.output, Storage(StorageConfig()), args.objects, args.per_pair, args.dim, args.max_sources, args.seed
        )
        print(f"{len(files) * args.per_pair} windows of two objects each, {len(files)} pairs of objects, {args.dim}-d")
        return 0
    if args.relation == "temporal":
        files = write_synthetic_temporal_pairs(
            args.output, Storage(StorageConfig()), args.pairs, args.frames, args.dim, args.files, args.seed
        )
        print(f"{args.pairs} windows of {args.frames} frames, {args.dim}-d, in {len(files)} files under {args.output}")
        return 0
    files = write_synthetic_pairs(
        args.output, Storage(StorageConfig()), args.pairs, args.dim, args.dim, args.files, args.seed
    )
    print(f"{args.pairs} pairs of {args.dim}-d embeddings in {len(files)} files under {args.output}/pairs/")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
