"""What sound sources cost: the detector beside CLIP and AudioLDM, in CPU-seconds per window, measured in one run.

    python -m jobs.bench.sources [--windows 4] [--no-audioldm] --out DIR

Real-size architectures with random weights (speed does not depend on weight values), configs/foley-cpu.yaml:
CLIP ViT-B/32 on the window's window.frames sampled frames (the decode stage's work without sources), OWLv2
base/16 at 960 px (google/owlv2-base-patch16-ensemble's architecture) on sources.frames of them, the crops of its
detections through CLIP, and AudioLDM s-full-v2 generating the window (one candidate). The frames are 398x224, as
the decode stage decodes a 16:9 video for CLIP. Each part runs in this process on the same threads, one after the
other, so their ratios are comparable (this machine is noisy; absolute seconds are not).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from foley.config import load_config

ROOT = Path(__file__).resolve().parents[2]


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(work) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of `work()`."""
    wall, cpu = time.perf_counter(), cpu_seconds()
    work()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def build_models(folder: Path, audioldm: bool) -> dict[str, Path]:
    from foley.testing.random_models import save_full_audioldm, save_full_detector  # noqa: PLC0415 - ~13 s

    models = {"detector": folder / "detector", **({"audioldm": folder / "audioldm"} if audioldm else {})}
    for name, build in (("detector", save_full_detector), ("audioldm", save_full_audioldm)):
        if name in models and not (models[name] / ".complete").exists():
            shutil.rmtree(models[name], ignore_errors=True)
            build(models[name])
            (models[name] / ".complete").touch()
    return models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench.sources", description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=4)
    parser.add_argument("--no-audioldm", action="store_true", help="leave AudioLDM out (it takes a minute a window)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    print("building the real-size detector (and AudioLDM) with random weights ...", flush=True)
    models = build_models(args.out / "models-full", audioldm=not args.no_audioldm)
    config = load_config(
        ROOT / "configs/foley-cpu.yaml",
        ["clip.pretrained=null", "sources.mode=zero_shot", f"sources.detector={models['detector']}"]
        + ([f"audioldm.model={models['audioldm']}"] if "audioldm" in models else []),
    )
    from workers.decode_embed import DecodeEmbed  # noqa: PLC0415 - after the models, which its import does not need

    stage = DecodeEmbed(config)
    per_window, windows = config.window.frames, args.windows
    frames = np.random.default_rng(0).integers(0, 256, (windows * per_window, 224, 398, 3), dtype=np.uint8)
    grouped = frames.reshape(windows, per_window, *frames.shape[1:])
    chosen = np.unique(np.linspace(0, per_window - 1, config.sources.frames).round().astype(int))
    stage.embed_frames(frames[:per_window])  # warm-up: first calls allocate
    stage.sources(grouped[:1])
    found = []
    results = {
        "clip on the sampled frames": timed(lambda: stage.embed_frames(frames)),
        "detection": timed(lambda: stage.sources.detector.detect(grouped[:, chosen].reshape(-1, *frames.shape[1:]))),
        "detection, crops through CLIP, tracking": timed(lambda: found.extend(stage.sources(grouped))),
    }
    sources = sum(len(notes) for notes, _ in found)
    if "audioldm" in models:
        import torch  # noqa: PLC0415

        from foley.models.audioldm import AudioLDM  # noqa: PLC0415
        from foley.storage.store import Storage  # noqa: PLC0415

        audioldm = AudioLDM(config.audioldm, Storage(config.storage), stage.device)
        condition = torch.from_numpy(np.random.default_rng(1).standard_normal((1, 512)).astype(np.float32))

        def generate():
            generator = [torch.Generator().manual_seed(0)]
            steps, guidance = config.audioldm.steps, config.audioldm.guidance_scale
            audioldm.generate(condition, torch.zeros(1, 512), steps, guidance, config.window.seconds, generator)

        results["AudioLDM, one window"] = tuple(value * windows for value in timed(generate))  # per window below
    report = {
        "windows": windows,
        "frames_per_window": per_window,
        "detected_frames_per_window": len(chosen),
        "sources_found": sources,
        "per_window": {
            name: {"wall_s": wall / windows, "cpu_s": cpu / windows} for name, (wall, cpu) in results.items()
        },
    }
    clip_cpu = report["per_window"]["clip on the sampled frames"]["cpu_s"]
    print(f"{windows} windows, {per_window} frames each ({len(chosen)} looked at for sources), {sources} sources found")
    print(f"{'per window':<42} {'CPU s':>8} {'wall s':>8} {'x CLIP':>7}")
    for name, cost in report["per_window"].items():
        print(f"{name:<42} {cost['cpu_s']:>8.2f} {cost['wall_s']:>8.2f} {cost['cpu_s'] / clip_cpu:>7.1f}")
    (args.out / "sources_bench.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out / 'sources_bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
