"""Training checkpoints that a rerun resumes from, on a local disk or S3, with no pickle anywhere.

<output>/checkpoint/epoch-NNNN/ holds the mapper (mapper.safetensors + mapper.json), the optimizer state
(optimizer.safetensors + optimizer.json) and progress.json (epoch, step, metrics so far). latest.json, written
last, names the newest complete folder, so a run killed while saving resumes from the previous epoch.
"""

from __future__ import annotations

import json

import torch
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

from foley.models.mapper import CONFIG_NAME, WEIGHTS_NAME, MapperSpec, V2AMapper, mapper_from_bytes, mapper_to_bytes
from foley.storage.store import Storage
from foley.storage.uris import join

CHECKPOINT_DIR = "checkpoint"


def optimizer_to_bytes(optimizer: torch.optim.Optimizer) -> tuple[bytes, bytes]:
    """Tensors (moments, step counts) as safetensors; hyperparameters and the layout as JSON."""
    state = optimizer.state_dict()
    tensors = {
        f"{index}.{name}": value.detach().contiguous().cpu()
        for index, values in state["state"].items()
        for name, value in values.items()
        if isinstance(value, torch.Tensor)
    }
    layout = {
        "param_groups": state["param_groups"],
        "scalars": {
            f"{index}.{name}": value
            for index, values in state["state"].items()
            for name, value in values.items()
            if not isinstance(value, torch.Tensor)
        },
    }
    return safetensors_save(tensors), json.dumps(layout).encode()


def optimizer_from_bytes(optimizer: torch.optim.Optimizer, tensors: bytes, layout: bytes) -> None:
    saved = json.loads(layout)
    state: dict[int, dict] = {}
    for key, value in [*safetensors_load(tensors).items(), *saved["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    for group in saved["param_groups"]:
        if "betas" in group:
            group["betas"] = tuple(group["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})


class CheckpointStore:
    def __init__(self, output_root: str, storage: Storage):
        self.storage = storage
        self.root = join(output_root, CHECKPOINT_DIR)
        self.latest_uri = join(self.root, "latest.json")

    def latest(self) -> dict | None:
        """{"epoch", "step", "folder"} of the newest complete checkpoint, or None."""
        if not self.storage.exists(self.latest_uri):
            return None
        return json.loads(self.storage.read_bytes(self.latest_uri))

    def save(
        self, mapper: V2AMapper, optimizer: torch.optim.Optimizer, epoch: int, step: int, history: list[dict]
    ) -> None:
        folder = join(self.root, f"epoch-{epoch:04d}")
        weights, config = mapper_to_bytes(mapper)
        moments, layout = optimizer_to_bytes(optimizer)
        for name, data in (
            (WEIGHTS_NAME, weights),
            (CONFIG_NAME, config),
            ("optimizer.safetensors", moments),
            ("optimizer.json", layout),
            ("progress.json", json.dumps({"epoch": epoch, "step": step, "history": history}).encode()),
        ):
            self.storage.write_bytes(join(folder, name), data)
        previous = self.latest()
        self.storage.write_bytes(
            self.latest_uri, json.dumps({"epoch": epoch, "step": step, "folder": f"epoch-{epoch:04d}"}).encode()
        )
        if previous and previous["folder"] != f"epoch-{epoch:04d}":
            for uri in self.storage.list_prefix(join(self.root, previous["folder"]) + "/"):
                self.storage.delete(uri)

    def spec(self, latest: dict) -> MapperSpec:
        return MapperSpec(**json.loads(self.storage.read_bytes(join(self.root, f"{latest['folder']}/{CONFIG_NAME}"))))

    def mapper_at(self, latest: dict) -> V2AMapper:
        folder = join(self.root, latest["folder"])
        return mapper_from_bytes(
            self.storage.read_bytes(join(folder, WEIGHTS_NAME)), self.storage.read_bytes(join(folder, CONFIG_NAME))
        )

    def restore(self, latest: dict, mapper: V2AMapper, optimizer: torch.optim.Optimizer) -> tuple[int, int, list]:
        """Load weights and optimizer state in place; returns (epoch, step, history) to continue from."""
        folder = join(self.root, latest["folder"])
        mapper.load_state_dict(self.mapper_at(latest).state_dict(), strict=True)
        optimizer_from_bytes(
            optimizer,
            self.storage.read_bytes(join(folder, "optimizer.safetensors")),
            self.storage.read_bytes(join(folder, "optimizer.json")),
        )
        progress = json.loads(self.storage.read_bytes(join(folder, "progress.json")))
        return progress["epoch"], progress["step"], progress["history"]
