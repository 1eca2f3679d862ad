"""Score a finished dub job: CLAP scores per window, FD_CLAP against reference audio, and how visible the seams are.

    python -m jobs.evaluate --output DIR|s3://B/P/ [--reference DIR|s3://B/P/|inputs] \
        [--config configs/foley.yaml] [key.path=value ...]

Reads the job's manifest and scores every ok video (foley.pipeline.evaluation). `--reference` gives the audio to
compare with: a folder or prefix holding a file at each input's relative path, or `inputs` for the audio track of
the input videos themselves (dataset augmentation often has the originals). The windows of the generated and the
reference audio are embedded by AudioLDM's own CLAP (clap.checkpoint) in a Ray Data stage (workers/clap_embed.py,
the embed job's); scores only compare between runs that use the same CLAP. Results go to
`<output>/_foley/evaluation/`: windows.parquet (one row per window), videos.parquet (one per video) and summary.json.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from foley.config import ConfigError, FoleyConfig, load_config
from foley.media.probe import decode_audio
from foley.media.seams import seam_score
from foley.media.stitch import TrackLayout
from foley.media.windows import Window
from foley.models.frechet import frechet_distance
from foley.pipeline.evaluation import cosines, mean_or_nan, read_conditions
from foley.pipeline.job import connect_ray, fail_setup, quiet_progress_when_logged
from foley.pipeline.kinds import DUB, EMBED
from foley.pipeline.layout import EVALUATION_DIR
from foley.pipeline.manifest import Manifest
from foley.pipeline.outputs import SIDECAR_SUFFIX
from foley.pipeline.rows import FAILED, OK, new_row
from foley.pipeline.stage import remove_input_copies, stage_options
from foley.storage.inputs import InputItem
from foley.storage.store import Storage
from foley.storage.uris import StorageError, join

GENERATED, REFERENCE = "generated", "reference"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="the dub job's output folder or s3:// prefix")
    parser.add_argument("--reference", default=None, help="folder or s3:// prefix of reference audio, or 'inputs'")
    parser.add_argument("--config", default="configs/foley.yaml", help="preset YAML (its clap and evaluation keys)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="override any config key")
    return parser.parse_args(argv)


def audio_of(record: dict) -> str:
    """The generated sound of a video: its sidecar sound file when it has one, else its output (first track)."""
    outputs = record["outputs"] or [record["output_uri"]]
    return next((uri for uri in outputs if uri.endswith(SIDECAR_SUFFIX)), outputs[0])


def window_row(config: FoleyConfig, storage: Storage, uri: str, record: dict, role: str) -> dict:
    """A row for the CLAP stage: the windows of `record` in the audio at `uri`."""
    row = new_row(InputItem(uri, record["relative_path"], storage.identity(uri)), "", config, EMBED)
    row.update(
        windows=json.dumps(record["windows"]),
        n_windows=len(record["windows"]),
        notes=role,
        seed=0,
        result_id=record["result_id"],
    )
    return row


def embed_windows(config: FoleyConfig, rows: list[dict], storage: Storage) -> dict[tuple[str, str], np.ndarray | str]:
    """(role, relative path) -> the windows' CLAP audio embeddings, or the error that stopped them."""
    from workers.clap_embed import ClapEmbed  # noqa: PLC0415 - loads torch and laion_clap only when there is work

    ray = connect_ray()
    quiet_progress_when_logged(config.progress)
    embedded = ray.data.from_items(rows).map_batches(
        ClapEmbed, fn_constructor_kwargs={"config": config}, **stage_options(config.stages.clap_embed)
    )
    results = {}
    for result in embedded.iter_rows():
        key = (str(result["notes"]), str(result["relative_path"]))
        results[key] = result["error"] if result["status"] == FAILED else np.asarray(result["clap_embeddings"])
        remove_input_copies(result, storage)
    return results


def video_seam_score(config: FoleyConfig, storage: Storage, record: dict) -> float:
    rate = config.evaluation.seam_sample_rate
    uri = audio_of(record)
    identity = storage.identity(uri)
    try:
        track = decode_audio(storage.fetch(uri, identity), 0.0, float(record["duration_s"]), rate)
    finally:
        storage.remove_copy(uri, identity)
    windows = [Window(**window) for window in record["windows"]]
    window = config.window
    layout = TrackLayout.of(windows, float(record["duration_s"]), window.seconds, window.cut_crossfade_seconds, rate)
    return seam_score(track, layout, config.evaluation.seam_frame, config.evaluation.seam_hop)


