"""Train the V2A-Mapper on paired (CLIP, CLAP) window embeddings from jobs.embed, with Ray Train.

    python -m jobs.train_mapper --data DIR|s3://B/P/ --output DIR|s3://B/P/ [--config configs/foley.yaml] \
        [--fresh] [key.path=value ...]

The variant and its size come from `train.*`, the embedding sizes from the data. train.variant=source-remixer
trains SSV2A's Sound Source Remixer on pairs with sound sources (jobs.embed with sources.mode on), for
sources.mode=remixer. Workers train data-parallel
(TorchTrainer: CPUs here, GPUs on a cluster) on pair files read through Ray Data; a held-out share of the files
is validated every epoch (mean cosine between mapped and true CLAP embeddings, beside the no-mapper baseline).
Every epoch is checkpointed to <output>/checkpoint/, and a rerun of the same command resumes from the last one.
The output gets mapper.safetensors + mapper.json (what jobs.dub loads), metrics.json, training_curves.png and
cosine_histogram.png.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ray.data
import ray.train
import ray.train.torch
import torch
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from foley.config import ConfigError, FoleyConfig, MapperConfig, load_config
from foley.models.mapper import CONFIG_NAME, WEIGHTS_NAME, MapperSpec, V2AMapper, mapper_to_bytes
from foley.pipeline.ray_session import connect_ray, quiet_progress_when_logged
from foley.storage.store import Storage
from foley.storage.uris import StorageError, join
from foley.training.checkpoints import CheckpointStore
from foley.training.pairs import condition_columns, embedding_dims, list_pair_files, read_pairs, split_by_file
from foley.training.plots import cosine_histogram, training_curves

log = logging.getLogger("foley.train")

# Ray Data runs inside Ray Train's actors here, whose console the driver's own quieting cannot reach.
RAY_DATA_LOGGING = Path(__file__).resolve().parent.parent / "configs" / "ray" / "data-logging.yaml"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.train_mapper", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the --output of jobs.embed (holds pairs/)")
    parser.add_argument("--output", required=True, help="folder or s3:// prefix for checkpoints and results")
    parser.add_argument("--config", default="configs/foley.yaml", help="preset YAML (default: configs/foley.yaml)")
    parser.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")
    return parser.parse_args(argv)


def mapper_spec(config: FoleyConfig, clip_dim: int, clap_dim: int, sources: int, frames: int) -> MapperSpec:
    """The architecture train.* asks for, sized by the data (`sources`: its source slots per window; `frames`: its
    frames kept per window)."""
    train = config.train
    remixer, temporal = train.variant == "source-remixer", train.variant == "temporal-aggregator"
    if remixer and not sources:
        raise ConfigError(
            "train.variant=source-remixer learns from each window's sound sources, but these pairs have none; "
            "make them with `python -m jobs.embed ... sources.mode=zero_shot`"
        )
    if temporal and not frames:
        raise ConfigError(
            "train.variant=temporal-aggregator learns from each frame of a window, but these pairs keep only their "
            "mean; make them with `python -m jobs.embed ... window.aggregator=learned`"
        )
    return MapperSpec(
        variant=train.variant,
        clip_dim=clip_dim,
        clap_dim=clap_dim,
        depth=train.depth,
        heads=train.heads,
        head_dim=train.head_dim,
        mlp_expansion=train.mlp_expansion,
        dropout=train.dropout,
        train_timesteps=train.train_timesteps,
        max_sources=sources if remixer else 0,
        kl_weight=train.kl_weight if remixer or temporal else 0.0,
        frames=frames if temporal else 0,
    )


def paired_cosines(
    mapper: V2AMapper, clip: torch.Tensor, clap: torch.Tensor, settings: MapperConfig, seed: int
) -> torch.Tensor:
    """Cosine between each mapped embedding and its true CLAP embedding, sampling as the dub job does."""
    generators = [torch.Generator(clip.device).manual_seed(seed + index) for index in range(len(clip))]
    mapped = mapper.map(
        clip, generators, steps=settings.steps, guidance_scale=settings.guidance_scale, sampler=settings.scheduler
    )
    return (mapped * torch.nn.functional.normalize(clap.float(), dim=-1)).sum(dim=-1)


def no_mapper_cosines(clip: torch.Tensor, clap: torch.Tensor) -> torch.Tensor | None:
    """The paper's 'no mapper' ablation: CLIP straight into CLAP's place (defined when the sizes match)."""
    if clip.shape[1] != clap.shape[1]:
        return None
    return (torch.nn.functional.normalize(clip, dim=-1) * torch.nn.functional.normalize(clap, dim=-1)).sum(-1)


def train_loop(loop: dict) -> None:
    """One Ray Train worker: its shard of every epoch, validation, and (rank 0) the checkpoint."""
    config: FoleyConfig = loop["config"]
    train = config.train
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(train.torch_threads or max(1, int(train.cpus_per_worker)))
    torch.manual_seed(config.seed)  # every worker starts from the same weights
    mapper = V2AMapper(MapperSpec(**loop["spec"]))
    optimizer = torch.optim.AdamW(mapper.parameters(), lr=train.learning_rate, weight_decay=train.weight_decay)
    checkpoints = CheckpointStore(loop["output"], Storage(config.storage))
    epoch, step, history = 0, 0, []
    if loop["resume"]:
        epoch, step, history = checkpoints.restore(loop["resume"], mapper, optimizer)
    model = ray.train.torch.prepare_model(mapper)
    per_worker_batch = max(1, train.batch_size // world)

    while epoch < train.epochs:
        started = time.perf_counter()
        noise = torch.Generator().manual_seed(config.seed * 100_003 + epoch * 1_009 + rank)
        losses = []
        model.train()
        for batch in ray.train.get_dataset_shard("train").iter_torch_batches(
            batch_size=per_worker_batch,
            local_shuffle_buffer_size=4 * per_worker_batch,
            local_shuffle_seed=config.seed + epoch,
            device=device,
        ):
            loss = model(batch["clip"], batch["clap"], train.condition_dropout, noise)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            step += 1
        epoch += 1
        trained = time.perf_counter()
        mapper.eval()
        totals = torch.zeros(4, dtype=torch.float64)  # loss sum, batches, cosine sum, no-mapper sum
        totals[0], totals[1] = sum(losses), len(losses)
        count = 0
        for batch in ray.train.get_dataset_shard("val").iter_torch_batches(batch_size=512, device=device):
            clip, clap = batch["clip"], batch["clap"]
            totals[2] += paired_cosines(mapper, clip, clap, config.mapper, config.seed + count).sum().item()
            baseline = no_mapper_cosines(clip, clap)
            totals[3] += baseline.sum().item() if baseline is not None else float("nan")
            count += len(clip)
        counts = torch.tensor([count], dtype=torch.float64)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(totals)
            torch.distributed.all_reduce(counts)
        no_mapper = totals[3].item() / counts.item()
        metrics = {
            "epoch": epoch,
            "step": step,
            "train_loss": totals[0].item() / max(totals[1].item(), 1),
            "val_cosine": totals[2].item() / counts.item(),
            "no_mapper_cosine": None if np.isnan(no_mapper) else no_mapper,
            "seconds_train": trained - started,
            "seconds_validate": time.perf_counter() - trained,
        }
        history.append(metrics)
        if rank == 0:
            checkpoints.save(mapper, optimizer, epoch, step, history)
        ray.train.report(metrics)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    started = time.perf_counter()
    try:
        config = load_config(args.config, args.overrides)
        storage = Storage(config.storage)
        # 1. The data: pair files split by file (so by video) into training and held-out validation.
        files = list_pair_files(args.data, storage)
        train_files, val_files = split_by_file(files, config.train.val_fraction, config.seed)
        spec = mapper_spec(config, *embedding_dims(files[0], storage))
        # 2. Resume from the last checkpoint of this output, if it is of the same architecture.
        checkpoints = CheckpointStore(args.output, storage)
        resume = None if args.fresh else checkpoints.latest()
        if resume is not None and checkpoints.spec(resume) != spec:
            raise ConfigError(
                f"{checkpoints.root} holds a checkpoint of another architecture "
                f"({checkpoints.spec(resume)}); use another --output, or --fresh to start over"
            )
        if resume is None or resume["epoch"] < config.train.epochs:
            if not config.progress.non_tty_ray_data_lines:  # read by the Train actors that a local Ray starts
                os.environ.setdefault("RAY_DATA_LOGGING_CONFIG", str(RAY_DATA_LOGGING))
            connect_ray()  # here, so that a Ray that cannot start is an error line, not a traceback
    except (ConfigError, StorageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{len(files)} pair files ({len(train_files)} train, {len(val_files)} held out); {spec.variant} mapper "
        f"{spec.clip_dim} -> {spec.clap_dim}; "
        + (f"resuming after epoch {resume['epoch']} (step {resume['step']})" if resume else "starting fresh"),
        flush=True,
    )

    # 3. Data-parallel training with Ray Train, reading the pair files through Ray Data.
    if resume is None or resume["epoch"] < config.train.epochs:
        train(config, spec, storage, train_files, val_files, args.output, resume)

    # 4. The trained mapper and its report.
    history = write_results(config, storage, checkpoints, val_files, args.output)
    final = history[-1]
    no_mapper = "n/a" if final["no_mapper_cosine"] is None else f"{final['no_mapper_cosine']:.3f}"  # sizes differ
    print(
        f"done in {time.perf_counter() - started:.1f} s: {final['epoch']} epochs, held-out cosine "
        f"{final['val_cosine']:.3f} (no mapper: {no_mapper}); mapper: "
        f"{join(args.output, WEIGHTS_NAME)}",
        flush=True,
    )
    return 0


def train(
    config: FoleyConfig,
    spec: MapperSpec,
    storage: Storage,
    train_files: list[str],
    val_files: list[str],
    output: str,
    resume: dict | None,
) -> None:
    connect_ray()
    quiet_progress_when_logged(config.progress)  # in a log: Ray Data's lines per epoch go to its own log file
    ray.data.DataContext.get_current().enable_progress_bars = False  # per-epoch metrics are the progress here
    datasets = {}
    for name, files in (("train", train_files), ("val", val_files)):
        filesystem, paths = storage.arrow_files(files)
        # Read once and keep in the object store: every epoch then iterates memory, not files. Validation samples the
        # prior for each pair, so it takes at most train.val_max_pairs of them, as write_results does.
        pairs = ray.data.read_parquet(paths, filesystem=filesystem)
        # A mapper's condition, as one column: a window's picture, with its source slots for the remixer, or its
        # frames for the temporal aggregator.
        pairs = pairs.map_batches(as_condition, fn_kwargs={"columns": condition_columns(spec)}, batch_format="numpy")
        datasets[name] = (pairs if name == "train" else pairs.limit(config.train.val_max_pairs)).materialize()
    with tempfile.TemporaryDirectory(prefix="foley-train-") as ray_train_dir:
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"config": config, "spec": spec.__dict__, "output": output, "resume": resume},
            scaling_config=ScalingConfig(
                num_workers=config.train.num_workers,
                use_gpu=config.train.use_gpu,
                resources_per_worker={"CPU": config.train.cpus_per_worker},
            ),
            datasets=datasets,
            run_config=RunConfig(storage_path=ray_train_dir, name="v2a-mapper"),
        )
        trainer.fit()


def as_condition(batch: dict[str, np.ndarray], columns: tuple[str, ...]) -> dict[str, np.ndarray]:
    """A window's condition `columns` side by side as one `clip` column, and its target. (Ray Data hands a
    fixed-size list column over as an array of rows, so each column is stacked first.)"""
    parts = [np.stack(list(batch[name])).astype(np.float32) for name in columns]
    return {"clip": np.concatenate(parts, axis=1), "clap": np.stack(list(batch["clap"])).astype(np.float32)}


def write_results(
    config: FoleyConfig, storage: Storage, checkpoints: CheckpointStore, val_files: list[str], output: str
) -> list[dict]:
    """mapper.safetensors + mapper.json from the last checkpoint, metrics.json, and the two figures."""
    latest = checkpoints.latest()
    mapper = checkpoints.mapper_at(latest)
    weights, spec_json = mapper_to_bytes(mapper)
    storage.write_bytes(join(output, WEIGHTS_NAME), weights)
    storage.write_bytes(join(output, CONFIG_NAME), spec_json)
    history = json.loads(storage.read_bytes(join(checkpoints.root, f"{latest['folder']}/progress.json")))["history"]

    clip, clap = (
        torch.from_numpy(m)
        for m in read_pairs(val_files, storage, config.train.val_max_pairs, condition_columns(mapper.spec))
    )
    torch.manual_seed(config.seed)  # the same initial weights the training started from
    untrained = V2AMapper(mapper.spec).eval()
    series = {
        "before training": paired_cosines(untrained, clip, clap, config.mapper, config.seed).numpy(),
        "after training": paired_cosines(mapper, clip, clap, config.mapper, config.seed).numpy(),
    }
    if (baseline := no_mapper_cosines(clip, clap)) is not None:
        series = {"no mapper (CLIP vs CLAP)": baseline.numpy(), **series}
    storage.write_bytes(join(output, "cosine_histogram.png"), cosine_histogram(series))
    storage.write_bytes(join(output, "training_curves.png"), training_curves(history))
    metrics = {
        "variant": mapper.spec.variant,
        "epochs": [
            {key: entry[key] for key in ("epoch", "step", "train_loss", "val_cosine", "no_mapper_cosine")}
            for entry in history
        ],
        "final_val_cosine": history[-1]["val_cosine"],
        "before_training_val_cosine": float(series["before training"].mean()),
    }
    storage.write_bytes(join(output, "metrics.json"), json.dumps(metrics, indent=2).encode())
    return history


if __name__ == "__main__":
    sys.exit(main())
