"""Score a finished dub job: CLAP scores per window, FD_CLAP against reference audio, how visible the seams are,
and with an audio classifier the numbers av-benchmark publishes (FD_PANNs, KL_PANNs, IS_PANNs) and SSV2A's SSMS.

    python -m jobs.evaluate --output DIR|s3://B/P/ [--reference DIR|s3://B/P/|inputs] \
        [--config configs/foley.yaml] [key.path=value ...]

Reads the job's manifest and scores every ok video (foley.pipeline.evaluation). `--reference` gives the audio to
compare with: a folder or prefix holding a file at each input's relative path, with any audio or video extension
(evaluation.reference_extensions: `street.flac` for `street.mp4`), or `inputs` for the audio track of the input
videos themselves (dataset augmentation often has the originals). What can be checked is checked before Ray starts
(the CLAP, the reference folder). A number that cannot be computed is `null` in summary.json, with its reason
under `reasons`. Everything that reads audio runs in Ray Data stages, one pass over
the generated and the reference audio: AudioLDM's own CLAP (clap.checkpoint; workers/clap_embed.py, the embed job's),
the PANNs CNN14 classifier when evaluation.classifier.checkpoint is set (workers/classify_audio.py), and the seams
(workers/seam_score.py). CLAP scores only compare between runs that use the same CLAP, PANNs numbers between runs
that use the same checkpoint. Results go to `<output>/_foley/evaluation/`: windows.parquet (one row per window),
videos.parquet (one per video) and summary.json (foley.pipeline.evaluation says how each number is computed).
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import posixpath
import sys
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from foley.config import ConfigError, FoleyConfig, load_config
from foley.models.frechet import frechet_distance
from foley.models.panns import audioset_labels
from foley.pipeline.cli import fail_setup
from foley.pipeline.columns import EVALUATION, FAILED, OK
from foley.pipeline.evaluation import (
    GENERATED,
    REFERENCE,
    SCORE_NAMES,
    cosines,
    inception_score,
    kl_divergences,
    mean_or_nan,
    read_conditions,
    source_matching,
    top_labels,
)
from foley.pipeline.guard import location
from foley.pipeline.kinds import DUB, EMBED
from foley.pipeline.layout import EVALUATION_DIR
from foley.pipeline.manifest import Manifest
from foley.pipeline.outputs import SIDECAR_SUFFIX
from foley.pipeline.planning import clap_identity
from foley.pipeline.ray_session import connect_ray, quiet_progress_when_logged
from foley.pipeline.rows import new_row
from foley.pipeline.stage import remove_input_copies, stage_options
from foley.storage.inputs import InputItem
from foley.storage.store import Storage
from foley.storage.uris import StorageError, is_s3, join

PANNS_SCORES = (
    "fd_panns",
    "kl_panns_softmax",
    "kl_panns_sigmoid",
    "is_panns",
    "is_panns_std",
    "ssms_precision",
    "ssms_recall",
    "ssms_f1",
)
WINDOW_PANNS_SCORES = ("kl_panns_softmax", "kl_panns_sigmoid", "ssms_precision", "ssms_recall", "ssms_f1")


def why_unscored(score: str, reference: str | None, classifier: bool) -> str:
    """Why a number of the summary could not be computed, said where it is null."""
    if score == "clap_score":
        return "no window has the condition AudioLDM read kept under _foley/conditions/"
    if score == "seam_score":
        return "no video has two windows in one shot, so there is no seam between windows to score"
    if score in PANNS_SCORES and not classifier:
        return (
            "evaluation.classifier.checkpoint is not set: give PANNs' CNN14 16 kHz checkpoint "
            "(Cnn14_16k_mAP=0.438.pth), a local file or s3://, to compute it"
        )
    if score.startswith("is_panns"):
        return "no generated window was classified (see problems)"
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
    """A row for the evaluation stages: the windows of `record` in the audio at `uri`."""
    row = new_row(InputItem(uri, record["relative_path"], storage.identity(uri)), "", config, EMBED)
    row.update(
        windows=json.dumps(record["windows"]),
        n_windows=len(record["windows"]),
        duration_s=float(record["duration_s"]),
        seed=0,
        result_id=record["result_id"],
    )
    return row | {column.name: column.start for column in EVALUATION} | {"role": role}


def score_windows(config: FoleyConfig, rows: list[dict], storage: Storage) -> dict[tuple[str, str], dict | str]:
    """(role, relative path) -> what the stages made of that audio (its windows' CLAP embeddings, the classifier's
    outputs, the seam score), or the error that stopped them."""
    from foley.pipeline.attempts import start_ledger  # noqa: PLC0415 - imports Ray, loaded only when there is work
    from workers.clap_embed import ClapEmbed  # noqa: PLC0415 - loads torch and laion_clap only when there is work
    from workers.classify_audio import ClassifyAudio  # noqa: PLC0415
    from workers.seam_score import SeamScore  # noqa: PLC0415

    ray = connect_ray()
    quiet_progress_when_logged(config.progress)
    run_id = uuid.uuid4().hex
    ledger = start_ledger(run_id)  # bounds how often one audio file may kill its worker (foley.pipeline.attempts)
    rows = [row | {"run_id": run_id} for row in rows]
    stages = [(ClapEmbed, config.stages.clap_embed), (SeamScore, config.stages.seam_score)]
    if config.evaluation.classifier.checkpoint:
        stages.insert(1, (ClassifyAudio, config.stages.classify_audio))
    scored = ray.data.from_items(rows)
    for stage, resources in stages:
        scored = scored.map_batches(stage, fn_constructor_kwargs={"config": config}, **stage_options(resources))
    results = {}
    for result in scored.iter_rows():
        key = (result["role"], result["relative_path"])
        results[key] = (
            result["error"]
            if result["status"] == FAILED
            else {
                "clap": np.asarray(result["clap_embeddings"]),
                "classifier": np.asarray(result["classifier_outputs"]),
                "seam_score": float(result["seam_score"]),
            }
        )
        remove_input_copies(result, storage)
    ray.kill(ledger)
    return results


def classifier_check(config: FoleyConfig, storage: Storage) -> list[str]:
    """The class names, checked before Ray starts with the checkpoint's presence; [] without a classifier."""
    settings = config.evaluation.classifier
    if not settings.checkpoint:
        return []
    local = not is_s3(settings.checkpoint) and "://" not in settings.checkpoint
    if (local and not Path(settings.checkpoint).is_file()) or (
        is_s3(settings.checkpoint) and not storage.exists(settings.checkpoint)
    ):
        raise StorageError(
            f"evaluation.classifier.checkpoint={settings.checkpoint} does not exist; give PANNs' CNN14 16 kHz "
            "checkpoint (Cnn14_16k_mAP=0.438.pth), or null to skip the PANNs numbers"
        )
    try:
        return audioset_labels(settings.labels)
    except (OSError, ValueError) as exc:
        raise StorageError(f"evaluation.classifier.labels: {exc}") from None


