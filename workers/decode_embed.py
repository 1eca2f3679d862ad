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

torchcodec (with the system's FFmpeg; foley.media.decode) decodes only the K sampled frames per window, scaled in
the decoder so the short side is CLIP's input size; only embeddings leave the actor (frames never enter the object
store). Frames are picked by their timestamps, so variable-frame-rate videos are sampled at the right moments, and
CLIP sees them upright. Sound sources (foley.pipeline.sources), the report's posters (foley.pipeline.report_assets)
and the fan-out into segments (foley.pipeline.segments) are made from those frames and windows where they live.
"""

from __future__ import annotations

import json
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch.nn.functional as F

from foley.config import FoleyConfig
from foley.media.cuts import detect_cuts
from foley.media.decode import FrameDecoder, decoder_identity
from foley.media.probe import MediaError, VideoInfo, probe
from foley.media.still import image_size, read_image
from foley.media.windows import Window, plan_windows, sample_times, shot_borders
from foley.models.clip import load_clip
from foley.models.detector import load_source_detector
from foley.models.device import pick_device
from foley.pipeline.attempts import bounded_crashes
from foley.pipeline.columns import SKIPPED
from foley.pipeline.kinds import DUB, JobKind
from foley.pipeline.report_assets import chosen_posters, keep_posters
from foley.pipeline.rows import batch_of, fail, is_pending, pipeline_columns, rows_of
from foley.pipeline.segments import segment_rows
from foley.pipeline.sources import SourceFinder
from foley.pipeline.stage import local_input, set_torch_threads
from foley.storage.store import Storage


class DecodeEmbed:
    def __init__(
        self,
        config: FoleyConfig,
        kind: JobKind = DUB,
        audio_required: bool = False,
        segment_windows: int | None = None,
    ):
        """`kind`: the job whose rows it reads, which come with the plan's columns only; it adds the rest.
        `audio_required`: the embed job learns from sound, so it skips inputs without any; the dub job instead
        follows input.existing_audio for inputs that have sound. `segment_windows`: split longer videos into
        segments of this many windows (None: never)."""
        self.config = config
        self.columns = pipeline_columns(config, kind)
        self.audio_required = audio_required
        self.segment_windows = segment_windows
        self.resources = config.stages.decode_embed
        set_torch_threads(self.resources)
        self.storage = Storage(config.storage)
        self.device = pick_device(config.device, self.resources)
        self.clip = load_clip(config.clip, self.storage, self.device)
        self.sources = None  # SSV2A's sound sources of a window, in a dub job with them on
        if "window_sources" in self.columns:
            detector = load_source_detector(config.sources, config.source_labels(), self.storage, self.device)
            self.sources = SourceFinder(detector, self.clip, config.sources, self.resources.max_forward_batch)
        decode_device = pick_device(config.decode.device, self.resources)
        self.frames = FrameDecoder(
            config.decode,
            short_side=self.clip.image_size,
            frames_per_window=config.window.frames,
            max_frames=self.resources.max_forward_batch,
            threads=self.resources.threads(),
            device=decode_device,
            cache_dir=self.storage.cache_dir,
        )
        self.decoder = decoder_identity(decode_device.type == "cuda")  # the manifest's `decoder` column

    @bounded_crashes("decode_embed")
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = []
        for planned in rows_of(batch):
            row = self.columns | planned
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
        if row["image"]:
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
            row.update(status=SKIPPED, error=f"{row['input_uri']} has {reason} to learn from", outputs="[]")
            return [row]
        if has_sound and not self.audio_required and self.config.input.existing_audio == "skip":
            row.update(
                status=SKIPPED,
                error=f"{row['input_uri']} already has an audio track (peak {info.audio_peak_dbfs:.1f} dBFS; "
                "input.existing_audio=skip; use replace or mix to dub it anyway)",
                outputs="[]",  # nothing written
            )
            return [row]
        windows = self.plan_windows(path, info)
        record_windows(row, windows)
        row["decoder"] = self.decoder
        embed = partial(self.embed_windows, row, path, info, every=windows)  # for the windows still to make
        return segment_rows(self.storage, row, windows, self.segment_windows, embed)

    def embed_windows(self, row: dict, path: Path, info: VideoInfo, wanted: list[Window], every: list[Window]):
        """The CLIP embeddings of the `wanted` windows (and their sound sources, when on); when that is every
        window, the report's poster frames too (the middle sampled frame of chosen windows: no decoding beyond
        CLIP's)."""
        per_window = self.config.window.frames
        posters = set(chosen_posters(len(every), self.config.report.max_posters)) if wanted == every else set()
        embeddings, sources, frames_kept, boxes, index = [], [], [], [], 0
        each_frame = [] if self.config.window.aggregator == "learned" else None
        for frames in self.frames.window_frames(path, info, wanted):
            embeddings.append(self.embed_frames(frames, each_frame))
            if self.sources:
                sources.extend(self.sources(frames.reshape(-1, per_window, *frames.shape[1:])))
            for offset in range(len(frames) // per_window):
                if index + offset in posters:
                    frames_kept.append(frames[offset * per_window + per_window // 2])
                    boxes.append([note["box"] for note in sources[index + offset][0]] if sources else [])
            index += len(frames) // per_window
        keep_posters(self.storage, row["report_uri"], frames_kept, self.config.report, boxes)
        kept = np.concatenate(each_frame) if each_frame is not None else None
        return self.window_columns(np.concatenate(embeddings), sources, wanted, kept)

    def window_columns(
        self,
        clip_embeddings: np.ndarray,
        sources: list[tuple[list[dict], np.ndarray]],
        windows: list[Window],
        each_frame: np.ndarray | None = None,
    ) -> dict:
        """Per window: its CLIP embedding and, with sound sources on, its sources' notes and embeddings (padded to
        sources.max_sources rows of zeros, flattened, so that a segment's windows slice like its CLIP embeddings);
        with window.aggregator=learned, its frames (frame_conditions)."""
        columns = {"clip_embeddings": clip_embeddings}
        if each_frame is not None:
            columns["frame_embeddings"] = self.frame_conditions(each_frame, windows)
        if self.sources:
            most, width = self.config.sources.max_sources, clip_embeddings.shape[1]
            padded = np.zeros((len(sources), most * width), np.float32)
            for window, (_, found) in enumerate(sources):
                padded[window, : found.size] = found.reshape(-1)
            columns["source_embeddings"] = padded
            columns["window_sources"] = np.array([json.dumps(notes) for notes, _ in sources], dtype=object)
        return columns

    def frame_conditions(self, each_frame: np.ndarray, windows: list[Window]) -> np.ndarray:
        """(windows, K, D) frame embeddings -> (windows, K * (D + 1)): each frame's embedding followed by its moment
        in the window (seconds into it over window.seconds), what the temporal aggregator reads."""
        settings = self.config.window
        moments = np.array(
            [[(t - w.start_s) / settings.seconds for t in sample_times(w.start_s, w.end_s, settings.frames)]
             for w in windows],
            np.float32,
        )  # fmt: skip
        return np.concatenate([each_frame, moments[..., None]], axis=2).reshape(len(windows), -1)

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
        sources = self.sources(image[:, None]) if self.sources else []
        boxes = [[note["box"] for note in sources[0][0]]] if sources else None
        keep_posters(self.storage, row["report_uri"], [image[0]], self.config.report, boxes)
        learned = self.config.window.aggregator == "learned"  # every sampled frame is the image

        def columns(wanted: list[Window]) -> dict:
            frames = np.tile(embedding[None], (len(wanted), window.frames, 1)) if learned else None
            return self.window_columns(np.repeat(embedding, len(wanted), axis=0), sources * len(wanted), wanted, frames)

        return segment_rows(self.storage, row, windows, self.segment_windows, columns)

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

    def embed_frames(self, frames: np.ndarray, each_frame: list[np.ndarray] | None = None) -> np.ndarray:
        """(windows * K, H, W, 3) frames -> (windows, D): the L2-normalised mean of each window's K embeddings
        (temporal averaging, the paper's best aggregator); `each_frame` also gets each frame's, L2-normalised
        (windows, K, D), for the learned aggregator."""
        embeddings = self.clip.embed_frames(frames).view(-1, self.config.window.frames, self.clip.embed_dim)
        if each_frame is not None:
            each_frame.append(F.normalize(embeddings, dim=-1).cpu().numpy().astype(np.float32))
        return F.normalize(embeddings.mean(dim=1), dim=-1).cpu().numpy().astype(np.float32)

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


def record_windows(row: dict, windows: list[Window]) -> None:
    row["windows"] = json.dumps([window.as_dict() for window in windows])
    row["n_windows"] = len(windows)
