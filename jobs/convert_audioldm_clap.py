"""Copy the CLAP inside AudioLDM's original checkpoint into the folder that clap.checkpoint names.

    python -m jobs.convert_audioldm_clap --checkpoint FILE|s3://B/P/audioldm-s-full-v2.ckpt --output DIR|s3://B/P/ \
        [--audio-model HTSAT-tiny]

AudioLDM is conditioned on this CLAP, whose authors never released it on its own, and diffusers' AudioLDM keeps
only its text branch. The folder (clap.safetensors + clap.json) holds both branches, so that the mapper's targets,
reference sounds and candidate scores are embedded in the space AudioLDM reads. The checkpoint is read
weights-only: one that pickles anything else is refused, never unpickled in full.
"""

from __future__ import annotations

import argparse
import pickle
import posixpath
import sys
import tempfile
from pathlib import Path

from foley.config import StorageConfig
from foley.models.clap import INFO_FILE, WEIGHTS_FILE, convert_audioldm_clap
from foley.storage.store import Storage
from foley.storage.uris import StorageError, join


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.convert_audioldm_clap", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="AudioLDM's original .ckpt file, local or s3://")
    parser.add_argument("--output", required=True, help="folder or s3:// prefix for clap.safetensors + clap.json")
    parser.add_argument(
        "--audio-model", default="HTSAT-tiny", help="its laion_clap audio model: HTSAT-tiny (HTSAT-base for -m-)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    storage = Storage(StorageConfig())  # S3 endpoint, region and credentials from the AWS environment
    written = [join(args.output, name) for name in (WEIGHTS_FILE, INFO_FILE)]
    try:
        identity = storage.identity(args.checkpoint)
        checkpoint = storage.fetch(args.checkpoint, identity)
        try:
            with tempfile.TemporaryDirectory() as scratch:
                info = convert_audioldm_clap(
                    checkpoint, Path(scratch), args.audio_model, source_name=posixpath.basename(args.checkpoint)
                )
                for name, uri in zip((WEIGHTS_FILE, INFO_FILE), written, strict=True):
                    storage.publish(Path(scratch) / name, uri)
        finally:
            storage.remove_copy(args.checkpoint, identity)  # a downloaded checkpoint is gigabytes: not kept
    except (ValueError, pickle.UnpicklingError, OSError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{info['keys']} CLAP tensors ({info['audio_model']}) of {info['source_checkpoint']} ({info['source_sha256']})"
    )
    for uri in written:
        print(f"wrote {uri}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
