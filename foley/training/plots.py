"""The training report's two figures: learning curves, and paired cosine similarity before and after training
(the idea of the V2A-Mapper paper's Figure 3)."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _png(figure) -> bytes:
    sink = io.BytesIO()
    figure.savefig(sink, format="png", dpi=120, bbox_inches="tight")
    plt.close(figure)
    return sink.getvalue()


def training_curves(history: list[dict]) -> bytes:
    epochs = [entry["epoch"] for entry in history]
    figure, (loss_axis, cosine_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(epochs, [entry["train_loss"] for entry in history], marker="o")
    loss_axis.set(title="training loss", xlabel="epoch", ylabel="MSE")
    cosine_axis.plot(epochs, [entry["val_cosine"] for entry in history], marker="o", label="mapper (held out)")
    no_mapper = [entry["no_mapper_cosine"] for entry in history]
    if all(value is not None for value in no_mapper):
        cosine_axis.plot(epochs, no_mapper, linestyle="--", label="no mapper (CLIP vs CLAP)")
    cosine_axis.set(
        title="held-out cosine to the true CLAP embedding", xlabel="epoch", ylabel="cosine", ylim=(-0.1, 1.0)
    )
    cosine_axis.legend()
    return _png(figure)


def cosine_histogram(series: dict[str, np.ndarray]) -> bytes:
    figure, axis = plt.subplots(figsize=(7, 4))
    bins = np.linspace(-1, 1, 81)
    for label, values in series.items():
        axis.hist(values, bins=bins, alpha=0.6, label=f"{label} (mean {np.mean(values):.3f})")
    axis.set(title="paired cosine similarity on held-out pairs", xlabel="cosine", ylabel="pairs")
    axis.legend()
    return _png(figure)
