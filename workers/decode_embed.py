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

torchcodec (with the system's FFmpeg) decodes only the K sampled frames per window, scaled in the decoder so the
short side is CLIP's input size; only embeddings leave the actor (frames never enter the object store). Frames are
picked by their timestamps, so variable-frame-rate videos are sampled at the right moments, and CLIP sees them
upright.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from foley.config import FoleyConfig
from foley.media.cuts import detect_cuts
from foley.media.mux import copy_video_stream
from foley.media.probe import MediaError, VideoInfo, probe
from foley.media.still import image_size, read_image
from foley.media.windows import Window, plan_windows, sample_times, shot_borders
from foley.models.clip import load_clip
from foley.models.detector import load_source_detector
from foley.models.device import pick_device
from foley.pipeline.attempts import bounded_crashes
from foley.pipeline.kinds import DUB, JobKind
from foley.pipeline.report_assets import POSTERS, chosen_posters, poster_strip
from foley.pipeline.rows import (
    SKIPPED,
    batch_of,
    fail,
    first_line,
    is_pending,
    pipeline_columns,
    rows_of,
)
from foley.pipeline.segments import ASSEMBLE_ONLY, SegmentStaging, segment_ranges
from foley.pipeline.sources import track_sources
from foley.pipeline.stage import local_input, set_torch_threads
from foley.storage.publish import temporary_sibling
from foley.storage.store import Storage
from foley.storage.uris import join

# torchcodec floors a moment to its stream's time base, so float error can move a moment that falls on a frame's
# start (a 10.24-s window at 25 fps is 256 frames) into the frame before; a microsecond later it is that frame.
ON_A_FRAMES_START_S = 1e-6
SEEKABLE_COPIES = "seekable"  # under the node cache: video streams copied into a container torchcodec seeks in


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
        self.detector = (
            load_source_detector(config.sources, config.source_labels(), self.storage, self.device)
            if "window_sources" in self.columns  # a dub job with sound sources on
            else None
        )
        self.decode_device = pick_device(config.decode.device, self.resources)
        self.decoder = decoder_identity(self.decode_device)  # the manifest's `decoder` column

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
            row.update(status=SKIPPED, error=f"{row['input_uri']} has {reason} to learn from", output_uris="[]")
            return [row]
        if has_sound and not self.audio_required and self.config.input.existing_audio == "skip":
            row.update(
                status=SKIPPED,
                error=f"{row['input_uri']} already has an audio track (peak {info.audio_peak_dbfs:.1f} dBFS; "
                "input.existing_audio=skip; use replace or mix to dub it anyway)",
                output_uris="[]",  # nothing written
            )
            return [row]
        windows = self.plan_windows(path, info)
        record_windows(row, windows)
        row["decoder"] = self.decoder
        return self.segment_rows(row, windows, lambda wanted: self.embed_windows(row, path, info, wanted, windows))

    def embed_windows(self, row: dict, path: Path, info: VideoInfo, wanted: list[Window], every: list[Window]):
        """The CLIP embeddings of the `wanted` windows (and their sound sources, when on); when that is every
        window, the report's poster frames too (the middle sampled frame of chosen windows: no decoding beyond
        CLIP's)."""
        per_window = self.config.window.frames
        posters = set(chosen_posters(len(every), self.config.report.max_posters)) if wanted == every else set()
        embeddings, sources, frames_kept, boxes, index = [], [], [], [], 0
        each_frame = [] if self.config.window.aggregator == "learned" else None
        for frames in self.decode_window_frames(path, info, wanted):
            embeddings.append(self.embed_frames(frames, each_frame))
            if self.detector:
                sources.extend(self.window_sources(frames.reshape(-1, per_window, *frames.shape[1:])))
            for offset in range(len(frames) // per_window):
                if index + offset in posters:
                    frames_kept.append(frames[offset * per_window + per_window // 2])
                    boxes.append([note["box"] for note in sources[index + offset][0]] if sources else [])
            index += len(frames) // per_window
        self.keep_posters(row, frames_kept, boxes)
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
        if self.detector:
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

    def window_sources(self, windows: np.ndarray) -> list[tuple[list[dict], np.ndarray]]:
        """(windows, K, H, W, 3) sampled frames -> each window's sound sources: detected in sources.frames of its K
        frames (evenly spread), each box cropped and CLIP-embedded, tracked across those frames
        (foley.pipeline.sources)."""
        chosen = np.unique(np.linspace(0, windows.shape[1] - 1, self.config.sources.frames).round().astype(int))
        frames = windows[:, chosen].reshape(-1, *windows.shape[2:])
        detections = [
            found
            for first in range(0, len(frames), self.resources.max_forward_batch)
            for found in self.detector.detect(frames[first : first + self.resources.max_forward_batch])
        ]
        crops = [
            self.crop(frame, detection.box)
            for frame, found in zip(frames, detections, strict=True)
            for detection in found
        ]
        crop_embeddings = iter(self.embed_crops(crops))
        per_frame = [[(detection, next(crop_embeddings)) for detection in found] for found in detections]
        return [
            track_sources(per_frame[window * len(chosen) : (window + 1) * len(chosen)], self.config.sources)
            for window in range(len(windows))
        ]

    def crop(self, frame: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
        """A box of a frame, scaled to CLIP's square input (a box of any shape fills it, as SSV2A crops)."""
        height, width = frame.shape[:2]
        x0, x1 = sorted((min(int(box[0] * width), width - 1), max(int(round(box[2] * width)), 1)))
        y0, y1 = sorted((min(int(box[1] * height), height - 1), max(int(round(box[3] * height)), 1)))
        pixels = torch.from_numpy(np.ascontiguousarray(frame[y0 : max(y1, y0 + 1), x0 : max(x1, x0 + 1)]))
        size = self.clip.image_size
        resized = F.interpolate(pixels.permute(2, 0, 1)[None].float(), size=(size, size), mode="bilinear")
        return resized[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()

    def embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        step = self.resources.max_forward_batch
        embedded = [
            self.clip.embed_frames(np.stack(crops[first : first + step])).cpu().numpy()
            for first in range(0, len(crops), step)
        ]
        return np.concatenate(embedded).astype(np.float32) if embedded else np.zeros((0, 0), np.float32)

    def keep_posters(self, row: dict, frames: list[np.ndarray], boxes: list[list] | None = None) -> None:
        if frames and str(row["report_uri"]):
            strip = poster_strip(frames, self.config.report, boxes)
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
        sources = self.window_sources(image[:, None]) if self.detector else []
        self.keep_posters(row, [image[0]], [[note["box"] for note in sources[0][0]]] if sources else None)
        learned = self.config.window.aggregator == "learned"  # every sampled frame is the image

        def columns(wanted: list[Window]) -> dict:
            frames = np.tile(embedding[None], (len(wanted), window.frames, 1)) if learned else None
            return self.window_columns(np.repeat(embedding, len(wanted), axis=0), sources * len(wanted), wanted, frames)

        return self.segment_rows(row, windows, columns)

    def segment_rows(self, row: dict, windows: list[Window], embed: Callable[[list[Window]], dict]) -> list[dict]:
        """One row per segment an earlier run has not staged yet, with its windows' CLIP embeddings (`embed` makes
        them, and any other per-window columns, for only those windows); a video short enough is one segment."""
        ranges, size = segment_ranges(len(windows), self.segment_windows), self.segment_windows or 0
        staged = SegmentStaging(self.storage, str(row["staging_uri"]), ranges).staged() if ranges[1:] else set()
        todo = [index for index in range(len(ranges)) if index not in staged]
        wanted = [window for index in todo for window in windows[slice(*ranges[index])]]
        columns = embed(wanted) if wanted else {}
        segments, taken = [], 0
        for index in todo:
            first, end = ranges[index]
            segment = dict(row, segment=index, segment_count=len(ranges), segment_windows=size, first_window=first)
            for name, values in columns.items():
                part = values[taken : taken + end - first]
                segment[name] = "[" + ",".join(part) + "]" if name == "window_sources" else part
            taken += end - first
            segments.append(segment)
        # Every segment staged by an earlier run: one row without windows lets the last stage publish the video.
        return segments or [
            dict(row, segment=ASSEMBLE_ONLY, segment_count=len(ranges), segment_windows=size, first_window=0)
        ]

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

    def decode_window_frames(self, path: Path, info: VideoInfo, windows: list[Window]) -> Iterator[np.ndarray]:
        """The K sampled frames of each window, upright, for as many whole windows at a time as max_forward_batch
        allows.

        torchcodec returns the frame on screen at each sample moment, found by the frames' own timestamps (so a
        variable-frame-rate video is sampled at the right moments), turned as it is displayed. By default it decodes
        only those frames, scaled in the decoder; decode.frames=all and decode.size=native are the slow ways, kept
        switchable so the benchmark can measure the difference.
        """
        with self.seekable_decoder(path, info) as decoder:
            yield from self.decode_with(decoder, info, windows)

    @contextlib.contextmanager
    def seekable_decoder(self, path: Path, info: VideoInfo):
        """A decoder that can seek to the video's first frame: of the file itself, or, where torchcodec cannot seek
        in it (MPEG-TS with B-frames, whose first frame is shown after it is decoded), of a copy of its video
        stream in Matroska with every timestamp kept, made in this node's cache and removed after."""
        decoder = self.open_decoder(path, info)
        try:
            decoder.get_frames_played_at([decoder.metadata.begin_stream_seconds or 0.0])
        except (RuntimeError, ValueError, IndexError):
            copy = temporary_sibling(self.storage.cache_dir / SEEKABLE_COPIES / f"{path.stem}.mkv")
            try:
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy_video_stream(path, copy, info.video_index)
                yield self.open_decoder(copy, info)
            finally:
                copy.unlink(missing_ok=True)
            return
        yield decoder

    def decode_with(self, decoder, info: VideoInfo, windows: list[Window]) -> Iterator[np.ndarray]:
        begin = decoder.metadata.begin_stream_seconds or 0.0
        end = decoder.metadata.end_stream_seconds or begin + info.duration_s
        last_moment = np.nextafter(end, begin)  # the last frame plays until `end`, exclusive
        per_window = self.config.window.frames
        windows_per_forward = max(1, self.resources.max_forward_batch // per_window)
        for first in range(0, len(windows), windows_per_forward):
            group = windows[first : first + windows_per_forward]
            relative = [t for window in group for t in sample_times(window.start_s, window.end_s, per_window)]
            moments = np.clip(begin + np.asarray(relative) + ON_A_FRAMES_START_S, begin, last_moment).tolist()
            try:
                if self.config.decode.frames == "all":  # every frame of the span, then the sampled ones
                    stop = min(max(moments) + ON_A_FRAMES_START_S, end)  # the last sampled frame included
                    span = decoder.get_frames_played_in_range(min(moments), stop)
                    on_screen = np.searchsorted(span.pts_seconds.numpy(), moments, side="right") - 1
                    frames = span.data.cpu().numpy()[np.clip(on_screen, 0, len(span.pts_seconds) - 1)]
                else:
                    frames = decoder.get_frames_played_at(moments).data.cpu().numpy()
            except (RuntimeError, ValueError, IndexError) as exc:
                raise MediaError(
                    f"its {info.video_codec} video stream could not be decoded ({first_line(exc)}); the file may be "
                    "truncated or corrupt"
                ) from None
            yield frames

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

    def open_decoder(self, path: Path, info: VideoInfo):
        """A torchcodec decoder (the system's FFmpeg); with decode.size=clip it scales in the decoder so the short
        side is CLIP's input size, in the orientation displayed (torchcodec turns the frames before scaling)."""
        from torchcodec.decoders import VideoDecoder  # noqa: PLC0415 - its ops pull in torch._dynamo, ~3 s the driver need not pay
        from torchcodec.transforms import Resize  # noqa: PLC0415 - as above

        transforms = []
        if self.config.decode.size == "clip":
            size = self.clip.image_size
            scale = size / min(info.width, info.height)
            transforms = [Resize((max(size, round(info.height * scale)), max(size, round(info.width * scale))))]
        try:
            decoder = VideoDecoder(
                str(path),
                dimension_order="NHWC",
                num_ffmpeg_threads=self.resources.threads(),
                transforms=transforms,
                device=self.decode_device,
            )
        except (RuntimeError, ValueError) as exc:
            raise MediaError(
                f"its {info.video_codec} video stream cannot be read ({first_line(exc)}); re-encode it (e.g. to "
                "H.264) or check that the file is complete"
            ) from None
        if not decoder.metadata.num_frames:
            raise MediaError("its video stream holds no decodable frames; check that the file is complete")
        return decoder


def decoder_identity(device: torch.device) -> str:
    """torchcodec's version and the FFmpeg libraries it loaded, e.g. 'torchcodec 0.17.0, FFmpeg 5.1.9 ...', and
    NVDEC where it decodes on the GPU (FFmpeg then parses the container, the GPU decodes)."""
    import torchcodec  # noqa: PLC0415 - loaded with the decoder (open_decoder)
    from torchcodec._core import get_ffmpeg_library_versions  # noqa: PLC0415 - the only place it reports them

    versions = get_ffmpeg_library_versions()
    codec = ".".join(map(str, versions["libavcodec"]))
    where = ", NVDEC on the GPU" if device.type == "cuda" else ""
    return (
        f"torchcodec {torchcodec.__version__.split('+')[0]}, FFmpeg {versions['ffmpeg_version']} (libavcodec {codec})"
        + where
    )


def record_windows(row: dict, windows: list[Window]) -> None:
    row["windows"] = json.dumps([window.as_dict() for window in windows])
    row["n_windows"] = len(windows)
