"""Which video decoder the decode stage should use: decord, PyAV and torchcodec measured side by side in one run.

    pip install av decord   # the other candidates; torchcodec, the one chosen, is a dependency
    python -m jobs.bench.decoders --out DIR [--repeats N]

For a codec matrix made with ffmpeg here (H.264, HEVC 8 and 10 bit, AV1 in mp4 and webm, VP8, VP9, ProRes,
DNxHR, MPEG-2 in TS, MPEG-4 Part 2, interlaced H.264), each decoder samples the frames of a window as the stage
does (window.frames frames spread over a 10.24-s window, scaled so the short side is CLIP's 224, one thread). It
reports whether it can (coverage), its CPU seconds per window (median of the repeats, the decoders interleaved),
whether it picks the frame on screen at each moment of a variable-frame-rate video (seek accuracy), whether it
returns a rotated phone video upright, and the FFmpeg it parses untrusted files with. Prints a table and writes
DIR/decoders.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np

SIZE = 224  # CLIP's input: the short side the decoder scales to
WINDOW_S, FRAMES, WINDOWS = 10.24, 4, 3
X264 = ["-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"]
# name: (file suffix, encoder arguments, pixel size); each clip is WINDOWS windows of testsrc2 at 25 fps
MATRIX = {
    "H.264": (".mp4", X264, "640x360"),
    "HEVC 8-bit": (".mp4", ["-c:v", "libx265", "-preset", "ultrafast", "-tag:v", "hvc1"], "640x360"),
    "HEVC 10-bit": (".mkv", ["-c:v", "libx265", "-preset", "ultrafast", "-pix_fmt", "yuv420p10le"], "640x360"),
    "AV1 (mp4)": (".mp4", ["-c:v", "libsvtav1", "-preset", "12"], "640x360"),
    "AV1 (webm)": (".webm", ["-c:v", "libsvtav1", "-preset", "12"], "640x360"),
    "VP8": (".webm", ["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M"], "640x360"),
    "VP9": (".webm", ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M"], "640x360"),
    "ProRes": (".mov", ["-c:v", "prores_ks", "-profile:v", "0"], "640x360"),
    "DNxHR": (".mov", ["-c:v", "dnxhd", "-profile:v", "dnxhr_lb", "-pix_fmt", "yuv422p"], "640x360"),
    "MPEG-2 (TS)": (".ts", ["-c:v", "mpeg2video", "-b:v", "2M"], "640x360"),
    "MPEG-4 Part 2": (".avi", ["-c:v", "mpeg4", "-q:v", "4"], "640x360"),
    "H.264 interlaced": (".mp4", [*X264, "-flags", "+ildct+ilme", "-x264opts", "tff=1"], "640x360"),
}


def ffmpeg(*args) -> None:
    result = subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args)], capture_output=True, text=True)
    if result.returncode:  # (SVT-AV1 prints its settings however quiet ffmpeg is asked to be)
        raise RuntimeError(f"ffmpeg {' '.join(map(str, args))} failed:\n{result.stderr[-2000:]}")


def make_media(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    clips = {}
    for name, (suffix, encoder, size) in MATRIX.items():
        path = folder / (name.lower().replace(" ", "-").replace("(", "").replace(")", "").replace(".", "") + suffix)
        if not path.exists():
            ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size}:rate=25:duration={WINDOW_S * WINDOWS}", *encoder, path)
        clips[name] = path
    vfr = folder / "vfr.mp4"  # 10 fps for two seconds, then 30 fps
    every_third_first = "select='if(lt(t,2),not(mod(n,3)),1)'"
    source = "testsrc2=size=320x180:rate=30:duration=4"
    ffmpeg("-f", "lavfi", "-i", source, "-vf", every_third_first, "-fps_mode", "vfr", *X264, vfr)
    rotated = folder / "rotated.mp4"  # a phone video: landscape pixels, a display matrix that turns them portrait
    ffmpeg("-i", clips["H.264"], "-t", "2", "-c", "copy", "-metadata:s:v:0", "rotate=90", rotated)
    return clips | {"vfr": vfr, "rotated": rotated}


def window_times(duration_s: float) -> list[list[float]]:
    """The stage's sample moments: FRAMES evenly inside each window (the middle of each FRAMES-th)."""
    starts = [index * WINDOW_S for index in range(round(duration_s / WINDOW_S))]
    return [[start + (i + 0.5) * WINDOW_S / FRAMES for i in range(FRAMES)] for start in starts]


