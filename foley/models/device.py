"""Which device a stage's models run on, and the dtypes the config may name."""

from __future__ import annotations

import torch

from foley.config import StageResources

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(setting: str, resources: StageResources) -> torch.device:
    """The stage's device as the config decides it (StageResources.device), checked against this worker."""
    device = resources.device(setting)
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "the config puts this stage on CUDA (device=cuda, or device=auto with stages.<name>.num_gpus > 0) but this "
            "worker has no CUDA device; use device=cpu and num_gpus=0, or run on GPU workers"
        )
    return torch.device(device)
