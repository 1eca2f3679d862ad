"""Write the tiny random-weight models that configs/tiny.yaml uses, in each library's native format.

python -m jobs.make_tiny_models [--output models/tiny]

Also an original-format AudioLDM checkpoint (audioldm-original.ckpt), from which the CLAP folder (clap/) and
AudioLDM's text encoder both come, as for the real models (`python -m jobs.convert_audioldm_clap` reads it too).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from foley.testing.random_models import save_tiny_models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.make_tiny_models", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default="models/tiny", type=Path)
    args = parser.parse_args(argv)
    for name, folder in save_tiny_models(args.output).items():
        print(f"{name}: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
