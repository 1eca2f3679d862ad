"""PANNs CNN14 (Kong et al. 2020), the AudioSet tagger that av-benchmark and audioldm_eval score FD_PANNs, KL_PANNs
and IS_PANNs with, loaded from its released checkpoint (`Cnn14_16k_mAP=0.438.pth`: `{"model": state_dict}`).

The module keeps the checkpoint's names (torchlibrosa's STFT and mel front end, `conv_block1..6`, `fc1`,
`fc_audioset`), so the released file loads as it is. Its sizes are read from the file: the STFT window, the mel bins,
each block's width and the number of classes. So a tiny random CNN14 saved in the same format loads through the same
code; the sample rate and the hop, which the file does not hold, come from `evaluation.classifier`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchlibrosa.stft import LogmelFilterBank, Spectrogram

from foley.config import ClassifierConfig
from foley.models.clap import load_weights_only
from foley.models.weights import local_weights
from foley.storage.store import Storage

BLOCKS = 6


class ConvBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and ReLU, then average pooling (CNN14's block)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn1, self.bn2 = nn.BatchNorm2d(out_channels), nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor, pool: tuple[int, int]) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))))
        return F.avg_pool2d(x, pool)


class Cnn14(nn.Module):
    def __init__(self, widths: list[int], mel_bins: int, classes: int, window_size: int, config: ClassifierConfig):
        super().__init__()
        self.spectrogram_extractor = Spectrogram(
            n_fft=window_size, hop_length=config.hop_size, win_length=window_size, freeze_parameters=True
        )
        self.logmel_extractor = LogmelFilterBank(
            sr=config.sample_rate, n_fft=window_size, n_mels=mel_bins, fmin=config.fmin, fmax=config.fmax,
            ref=1.0, amin=1e-10, top_db=None, freeze_parameters=True,
        )  # fmt: skip
        self.bn0 = nn.BatchNorm2d(mel_bins)
        for index, (before, width) in enumerate(zip([1, *widths], widths, strict=False), start=1):
            self.add_module(f"conv_block{index}", ConvBlock(before, width))
        self.fc1 = nn.Linear(widths[-1], widths[-1])
        self.fc_audioset = nn.Linear(widths[-1], classes)

    def forward(self, waveforms: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, samples) -> (logits (batch, classes), embedding (batch, width)): the pre-sigmoid class scores
        that KL and IS read, and the fc1 activations that FD reads."""
        x = self.logmel_extractor(self.spectrogram_extractor(waveforms))  # (batch, 1, frames, mels)
        x = self.bn0(x.transpose(1, 3)).transpose(1, 3)
        for index in range(1, BLOCKS + 1):
            x = getattr(self, f"conv_block{index}")(x, (2, 2) if index < BLOCKS else (1, 1))
        x = x.mean(dim=3)
        x = x.max(dim=2).values + x.mean(dim=2)
        embedding = F.relu(self.fc1(x))
        return self.fc_audioset(embedding), embedding


def read_cnn14(path: Path, config: ClassifierConfig) -> Cnn14:
    """A CNN14 built to the sizes its checkpoint holds, with those weights (weights-only load, never unpickled)."""
    checkpoint = load_weights_only(path)
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict) or "fc_audioset.weight" not in state:
        raise ValueError(
            f"{path} is not a PANNs CNN14 checkpoint (no model.fc_audioset.weight); give evaluation.classifier."
            "checkpoint the released Cnn14_16k_mAP=0.438.pth"
        )
    widths = [int(state[f"conv_block{index}.conv1.weight"].shape[0]) for index in range(1, BLOCKS + 1)]
    window_size = int(state["spectrogram_extractor.stft.conv_real.weight"].shape[-1])
    model = Cnn14(widths, int(state["bn0.weight"].shape[0]), int(state["fc_audioset.weight"].shape[0]), window_size,
                  config)  # fmt: skip
    model.load_state_dict(state)
    return model.eval()


def audioset_labels(labels_file: str | None) -> list[str]:
    """The class names in index order: a text file of one per line, or the 527 AudioSet names that the installed
    laion_clap ships (training/audioset_textmap.npy), found without importing laion_clap (its import reaches for
    the hub)."""
    if labels_file:
        return [line.strip() for line in Path(labels_file).read_text().splitlines() if line.strip()]
    package = importlib.util.find_spec("laion_clap")
    if package is None or not package.submodule_search_locations:
        raise ValueError("laion_clap is not installed; set evaluation.classifier.labels to a file of class names")
    names = np.load(Path(package.submodule_search_locations[0]) / "training" / "audioset_textmap.npy")
    return [str(name) for name in names]


class AudioClassifier:
    """CNN14 on a device, with its class names: waveforms at `config.sample_rate` -> logits and embeddings."""

    def __init__(self, config: ClassifierConfig, storage: Storage, device: torch.device):
        self.config = config
        self.device = device
        self.model = read_cnn14(Path(local_weights(config.checkpoint, storage)), config).to(device)
        self.labels = audioset_labels(config.labels)
        classes = self.model.fc_audioset.out_features
        if len(self.labels) != classes:
            raise ValueError(
                f"evaluation.classifier.checkpoint has {classes} classes but its labels name {len(self.labels)}; set "
                "evaluation.classifier.labels to the checkpoint's class names, in index order"
            )

    @torch.inference_mode()
    def classify(self, waveforms: list[np.ndarray]) -> np.ndarray:
        """(n, classes + width): each waveform's logits, then its embedding (one array, as a stage column). Waveforms
        of one length go through together; none is padded, since padding would change a shorter one's scores with
        the batch it happens to share."""
        by_length: dict[int, list[int]] = {}
        for index, wave in enumerate(waveforms):
            by_length.setdefault(len(wave), []).append(index)
        outputs = np.empty((len(waveforms), self.model.fc_audioset.out_features + self.model.fc1.out_features))
        for indices in by_length.values():
            batch = torch.from_numpy(np.stack([waveforms[i] for i in indices]).astype(np.float32)).to(self.device)
            logits, embedding = self.model(batch)
            outputs[indices] = torch.cat([logits, embedding], dim=1).float().cpu().numpy()
        return outputs.astype(np.float32)
