"""The static report of a dub job under `<output>/_foley/report/`: one page that opens from disk or from a bucket.

index.html holds no data: it loads data/summary.js, then data/page-NNNNN.js, `report.page_size` rows each, one
after the other, so a library of 100,000 inputs shows its first rows at once. (Data come as scripts because a page
opened from disk may not fetch JSON.) Every link is relative: to the outputs one folder up, and to the pictures
the stages made under media/ (foley.pipeline.report_assets).
"""

from __future__ import annotations

import io
import json
import math
from importlib import resources
from pathlib import PurePosixPath
from urllib.parse import quote

import pyarrow.parquet as pq

from foley.config import FoleyConfig
from foley.pipeline.kinds import DUB
from foley.pipeline.layout import COMPARISONS_DIR, EVALUATION_DIR, REPORT_DIR, REPORT_TO_OUTPUT_ROOT
from foley.pipeline.manifest import Manifest
from foley.pipeline.outputs import with_suffix
from foley.pipeline.report_assets import POSTERS, SPECTROGRAM
from foley.storage.store import Storage
from foley.storage.uris import join

AUDIO_SUFFIXES = (".flac", ".wav")
THROUGHPUT_BINS = 40


def relative_link(uri: str, output_root: str, relative_path: str) -> str:
    """A link from the report's index.html to an output: its path under the output root (for a folder moved since the
    job ran: the input's relative path with the output's suffix, as outputs are named)."""
    root = output_root.rstrip("/") + "/"
    inside = uri[len(root) :] if uri.startswith(root) else with_suffix(relative_path, PurePosixPath(uri).suffix)
    return REPORT_TO_OUTPUT_ROOT + quote(
        inside
    )  # a '#' or '?' in a name is part of the path, not a fragment or a query


def describe_conditions(conditions_json: str) -> str:
    """What a video was asked to sound like besides its picture, in words; empty for the picture alone."""
    conditions = json.loads(conditions_json or "{}")
    parts = []
    if prompt := conditions.get("prompt"):
        end = conditions.get("prompt_weight_end")
        weight = f"{conditions['prompt_weight']}" + (f" to {end}" if end is not None else "")
        parts.append(f"prompt '{prompt}' (weight {weight})")
    if reference := conditions.get("reference_audio"):
        parts.append(f"reference {reference} (weight {conditions['reference_weight']})")
    if negative := conditions.get("negative_prompt"):
        parts.append(f"negative prompt '{negative}'")
    if parts and conditions.get("visual_weight") is not None:
        parts.append(f"picture weight {conditions['visual_weight']}")
    return "; ".join(parts)


def describe_window(index: int, window: dict, notes: dict) -> dict:
    labels = ", ".join(f"{label['label']} {label['weight']:.2f}" for label in notes.get("labels") or [])
    weights = ", ".join(
        f"{name} {value:.2f}" for name, value in (notes.get("weights") or {}).items() if value is not None
    )
    scores = notes.get("scores") or []
    sources = ", ".join(
        f"{source['label']} {source['score']:.2f} "
        + ("(weighed by the remixer)" if source.get("weight") is None else f"(weight {source['weight']:.2f})")
        for source in notes.get("sources") or []
    )
    return {
        "index": index,
        "span": f"{window['start_s']:.2f}-{window['end_s']:.2f}",
        "shot": window["shot"],
        "labels": labels,
        "weights": weights,
        "sources": sources,  # label, detection score, weight in the mix
        # Three significant digits, so close candidates still read apart; `kept` indexes them as the manifest does.
        "scores": ", ".join(f"{score:.3g}" for score in scores) + (f" (kept #{notes['kept']})" if scores else ""),
    }