def evaluate(config: FoleyConfig, output: str, reference: str | None) -> dict:
    storage = Storage(config.storage)
    records = [r for r in Manifest(output, storage, DUB).current().values() if r["status"] == OK]
    if not records:
        raise StorageError(f"{output} holds no finished video to evaluate (no ok row in its manifest)")
    rows = [window_row(config, storage, audio_of(record), record, GENERATED) for record in records]
    if reference:
        rows += [
            window_row(
                config,
                storage,
                record["input_uri"] if reference == "inputs" else join(reference, record["relative_path"]),
                record,
                REFERENCE,
            )
            for record in records
            if not record["relative_path"].lower().endswith(config.input.image_extensions)  # a still has no original
        ]
    embedded = embed_windows(config, rows, storage)

    window_table, video_table, problems = [], [], []
    generated_all, reference_all = [], []
    for record in records:
        path = record["relative_path"]
        generated = embedded.get((GENERATED, path))
        if not isinstance(generated, np.ndarray):
            problems.append(f"{path}: generated audio: {generated}")
            continue
        conditions = read_conditions(storage, output, record["result_id"])
        by_condition = cosines(generated, conditions) if conditions is not None else np.full(len(generated), math.nan)
        ref = embedded.get((REFERENCE, path))
        if reference and isinstance(ref, np.ndarray):
            by_reference = cosines(generated, ref)
            generated_all.append(generated)
            reference_all.append(ref)
        else:
            by_reference = np.full(len(generated), math.nan)
            if reference and ref is not None:
                problems.append(f"{path}: reference audio: {ref}")
        for index, window in enumerate(record["windows"]):
            window_table.append(
                {
                    "relative_path": path,
                    "window": index,
                    **window,
                    "clap_score": float(by_condition[index]),
                    "clap_score_reference": float(by_reference[index]),
                }
            )
        video_table.append(
            {
                "relative_path": path,
                "windows": len(generated),
                "seam_score": video_seam_score(config, storage, record),
                "clap_score": mean_or_nan(by_condition),
                "clap_score_reference": mean_or_nan(by_reference),
            }
        )
    fd = math.nan
    if sum(len(embeddings) for embeddings in generated_all) >= 2:  # a Gaussian needs two points at least
        fd = frechet_distance(np.concatenate(generated_all), np.concatenate(reference_all))
    elif reference:
        problems.append("FD_CLAP: fewer than 2 windows have both generated and reference audio")
    summary = {
        "videos": len(video_table),
        "windows": len(window_table),
        "clap_score": mean_or_nan(w["clap_score"] for w in window_table),
        "clap_score_reference": mean_or_nan(w["clap_score_reference"] for w in window_table),
        "fd_clap": fd,
        "seam_score": mean_or_nan(v["seam_score"] for v in video_table),
        "reference": reference,
        "clap_model": f"{config.clap.audio_model}:{config.clap.checkpoint}",
        "problems": problems,
    }
    write_results(storage, output, window_table, video_table, summary)
    return summary


def write_results(storage: Storage, output: str, windows: list[dict], videos: list[dict], summary: dict) -> None:
    for name, table in (("windows.parquet", windows), ("videos.parquet", videos)):
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(table), sink)
        storage.write_bytes(join(output, f"{EVALUATION_DIR}/{name}"), sink.getvalue())
    text = json.dumps(summary, indent=2, default=lambda value: None)
    storage.write_bytes(join(output, f"{EVALUATION_DIR}/summary.json"), text.encode())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        summary = evaluate(config, args.output, args.reference)
    except (ConfigError, StorageError) as exc:
        return fail_setup(exc)
    print(
        f"{summary['videos']} videos, {summary['windows']} windows: CLAP score {summary['clap_score']:.4f}, "
        f"with the reference {summary['clap_score_reference']:.4f}, FD_CLAP {summary['fd_clap']:.4f}, "
        f"seam score {summary['seam_score']:.3f}; {join(args.output, EVALUATION_DIR)}/summary.json",
        flush=True,
    )
    for problem in summary["problems"]:
        print(f"not scored: {problem}", file=sys.stderr)
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