def classifier_windows(config: FoleyConfig, labels: list[str], generated: np.ndarray, reference) -> dict:
    """Per window of one video, the classifier's numbers: its top labels, and against the reference KL and SSMS."""
    classes, kept = len(labels), config.evaluation.labels_kept
    found = {"generated_labels": [[labels[i] for i in top] for top in top_labels(generated[:, :classes], kept)]}
    if reference is None:  # the same columns, empty, so that every window row has them
        nothing = np.full(len(generated), math.nan)
        return found | {"reference_labels": [[]] * len(generated)} | dict.fromkeys(WINDOW_PANNS_SCORES, nothing)
    settings = config.evaluation
    kl = kl_divergences(generated[:, :classes], reference[:, :classes], settings.kl_epsilon)
    matching = source_matching(
        generated[:, :classes], reference[:, :classes], settings.ssms_reference_top, settings.ssms_generated_top
    )
    return found | {
        "reference_labels": [[labels[i] for i in top] for top in top_labels(reference[:, :classes], kept)],
        "kl_panns_softmax": kl["softmax"],
        "kl_panns_sigmoid": kl["sigmoid"],
        **{f"ssms_{name}": values for name, values in matching.items()},
    }


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
    labels = classifier_check(config, storage)
    references, problems = reference_audio(config, storage, reference, records) if reference else ({}, [])
    rows = [window_row(config, storage, audio_of(record), record, GENERATED) for record in records]
    by_path = {record["relative_path"]: record for record in records}
    rows += [window_row(config, storage, uri, by_path[path], REFERENCE) for path, uri in references.items()]
    scored = score_windows(config, rows, storage)

    window_table, video_table = [], []
    pooled = {"clap": ([], []), "classifier": ([], []), "generated_classifier": []}
    for record in records:
        path = record["relative_path"]
        generated = scored.get((GENERATED, path))
        if not isinstance(generated, dict):
            problems.append(f"{path}: generated audio: {generated}")
            continue
        conditions = read_conditions(storage, output, record["result_id"])
        count = len(generated["clap"])
        if conditions is not None and len(conditions) != count:
            problems.append(
                f"{path}: its kept conditions hold {len(conditions)} windows, not its {count}; CLAP scores left out "
                "(dub it again with --force to keep them anew)"
            )
            conditions = None
        by_condition = cosines(generated["clap"], conditions) if conditions is not None else np.full(count, math.nan)
        ref = scored.get((REFERENCE, path)) if reference else None
        by_reference = np.full(count, math.nan)
        if isinstance(ref, dict):
            by_reference = cosines(generated["clap"], ref["clap"])
            for name in ("clap", "classifier"):
                pooled[name][0].append(generated[name])
                pooled[name][1].append(ref[name])
        elif ref is not None:
            problems.append(f"{path}: reference audio: {ref}")
        per_window = {"clap_score": by_condition, "clap_score_reference": by_reference}
        if labels:
            pooled["generated_classifier"].append(generated["classifier"])
            reference_outputs = ref["classifier"] if isinstance(ref, dict) else None
            per_window |= classifier_windows(config, labels, generated["classifier"], reference_outputs)
        for index, window in enumerate(record["windows"]):
            window_table.append(
                {"relative_path": path, "window": index, **window}
                | {name: values[index] for name, values in per_window.items()}
            )
        video_table.append(
            {"relative_path": path, "windows": count, "seam_score": generated["seam_score"]}
            | {name: mean_or_nan(values) for name, values in per_window.items() if not name.endswith("_labels")}
        )
    scores = {
        "clap_score": mean_or_nan(w["clap_score"] for w in window_table),
        "clap_score_reference": mean_or_nan(w["clap_score_reference"] for w in window_table),
        "fd_clap": pooled_frechet(*pooled["clap"]),
        "seam_score": mean_or_nan(v["seam_score"] for v in video_table),
        **panns_scores(config, labels, window_table, pooled),
    }
    summary = {
        "videos": len(video_table),
        "windows": len(window_table),
        **{name: None if math.isnan(value) else value for name, value in scores.items()},
        "reasons": {
            name: why_unscored(name, reference, bool(labels)) for name, value in scores.items() if math.isnan(value)
        },
        "reference": reference,
        "clap_model": f"{config.clap.audio_model}:{config.clap.checkpoint}",
        "classifier": config.evaluation.classifier.checkpoint,
        "problems": problems,
    }
    write_results(storage, output, window_table, video_table, summary)
    return summary


