"""Score a finished dub job: CLAP scores per window, FD_CLAP against reference audio, and how visible the seams are.

    python -m jobs.evaluate --output DIR|s3://B/P/ [--reference DIR|s3://B/P/|inputs] \
        [--config configs/foley.yaml] [key.path=value ...]

Reads the job's manifest and scores every ok video (foley.pipeline.evaluation). `--reference` gives the audio to
compare with: a folder or prefix holding a file at each input's relative path, with any audio or video extension
(evaluation.reference_extensions: `street.flac` for `street.mp4`), or `inputs` for the audio track of the input
videos themselves (dataset augmentation often has the originals). What can be checked is checked before Ray starts
(the CLAP, the reference folder). A number that cannot be computed is `null` in summary.json, with its reason
under `reasons`. The windows of the generated and the
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
import posixpath
import sys
from pathlib import Path

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
from foley.pipeline.job import clap_identity, connect_ray, fail_setup, location, quiet_progress_when_logged
from foley.pipeline.kinds import DUB, EMBED
from foley.pipeline.layout import EVALUATION_DIR
from foley.pipeline.manifest import Manifest
from foley.pipeline.outputs import SIDECAR_SUFFIX
from foley.pipeline.rows import FAILED, OK, new_row
from foley.pipeline.stage import remove_input_copies, stage_options
from foley.storage.inputs import InputItem
from foley.storage.store import Storage
from foley.storage.uris import StorageError, is_s3, join

GENERATED, REFERENCE = "generated", "reference"
SCORES = ("clap_score", "clap_score_reference", "fd_clap", "seam_score")


def why_unscored(score: str, reference: str | None) -> str:
    """Why a number of the summary could not be computed, said where it is null."""
    if score == "clap_score":
        return "no window has the condition AudioLDM read kept under _foley/conditions/"
    if score == "seam_score":
        return "no video has two windows in one shot, so there is no seam between windows to score"
    if not reference:
        return "no reference audio: run with --reference FOLDER, s3://BUCKET/PREFIX/ or inputs"
    return "fewer than 2 windows have both generated and reference audio (see problems)"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, type=location, help="the dub job's output folder or s3:// prefix")
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


def reference_audio(config: FoleyConfig, storage: Storage, reference: str, records: list[dict]) -> tuple[dict, list]:
    """Each video's reference sound (relative path -> URI), and why the others have none. A still has no original."""
    videos = [r for r in records if not r["relative_path"].lower().endswith(config.input.image_extensions)]
    if reference == "inputs":
        silent = [r for r in videos if r["has_audio"] is False]  # None: a row from before the column, try it
        return {r["relative_path"]: r["input_uri"] for r in videos if r not in silent}, [
            f"{r['relative_path']}: reference audio: the input {r['input_uri']} has no audio track, so there is "
            "nothing to compare with; give --reference a folder that holds the original sound"
            for r in silent
        ]
    root = (reference if is_s3(reference) else str(Path(reference))).rstrip("/") + "/"
    listed = [uri for uri in storage.list_prefix(root) if uri.lower().endswith(config.evaluation.reference_extensions)]
    by_name = {posixpath.splitext(uri[len(root) :])[0]: uri for uri in listed}
    by_name |= {uri[len(root) :]: uri for uri in listed}  # a file at the input's own name comes first
    if not by_name:
        raise StorageError(
            f"--reference {reference} holds no audio or video file (evaluation.reference_extensions); give the "
            "folder or prefix that holds the original sound at each input's relative path"
        )
    found = {
        path: by_name.get(path) or by_name.get(posixpath.splitext(path)[0])
        for path in (r["relative_path"] for r in videos)
    }
    return {path: uri for path, uri in found.items() if uri}, [
        f"{path}: reference audio: no file {posixpath.splitext(path)[0]}.* under {reference} (any of "
        "evaluation.reference_extensions)"
        for path, uri in found.items()
        if not uri
    ]


def evaluate(config: FoleyConfig, output: str, reference: str | None) -> dict:
    storage = Storage(config.storage)
    records = [r for r in Manifest(output, storage, DUB).current().values() if r["status"] == OK]
    if not records:
        raise StorageError(f"{output} holds no finished video to evaluate (no ok row in its manifest)")
    clap_identity(storage, config, "jobs.evaluate")  # before Ray starts: a missing CLAP would fail every window
    references, problems = reference_audio(config, storage, reference, records) if reference else ({}, [])
    rows = [window_row(config, storage, audio_of(record), record, GENERATED) for record in records]
    by_path = {record["relative_path"]: record for record in records}
    rows += [window_row(config, storage, uri, by_path[path], REFERENCE) for path, uri in references.items()]
    embedded = embed_windows(config, rows, storage)

    window_table, video_table = [], []
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
    scores = {
        "clap_score": mean_or_nan(w["clap_score"] for w in window_table),
        "clap_score_reference": mean_or_nan(w["clap_score_reference"] for w in window_table),
        "fd_clap": fd,
        "seam_score": mean_or_nan(v["seam_score"] for v in video_table),
    }
    summary = {
        "videos": len(video_table),
        "windows": len(window_table),
        **{name: None if math.isnan(value) else value for name, value in scores.items()},
        "reasons": {name: why_unscored(name, reference) for name, value in scores.items() if math.isnan(value)},
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
    text = json.dumps(summary, indent=2, allow_nan=False)
    storage.write_bytes(join(output, f"{EVALUATION_DIR}/summary.json"), text.encode())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        config = load_config(args.config, args.overrides)
        summary = evaluate(config, args.output, args.reference)
    except (ConfigError, StorageError) as exc:
        return fail_setup(exc)
    shown = {name: "n/a" if summary[name] is None else f"{summary[name]:.4g}" for name in SCORES}
    print(
        f"{summary['videos']} videos, {summary['windows']} windows: CLAP score {shown['clap_score']}, "
        f"with the reference {shown['clap_score_reference']}, FD_CLAP {shown['fd_clap']}, "
        f"seam score {shown['seam_score']}; {join(args.output, EVALUATION_DIR)}/summary.json",
        flush=True,
    )
    for name, reason in summary["reasons"].items():
        print(f"{name} n/a: {reason}", flush=True)
    for problem in summary["problems"]:
        print(f"not scored: {problem}", file=sys.stderr)
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