def scaled(width: int, height: int) -> tuple[int, int]:
    scale = SIZE / min(width, height)
    return max(SIZE, round(width * scale)), max(SIZE, round(height * scale))


class Decord:
    name = "decord"

    def __init__(self):
        import decord  # noqa: PLC0415 - a candidate, installed for this comparison only

        self.decord = decord

    def ffmpeg_version(self) -> str:
        return "libavcodec 58 (FFmpeg 4.1, bundled in decord 0.6's wheel)"

    def sample(self, path: Path, times: list[list[float]]) -> list[np.ndarray]:
        probe_reader = self.decord.VideoReader(str(path))
        height, width = probe_reader[0].shape[:2]
        width, height = scaled(width, height)
        reader = self.decord.VideoReader(str(path), width=width, height=height, num_threads=1)
        # As the stage picked decord's frames: by index x rate where the frames sit on that grid, else by timestamp.
        fps, last = reader.get_avg_fps(), len(reader) - 1
        starts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]
        starts = starts - starts[0]
        if np.max(np.abs(starts - np.arange(len(reader)) / fps)) <= 0.25 / fps:
            return [reader.get_batch([min(int(t * fps), last) for t in window]).asnumpy() for window in times]
        return [reader.get_batch(np.searchsorted(starts, window, side="right") - 1).asnumpy() for window in times]