def pooled_frechet(generated: list[np.ndarray], reference: list[np.ndarray], width: int | None = None) -> float:
    """The Fréchet distance between all generated and all reference windows (their last `width` columns when
    given); NaN below 2 windows, since a Gaussian needs two points at least."""
    if sum(len(part) for part in generated) < 2:
        return math.nan
    first, second = np.concatenate(generated), np.concatenate(reference)
    if width is not None:
        first, second = first[:, -width:], second[:, -width:]
    return frechet_distance(first, second)


def panns_scores(config: FoleyConfig, labels: list[str], windows: list[dict], pooled: dict) -> dict[str, float]:
    """The classifier's numbers over the whole job: FD_PANNs on the embeddings (the columns after the logits), KL
    and SSMS as means over windows, IS over every generated window."""
    if not labels:
        return dict.fromkeys(PANNS_SCORES, math.nan)
    generated = pooled["generated_classifier"]
    inception = (math.nan, math.nan)
    if generated:
        inception = inception_score(np.concatenate(generated)[:, : len(labels)], config.evaluation.inception_splits)
    width = next((part.shape[1] - len(labels) for part in generated), 0)
    means = {name: mean_or_nan(w.get(name, math.nan) for w in windows) for name in PANNS_SCORES}
    return means | {
        "fd_panns": pooled_frechet(*pooled["classifier"], width=width),
        "is_panns": inception[0],
        "is_panns_std": inception[1],
    }


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
    shown = {name: "n/a" if summary[name] is None else f"{summary[name]:.4g}" for name in SCORE_NAMES}
    panns = [f"{label} {shown[name]}" for name, label in SCORE_NAMES.items() if name in PANNS_SCORES]
    print(
        f"{summary['videos']} videos, {summary['windows']} windows: CLAP score {shown['clap_score']}, "
        f"with the reference {shown['clap_score_reference']}, FD_CLAP {shown['fd_clap']}, "
        f"seam score {shown['seam_score']}"
        + (f"; {', '.join(panns)}" if summary["classifier"] else "")
        + f"; {join(args.output, EVALUATION_DIR)}/summary.json",
        flush=True,
    )
    for name, reason in summary["reasons"].items():
        if summary["classifier"] or name not in PANNS_SCORES:  # without a classifier, one line says so
            print(f"{name} n/a: {reason}", flush=True)
    if not summary["classifier"]:
        print(f"PANNs numbers n/a: {why_unscored('fd_panns', None, False)}", flush=True)
    for problem in summary["problems"]:
        print(f"not scored: {problem}", file=sys.stderr)
    return 1 if summary["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