def video_entry(record: dict, output_root: str, pictures: set[str], scores: dict[str, float]) -> dict:
    outputs = record.get("outputs") or ([record["output_uri"]] if record["output_uri"] else [])
    audio = next((uri for uri in outputs if uri.lower().endswith(AUDIO_SUFFIXES)), None)
    video = next((uri for uri in outputs if not uri.lower().endswith(AUDIO_SUFFIXES)), None)
    done = record["status"] == "ok"
    notes = record.get("window_notes") or []
    kept = [n["scores"][n["kept"]] for n in notes if n and n.get("scores")]
    media = f"media/{record['result_id']}/"
    return {
        "path": record["relative_path"],
        "status": record["status"],
        "error": record["error"] or "",
        "duration": record["duration_s"] or None,  # None: a failed video's length, not known
        "windows": record["n_windows"] or None,
        "score": scores.get(record["relative_path"], sum(kept) / len(kept) if kept else None),
        "media": media,
        "posters": done and media + POSTERS in pictures,
        "spectrogram": done and media + SPECTROGRAM in pictures,
        "audio": relative_link(audio, output_root, record["relative_path"]) if done and audio else None,
        "video": relative_link(video, output_root, record["relative_path"]) if done and video else None,
        "conditions": describe_conditions(record.get("conditions") or ""),
        "window_rows": [
            describe_window(index, window, notes[index] if index < len(notes) and notes[index] else {})
            for index, window in enumerate(record.get("windows") or [])
        ],
    }


def summary_of(records: list[dict], evaluation: dict | None, comparisons: list[str], pages: int, left_out: str) -> dict:
    ok = [r for r in records if r["status"] == "ok"]
    finished = sorted(r["finished_at"].timestamp() for r in ok if r["finished_at"])
    span = (finished[-1] - finished[0]) if len(finished) > 1 else 0.0
    bin_s = max(span / THROUGHPUT_BINS, 1.0)
    throughput = [0] * (math.floor(span / bin_s) + 1) if finished else []
    for moment in finished:
        throughput[math.floor((moment - finished[0]) / bin_s)] += 1
    return {
        "total": len(records),
        "counts": {s: sum(r["status"] == s for r in records) for s in ("ok", "failed", "skipped")},
        "config_hashes": sorted({r["config_hash"] for r in ok if r["config_hash"]}),
        "models": {m: " | ".join(used) for m in DUB.models if (used := sorted({r[m] for r in ok if r.get(m)}))},
        "seconds_per_stage": {
            s: sum(r[f"seconds_{s}"] or 0.0 for r in ok) / len(ok) if ok else 0.0 for s in DUB.stages
        },
        "throughput": throughput,
        "throughput_bin_s": bin_s,
        "evaluation": evaluation,
        "comparisons": comparisons,  # jobs.compare's tables that hold this run, as links from the report's page
        "pages": pages,
        "left_out": left_out,
    }


def script(call: str, *arguments) -> bytes:
    return f"window.REPORT.{call}({', '.join(json.dumps(a, default=str) for a in arguments)});\n".encode()


def write_report(config: FoleyConfig, output_root: str) -> str:
    """Write the report of the job at `output_root`; returns the URI of its page."""
    storage = Storage(config.storage)
    root = join(output_root, REPORT_DIR)
    manifest = Manifest(output_root, storage, DUB)
    records = sorted(manifest.current().values(), key=lambda r: r["relative_path"])
    pictures = {uri[len(root) + 1 :] for uri in storage.list_prefix(join(root, "media") + "/")}
    evaluation, scores = read_evaluation(storage, output_root)
    comparisons = sorted(
        relative_link(uri, output_root, uri)
        for uri in storage.list_prefix(join(output_root, COMPARISONS_DIR) + "/")
        if uri.endswith(".html")
    )
    entries = [video_entry(record, output_root, pictures, scores) for record in records]
    size = config.report.page_size
    pages = [entries[first : first + size] for first in range(0, len(entries), size)]
    for index, page in enumerate(pages):
        storage.write_bytes(join(root, f"data/page-{index:05d}.js"), script("page", index, page))
    storage.write_bytes(
        join(root, "data/summary.js"),
        script("summary", summary_of(records, evaluation, comparisons, len(pages), manifest.left_out())),
    )
    page = resources.files("foley.pipeline").joinpath("templates/report.html").read_bytes()
    storage.write_bytes(join(root, "index.html"), page)
    return join(root, "index.html")


def read_evaluation(storage: Storage, output_root: str) -> tuple[dict | None, dict[str, float]]:
    """jobs.evaluate's summary and per-video CLAP scores, when it has run."""
    summary_uri = join(output_root, f"{EVALUATION_DIR}/summary.json")
    if not storage.exists(summary_uri):
        return None, {}
    videos = pq.read_table(io.BytesIO(storage.read_bytes(join(output_root, f"{EVALUATION_DIR}/videos.parquet"))))
    scores = {v["relative_path"]: v["clap_score"] for v in videos.to_pylist() if not math.isnan(v["clap_score"])}
    return json.loads(storage.read_bytes(summary_uri)), scores
