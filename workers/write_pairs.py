"""Embed stage 3: a video's (CLIP, CLAP) window pairs -> one Parquet file, and its manifest row.

INPUT  rows with clip_embeddings and clap_embeddings (n_windows x D each), and source_embeddings with sound
       sources on (n_windows x max_sources*D: the source remixer's training input), and frame_embeddings with
       window.aggregator=learned (n_windows x K*(D+1): the temporal aggregator's).
OUTPUT one manifest row per video; its pairs at output_uri (<output>/pairs/<relative path>.parquet).

One file per video, named after it, so a redo replaces the video's pairs instead of adding a second copy, and a
held-out split by file never puts windows of one video on both sides.
"""

from __future__ import annotations

from foley.pipeline.kinds import EMBED
from foley.pipeline.rows import row_windows
from foley.pipeline.stage import FinalStage
from foley.training.pairs import pairs_table, table_bytes


class WritePairs(FinalStage):
    kind = EMBED
    stage = "write_pairs"

    def publish(self, row: dict) -> list[int]:
        bounds = [(window.start_s, window.end_s) for window in row_windows(row)]
        table = pairs_table(
            row["relative_path"],
            bounds,
            row["clip_embeddings"],
            row["clap_embeddings"],
            {model: value for model, value in EMBED.model_ids(self.config).items() if value},  # the models used
            row.get("source_embeddings"),
            row.get("frame_embeddings"),
        )
        content = table_bytes(table)
        self.storage.write_bytes(row["output_uri"], content)
        return [len(content)]
