"""Scoring a finished dub job (jobs.evaluate): what each window was asked for, and the numbers published systems
report, computed on AudioLDM's own CLAP audio embeddings.

- CLAP score: the cosine between a window's generated audio embedding and its condition (what AudioLDM read, kept
  by the Mux stage under `<output>/_foley/conditions/<result id>/`), and with the reference audio's window where one is
  given;
- FD_CLAP: the Fréchet distance between the generated and the reference windows' embeddings;
- seam score: spectral flux at the crossfades between windows of one shot over the flux elsewhere;

and, with an audio classifier (PANNs CNN14, foley.models.panns), the numbers av-benchmark publishes, computed as it
computes them from the classifier's logits and embeddings:
- FD_PANNs: the Fréchet distance between the generated and the reference windows' 2048-d embeddings;
- KL_PANNs: KL(reference || generated) of the class distributions per window, softmax and sigmoid variants;
- IS_PANNs: the inception score of the generated windows' softmax class distributions;
- SSMS (SSV2A's sound source matching score): precision, recall and F1 of the generated window's top labels
  against the reference window's.
"""

from __future__ import annotations

import io
import math
import re

import numpy as np
from scipy import special

from foley.pipeline.layout import CONDITIONS_DIR
from foley.storage.store import Storage
from foley.storage.uris import join

# The numbers of an evaluation's summary.json, as the console and jobs.compare head them (av-benchmark's names for
# the PANNs ones).
SCORE_NAMES = {
    "clap_score": "CLAP score",
    "clap_score_reference": "with the reference",
    "fd_clap": "FD_CLAP",
    "seam_score": "seam score",
    "fd_panns": "FD_PANNs",
    "kl_panns_softmax": "KL_PANNs",
    "kl_panns_sigmoid": "KL_PANNs (sigmoid)",
    "is_panns": "IS_PANNs",
    "ssms_f1": "SSMS F1",
}
GENERATED, REFERENCE = "generated", "reference"  # whose sound an evaluation row carries (its `role` column)
_PART = re.compile(r"from-window-(\d{5})\.npy$")


def conditions_uri(output_root: str, result_id: str, first_window: int) -> str:
    return join(output_root, f"{CONDITIONS_DIR}/{result_id}/from-window-{first_window:05d}.npy")


def condition_parts(storage: Storage, output_root: str, result_id: str) -> list[tuple[int, str]]:
    """(first window, URI) of each part of a video's kept conditions, in window order."""
    return sorted(
        (int(match.group(1)), uri)
        for uri in storage.list_prefix(join(output_root, f"{CONDITIONS_DIR}/{result_id}") + "/")
        if (match := _PART.search(uri))
    )


def drop_other_conditions(storage: Storage, output_root: str, result_id: str, first_windows: set[int]) -> None:
    """Remove the parts of a video's conditions that no segment of its publication wrote (parts an earlier,
    forced run cut into segments of another size left), so that they cannot mix with this one's."""
    for first, uri in condition_parts(storage, output_root, result_id):
        if first not in first_windows:
            storage.delete(uri)


def read_conditions(storage: Storage, output_root: str, result_id: str) -> np.ndarray | None:
    """The video's window conditions in window order, from its parts (one per segment); None if none were kept."""
    parts = condition_parts(storage, output_root, result_id)
    if not parts:
        return None
    return np.concatenate([np.load(io.BytesIO(storage.read_bytes(uri))) for _, uri in parts])


def cosines(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, d) arrays."""
    first = first / np.maximum(np.linalg.norm(first, axis=1, keepdims=True), 1e-12)
    second = second / np.maximum(np.linalg.norm(second, axis=1, keepdims=True), 1e-12)
    return np.einsum("nd,nd->n", first, second)


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def kl_divergences(generated: np.ndarray, reference: np.ndarray, epsilon: float) -> dict[str, np.ndarray]:
    """Per window, KL(reference || generated) of the (n, classes) logits' softmax and of their sigmoids, as
    av-benchmark's `F.kl_div((q + eps).log(), p)` sums it: p log p - p log(q + eps) over the classes (the sigmoid
    variant treats the class scores as one unnormalised distribution, as av-benchmark and audioldm_eval do)."""
    found = {}
    for name, squash in (("softmax", softmax), ("sigmoid", lambda x: 1 / (1 + np.exp(-x)))):
        target, predicted = squash(reference.astype(np.float64)), squash(generated.astype(np.float64))
        found[name] = (special.xlogy(target, target) - target * np.log(predicted + epsilon)).sum(axis=1)
    return found


def inception_score(logits: np.ndarray, splits: int) -> tuple[float, float]:
    """Mean and standard deviation over `splits` parts (in order; fewer when there are fewer windows) of
    exp(E_x KL(p(y|x) || p(y))): 1 when every window gets the same distribution, k for k sure, distinct classes."""
    probabilities = softmax(logits.astype(np.float64))
    scores = []
    for part in np.array_split(probabilities, min(splits, len(probabilities))):
        marginal = part.mean(axis=0, keepdims=True)
        kl = (special.xlogy(part, part) - special.xlogy(part, marginal)).sum(axis=1)
        scores.append(math.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def top_labels(logits: np.ndarray, count: int) -> np.ndarray:
    """(n, count) class indices, the highest score first."""
    return np.argsort(-logits, axis=1, kind="stable")[:, :count]


def source_matching(generated: np.ndarray, reference: np.ndarray, reference_top: int, generated_top: int) -> dict:
    """Per window, SSMS: the generated window's top `generated_top` labels G against the reference window's top
    `reference_top` labels R: precision |G & R| / |G|, recall |G & R| / |R| and their F1 (0 when nothing matches)."""
    found = {"precision": [], "recall": [], "f1": []}
    for wanted, got in zip(top_labels(reference, reference_top), top_labels(generated, generated_top), strict=True):
        matched = len(set(wanted.tolist()) & set(got.tolist()))
        precision, recall = matched / len(got), matched / len(wanted)
        found["precision"].append(precision)
        found["recall"].append(recall)
        found["f1"].append(2 * precision * recall / (precision + recall) if matched else 0.0)
    return {name: np.asarray(values) for name, values in found.items()}


def mean_or_nan(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan
