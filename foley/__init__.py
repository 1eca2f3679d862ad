"""The code that jobs/ and workers/ share, grouped by concern.

Layers, each importing only those below it (import-linter checks this in CI, see pyproject.toml):

    foley.testing                      random-weight model builders; only tests, benchmarks and make_* import it
    foley.pipeline | foley.training    job plumbing (runs, manifest, rows, stages) | mapper training data and files
    foley.models                       loading pretrained models, the V2A-Mapper, the zero-shot mapper, CLAP
    foley.media | foley.storage        ffmpeg probing, muxing, windows, stitching | local folders and S3
    foley.config                       the one typed configuration
"""
