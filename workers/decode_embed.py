"""Stage 1: video -> its shots and windows -> one CLIP embedding per window.

INPUT  one row per video: input_uri (local path or s3://).
OUTPUT the same row plus duration_s, fps, width, height (as displayed), has_audio (audible sound: the first audio
       stream peaks at or above input.silence_threshold_dbfs), audio_level_dbfs (that peak; NaN without audio),
       windows (each window's span and shot), n_windows and clip_embeddings (windows x D, the L2-normalised mean
       of K frame embeddings per window). Fan-out 1:1, or 1:segments for a video of more than
       window.segment_windows windows when the job segments (jobs.dub): one row per segment still to make, with
       its windows' embeddings. Used by jobs.dub and jobs.embed.

A still image (row `image`) is one shot of output.image_seconds; every window's embedding is the image's.

With window.cuts=detect, ffmpeg's scene-change score on frames scaled down finds the cuts first (foley.media.cuts),
and windows are planned per shot, so no window mixes two shots.

decord decodes only the K sampled frames per window, scaled in the decoder so the short side is CLIP's input
size; only embeddings leave the actor (frames never enter the object store). Frames are picked by their
timestamps, so variable-frame-rate videos are sampled at the right moments, and CLIP sees them upright.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import decord
import numpy as np
import torch.nn.functional as F

from foley.config import FoleyConfig
from foley.media.cuts import detect_cuts
from foley.media.frames import FrameSampler, quarter_turns_left
from foley.media.probe import MediaError, VideoInfo, probe
from foley.media.still import image_size, read_image
from foley.media.windows import Window, plan_windows, shot_borders
from foley.models.clip import load_clip
from foley.models.device import pick_device
from foley.pipeline.report_assets import POSTERS, chosen_posters, poster_strip
from foley.pipeline.rows import EMPTY_MATRIX, SKIPPED, batch_of, fail, is_pending, rows_of
from foley.pipeline.segments import ASSEMBLE_ONLY, SegmentStaging, segment_ranges
from foley.pipeline.stage import local_input, set_torch_threads
from foley.storage.store import Storage
from foley.storage.uris import join


class DecodeEmbed:
    def __init__(self, config: FoleyConfig, audio_required: bool = False, segment_windows: int | None = None):
        """`audio_required`: the embed job learns from sound, so it skips inputs without any; the dub job instead
        follows input.existing_audio for inputs that have sound. `segment_windows`: split longer videos into
        segments of this many windows (None: never)."""
        self.config = config
        self.audio_required = audio_required
        self.segment_windows = segment_windows
        self.resources = config.stages.decode_embed
        set_torch_threads(self.resources)
        self.storage = Storage(config.storage)
        self.device = pick_device(config.device, self.resources)
        self.clip = load_clip(config.clip, self.storage, self.device)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for row in rows_of(batch):
            if not is_pending(row):
                rows.append(row)
                continue
            row["started_at"] = time.time()
            started = time.perf_counter()
            try:
                out = self.embed_video(row)
            except Exception as exc:  # noqa: BLE001 - one bad video becomes a failed row, never a failed job
                fail(row, "decode", exc)
                out = [row]
            out[0]["seconds_decode_embed"] = time.perf_counter() - started  # the video's decode, counted once
            rows.extend(out)
        return batch_of(rows)

    def embed_video(self, row: dict) -> list[dict]:
        """The video's rows: itself when skipped, else one per segment still to make."""
        if bool(row["image"]):
            return self.embed_image(row)
        path, info = self.probe_input(row)
        threshold = self.config.input.silence_threshold_dbfs
        has_sound = info.has_sound(threshold)
        if self.audio_required and not has_sound:
            reason = (
                f"only a silent audio track (peak {info.audio_peak_dbfs:.1f} dBFS, under "
                f"input.silence_threshold_dbfs={threshold})"
                if info.audio_streams
                else "no audio track"
            )
            row.update(status=SKIPPED, error=f"{row['input_uri']} has {reason} to learn from")
            return [row]
        if has_sound and not self.audio_required and self.config.input.existing_audio == "skip":
            row.update(
                status=SKIPPED,
                error=f"{row['input_uri']} already has an audio track (peak {info.audio_peak_dbfs:.1f} dBFS; "
                "input.existing_audio=skip; use replace or mix to dub it anyway)",
            )
            return [row]
        windows = self.plan_windows(path, info)
        record_windows(row, windows)
        return self.segment_rows(row, windows, lambda wanted: self.embed_windows(row, path, info, wanted, windows))

    def embed_windows(self, row: dict, path: Path, info: VideoInfo, wanted: list[Window], every: list[Window]):
        """The CLIP embeddings of the `wanted` windows; when that is every window, the report's poster frames too
        (the middle sampled frame of chosen windows: no decoding beyond CLIP's)."""
        per_window = self.config.window.frames
        posters = set(chosen_posters(len(every), self.config.report.max_posters)) if wanted == every else set()
        embeddings, frames_kept, index = [], [], 0
        for frames in self.decode_window_frames(path, info, wanted):
            embeddings.append(self.embed_frames(frames))
            for offset in range(len(frames) // per_window):
                if index + offset in posters:
                    frames_kept.append(frames[offset * per_window + per_window // 2])
            index += len(frames) // per_window
        self.keep_posters(row, frames_kept)
        return np.concatenate(embeddings)

    def keep_posters(self, row: dict, frames: list[np.ndarray]) -> None:
        if frames and str(row["report_uri"]):
            strip = poster_strip(frames, self.config.report)
            self.storage.write_bytes(join(str(row["report_uri"]), POSTERS), strip)

    def embed_image(self, row: dict) -> list[dict]:
        """A still image is one shot of output.image_seconds whose every window sees the image."""
        path = local_input(row, self.storage)
        seconds = self.config.output.image_seconds
        row["width"], row["height"] = image_size(path)
        row["duration_s"] = seconds
        window = self.config.window
        borders = shot_borders([], seconds, window.min_shot_seconds)
        windows = plan_windows(borders, window.seconds, window.overlap_seconds, window.cut_crossfade_seconds)
        record_windows(row, windows)
        image = read_image(path, self.clip.image_size)[None]
        embedding = F.normalize(self.clip.embed_frames(image), dim=-1).cpu().numpy().astype(np.float32)
        self.keep_posters(row, [image[0]])
        return self.segment_rows(row, windows, lambda wanted: np.repeat(embedding, len(wanted), axis=0))

    def segment_rows(self, row: dict, windows: list[Window], embed: Callable[[list[Window]], np.ndarray]) -> list[dict]:
        """One row per segment an earlier run has not staged yet, with its windows' CLIP embeddings (`embed` makes
        them for only those windows); a video short enough is one segment."""
        ranges = segment_ranges(len(windows), self.segment_windows)
        staged = SegmentStaging(self.storage, str(row["staging_uri"]), len(ranges)).staged() if ranges[1:] else set()
        todo = [index for index in range(len(ranges)) if index not in staged]
        wanted = [window for index in todo for window in windows[slice(*ranges[index])]]
        embeddings = embed(wanted) if wanted else EMPTY_MATRIX
        segments, taken = [], 0
        for index in todo:
            first, end = ranges[index]
            segment = dict(row, segment=index, segment_count=len(ranges), first_window=first)
            segment["clip_embeddings"] = embeddings[taken : taken + end - first]
            taken += end - first
            segments.append(segment)
        # Every segment staged by an earlier run: one row without windows lets the last stage publish the video.
        return segments or [dict(row, segment=ASSEMBLE_ONLY, segment_count=len(ranges), first_window=0)]

    def probe_input(self, row: dict) -> tuple[Path, VideoInfo]:
        """The node-local input and its facts (recorded in the row), checked against the configured limits.

        has_audio means audible sound: a track of digital silence must not make input.existing_audio=skip skip
        a video that has nothing to hear."""
        path = local_input(row, self.storage)
        info = probe(path)
        self.check_limits(info)
        row.update(
            duration_s=info.duration_s,
            fps=info.fps,
            width=info.width,
            height=info.height,
            has_audio=info.has_sound(self.config.input.silence_threshold_dbfs),
            audio_level_dbfs=info.audio_peak_dbfs,
        )
        return path, info

    def plan_windows(self, path: Path, info: VideoInfo) -> list[Window]:
        """Windows per shot (window.cuts=detect) or on one grid over the whole video (off)."""
        window = self.config.window
        cuts = []
        if window.cuts == "detect":
            cuts = detect_cuts(path, window.cut_threshold, window.cut_detect_width, self.resources.threads())
        borders = shot_borders(cuts, info.duration_s, window.min_shot_seconds)
        return plan_windows(borders, window.seconds, window.overlap_seconds, window.cut_crossfade_seconds)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """(windows * K, H, W, 3) frames -> (windows, D): the L2-normalised mean of each window's K embeddings
        (temporal averaging, the paper's best aggregator)."""
        embeddings = self.clip.embed_frames(frames).view(-1, self.config.window.frames, self.clip.embed_dim)
        return F.normalize(embeddings.mean(dim=1), dim=-1).cpu().numpy().astype(np.float32)

    def decode_window_frames(self, path: Path, info: VideoInfo, windows: list[Window]) -> Iterator[np.ndarray]:
        """The K sampled frames of each window, for as many whole windows at a time as max_forward_batch allows.

        By default decord decodes only those frames, scaled in the decoder; decode.frames=all and
        decode.size=native are the slow ways, kept switchable so the benchmark can measure the difference.
        """
        reader = self.open_reader(path, info)
        if len(reader) == 0:
            raise MediaError("decord found no decodable frames in the video stream")
        sampler = FrameSampler.for_reader(reader, info)
        turns = quarter_turns_left(info)
        per_window = self.config.window.frames
        windows_per_forward = max(1, self.resources.max_forward_batch // per_window)
        for first in range(0, len(windows), windows_per_forward):
            group = windows[first : first + windows_per_forward]
            indices = [i for window in group for i in sampler.indices(window.start_s, window.end_s, per_window)]
            try:
                if self.config.decode.frames == "all":  # every frame of the span, then the sampled ones
                    span = list(range(min(indices), max(indices) + 1))
                    decoded = reader.get_batch(span).asnumpy()
                    frames = decoded[[i - span[0] for i in indices]]
                else:
                    frames = reader.get_batch(indices).asnumpy()
            except MediaError:
                raise
            except Exception as exc:  # decord raises its own error types
                raise MediaError(
                    f"its {info.video_codec} video stream could not be decoded by decord "
                    f"({_first_line(exc)}); the file may be truncated or corrupt"
                ) from None
            yield np.ascontiguousarray(np.rot90(frames, k=turns, axes=(1, 2))) if turns else frames

    def check_limits(self, info: VideoInfo) -> None:
        limits = self.config.input
        if info.duration_s > limits.max_duration_s:
            raise MediaError(f"is {info.duration_s:.1f} s long, over input.max_duration_s={limits.max_duration_s}")
        if info.width > limits.max_width or info.height > limits.max_height:
            raise MediaError(
                f"is {info.width}x{info.height}, over input.max_width x input.max_height="
                f"{limits.max_width}x{limits.max_height}"
            )
        if info.width <= 0 or info.height <= 0:
            raise MediaError("its video stream reports no frame size")

    def open_reader(self, path: Path, info: VideoInfo):
        """A decord reader; with decode.size=clip it scales in the decoder so the short side is CLIP's input size.

        The size is asked in the orientation decord returns: displayed if decord turns the frames itself,
        else as coded (the frames are turned after decoding)."""
        size = {}
        if self.config.decode.size == "clip":  # the decoder scales: short side = CLIP's input size
            width, height = (info.height, info.width) if quarter_turns_left(info) % 2 else (info.width, info.height)
            scale = self.clip.image_size / min(width, height)
            size = {
                "width": max(self.clip.image_size, round(width * scale)),
                "height": max(self.clip.image_size, round(height * scale)),
            }
        try:
            return decord.VideoReader(str(path), num_threads=self.resources.threads(), **size)
        except Exception as exc:  # decord raises its own error types
            raise MediaError(
                f"decord cannot read its {info.video_codec} video stream ({_first_line(exc)}); "
                "re-encode it (e.g. to H.264) or check that the file is complete"
            ) from None


def record_windows(row: dict, windows: list[Window]) -> None:
    row["windows"] = json.dumps([window.as_dict() for window in windows])
    row["n_windows"] = len(windows)


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
