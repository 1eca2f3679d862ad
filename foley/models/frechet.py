"""The Fréchet distance between two sets of embeddings (FD_CLAP with CLAP audio embeddings, as audioldm_eval and
av-benchmark compute FD with PANNs, PaSST or VGGish ones): the distance between Gaussians fitted to each set."""

from __future__ import annotations

import numpy as np
from scipy import linalg


def frechet_distance(first: np.ndarray, second: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) of (n, d) embeddings; 0 for a set compared with itself."""
    first, second = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    if len(first) < 2 or len(second) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 embeddings per set, got {len(first)} and {len(second)}")
    mean_gap = first.mean(axis=0) - second.mean(axis=0)
    cov_first, cov_second = np.cov(first, rowvar=False), np.cov(second, rowvar=False)
    root = linalg.sqrtm(cov_first @ cov_second)
    root = root.real if np.iscomplexobj(root) else root  # imaginary parts are rounding noise of a PSD product
    return float(max(mean_gap @ mean_gap + np.trace(cov_first + cov_second - 2 * root), 0.0))