class PyAV:
    name = "PyAV"

    def __init__(self):
        import av  # noqa: PLC0415 - a candidate, installed for this comparison only

        self.av = av

    def ffmpeg_version(self) -> str:
        codec = ".".join(map(str, self.av.library_versions["libavcodec"]))
        return f"libavcodec {codec} (FFmpeg {self.av.ffmpeg_version_info}, bundled in PyAV {self.av.__version__})"

    def sample(self, path: Path, times: list[list[float]]) -> list[np.ndarray]:
        with self.av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            first = float(stream.start_time * stream.time_base) if stream.start_time is not None else 0.0
            windows = []
            for window in times:
                frames = []
                for moment in window:
                    container.seek(round((first + moment) / stream.time_base), stream=stream, backward=True)
                    shown = None
                    for frame in container.decode(stream):
                        if shown is not None and frame.time is not None and frame.time - first > moment + 1e-6:
                            break  # (the first frame after a seek is kept, should the seek land late)
                        shown = frame
                    turned = shown.rotation if hasattr(shown, "rotation") else 0
                    width, height = scaled(shown.width, shown.height)
                    image = shown.to_ndarray(width=width, height=height, format="rgb24")
                    frames.append(np.ascontiguousarray(np.rot90(image, k=turned // 90)) if turned else image)
                windows.append(np.stack(frames))
            return windows


class TorchCodec:
    name = "torchcodec"

    def __init__(self):
        from torchcodec import decoders, transforms  # noqa: PLC0415 - a candidate, installed for this comparison

        self.decoders, self.transforms = decoders, transforms

    def ffmpeg_version(self) -> str:
        version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split()[2]
        return f"the system's FFmpeg {version} (libavcodec of the OS, patched by its security updates)"

    def sample(self, path: Path, times: list[list[float]]) -> list[np.ndarray]:
        metadata = self.decoders.VideoDecoder(str(path)).metadata
        width, height = scaled(metadata.width, metadata.height)
        decoder = self.decoders.VideoDecoder(
            str(path),
            dimension_order="NHWC",
            num_ffmpeg_threads=1,
            transforms=[self.transforms.Resize((height, width))],
        )
        begin = metadata.begin_stream_seconds or 0.0
        return [decoder.get_frames_played_at([begin + t for t in window]).data.numpy() for window in times]


def reference_frames(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Every frame (as ffmpeg shows it, turned upright) with its start time: what a correct decoder returns."""
    starts = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time", "-of", "csv=p=0",
         str(path)], capture_output=True, text=True, check=True,
    ).stdout.replace(",", " ").split()  # fmt: skip
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-vf", f"scale={width}:{height}",
         "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True, check=True,
    ).stdout  # fmt: skip
    times = np.array([float(start) for start in starts])
    return times - times[0], np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def right_frames(path: Path, times: list[list[float]], windows: list[np.ndarray]) -> str:
    """How many sampled frames are the frame on screen at their moment (the closest of the reference frames)."""
    height, width = windows[0].shape[1:3]
    starts, frames = reference_frames(path, width, height)
    flat = frames.reshape(len(frames), -1).astype(np.int16)
    right = total = 0
    for window, sampled in zip(times, windows, strict=True):
        for moment, frame in zip(window, sampled, strict=True):
            on_screen = int(np.searchsorted(starts, moment, side="right") - 1)
            closest = int(np.argmin(np.abs(flat - frame.reshape(1, -1).astype(np.int16)).mean(axis=1)))
            right, total = right + (closest == on_screen), total + 1
    return f"{right}/{total}"


def seek_accuracy(decoder, path: Path) -> str:
    """How many of 40 moments of the VFR clip get the frame on screen then (the closest reference frame)."""
    moments = [[0.05 + index * 0.0975] for index in range(40)]
    return right_frames(path, moments, decoder.sample(path, moments))


def upright(decoder, path: Path) -> str:
    """Whether a mov display matrix of 90 degrees comes out as the portrait picture players show."""
    [[frame]] = decoder.sample(path, [[1.0]])
    height, width = frame.shape[:2]
    if height < width:
        return "no (landscape, as coded)"
    starts, frames = reference_frames(path, width, height)
    expected = frames[int(np.searchsorted(starts, 1.0, side="right") - 1)]
    difference = float(np.abs(expected.astype(np.float32) - frame).mean())
    return "yes" if difference < 8 else f"portrait, but {difference:.0f} grey levels off"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobs.bench.decoders", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    media = make_media(args.out / "media")
    decoders = [candidate() for candidate in (Decord, PyAV, TorchCodec)]
    results: dict[str, dict] = {d.name: {"ffmpeg": d.ffmpeg_version(), "codecs": {}} for d in decoders}
    for codec in MATRIX:
        times = window_times(WINDOW_S * WINDOWS)
        cpu: dict[str, list[float]] = {d.name: [] for d in decoders}
        errors: dict[str, str] = {}
        sampled: dict[str, list[np.ndarray]] = {}
        for _ in range(args.repeats):  # interleaved, so that a noisy moment hits every decoder alike
            for decoder in decoders:
                if decoder.name in errors:
                    continue
                started = time.process_time()
                try:
                    windows = sampled[decoder.name] = decoder.sample(media[codec], times)
                    assert all(w.shape[0] == FRAMES and min(w.shape[1:3]) == SIZE for w in windows), "wrong frames"
                except Exception as exc:  # noqa: BLE001 - any failure is what this column reports
                    errors[decoder.name] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:80]
                    continue
                cpu[decoder.name].append((time.process_time() - started) / len(times))
        for decoder in decoders:
            results[decoder.name]["codecs"][codec] = (
                {"ok": False, "error": errors[decoder.name]}
                if decoder.name in errors
                else {
                    "ok": True,
                    "cpu_s_per_window": statistics.median(cpu[decoder.name]),
                    "right_frames": right_frames(media[codec], times, sampled[decoder.name]),
                }
            )
    for decoder in decoders:
        for check, run in (("seek_accuracy_vfr", seek_accuracy), ("rotation_upright", upright)):
            try:
                results[decoder.name][check] = run(decoder, media["vfr" if check.startswith("seek") else "rotated"])
            except Exception as exc:  # noqa: BLE001 - reported, not fatal
                results[decoder.name][check] = f"fails: {str(exc).strip()[:60]}"
    (args.out / "decoders.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    return 0


def table(results: dict[str, dict]) -> str:
    names = list(results)
    lines = ["| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for codec in MATRIX:
        cells = []
        for name in names:
            entry = results[name]["codecs"][codec]
            cells.append(
                f"{entry['cpu_s_per_window']:.3f} s, {entry['right_frames']} right"
                if entry["ok"]
                else f"fails ({entry['error']})"
            )
        lines.append(f"| {codec} | " + " | ".join(cells) + " |")
    for check in ("seek_accuracy_vfr", "rotation_upright", "ffmpeg"):
        lines.append(f"| {check} | " + " | ".join(str(results[name][check]) for name in names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
