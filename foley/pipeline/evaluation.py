"""Scoring a finished dub job (jobs.evaluate): what each window was asked for, and the numbers published systems
report, computed on AudioLDM's own CLAP audio embeddings.

- CLAP score: the cosine between a window's generated audio embedding and its condition (what AudioLDM read, kept
  by the Mux stage under `<output>/_foley/conditions/<result id>/`), and with the reference audio's window where one is
  given;
- FD_CLAP: the Fréchet distance between the generated and the reference windows' embeddings;
- seam score: spectral flux at the crossfades between windows of one shot over the flux elsewhere.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np

from foley.pipeline.layout import CONDITIONS_DIR
from foley.storage.store import Storage
from foley.storage.uris import join

_PART = re.compile(r"from-window-(\d{5})\.npy$")


def conditions_uri(output_root: str, result_id: str, first_window: int) -> str:
    return join(output_root, f"{CONDITIONS_DIR}/{result_id}/from-window-{first_window:05d}.npy")


def read_conditions(storage: Storage, output_root: str, result_id: str) -> np.ndarray | None:
    """The video's window conditions in window order, from its parts (one per segment); None if none were kept."""
    parts = sorted(
        (int(match.group(1)), uri)
        for uri in storage.list_prefix(join(output_root, f"{CONDITIONS_DIR}/{result_id}") + "/")
        if (match := _PART.search(uri))
    )
    if not parts:
        return None
    return np.concatenate([np.load(io.BytesIO(storage.read_bytes(uri))) for _, uri in parts])


def cosines(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays."""
    first = first / np.maximum(np.linalg.norm(first, axis=1, keepdims=True), 1e-12)
    second = second / np.maximum(np.linalg.norm(second, axis=1, keepdims=True), 1e-12)
    return np.einsum("nd,nd->n", first, second)


def mean_or_nan(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan
