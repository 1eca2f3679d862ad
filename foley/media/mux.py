"""Muxing a generated track into a copy of the input video (ffmpeg through ffmpeg-python, never a shell).

Nothing is lost: the output keeps every stream of the input except the audio the generated track replaces,
with its chapters, metadata, dispositions and rotation. What the output container cannot hold is converted where
ffmpeg can (text subtitles), else left out, and either way said in the notes `mux_track` returns.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import ffmpeg
import numpy as np

from foley.media.probe import MediaError, StreamInfo, VideoInfo, ffmpeg_reason, probe
from foley.media.verify import OUT_OF_SPACE, Planned, check_written, out_of_space

# The mix of the original and the generated track goes through a limiter with this ceiling, a little under full
# scale, for the overshoot a lossy encoder adds when the mix is decoded again (about 0.5 dB with Opus; ffmpeg's own
# AAC encoder can add more to loud tonal sound, as it does to the original's).
MIX_CEILING_DBFS = -1.0

TEXT_SUBTITLES = frozenset({"subrip", "srt", "ass", "ssa", "webvtt", "mov_text", "text"})
TEXT_SUBTITLES_IN_MATROSKA = frozenset({"subrip", "text", "ass", "ssa", "webvtt"})
IMAGE_SUBTITLES_IN_MATROSKA = frozenset({"dvd_subtitle", "hdmv_pgs_subtitle", "dvb_subtitle"})


@dataclass(frozen=True)
class Container:
    """What an output container holds with ffmpeg 5.1's muxer, per kind of stream; None means any codec."""

    video: frozenset[str] | None = None
    audio: frozenset[str] | None = None
    subtitles: frozenset[str] | None = frozenset()
    text_subtitles_as: str | None = None  # encoder for text subtitles it cannot hold as they are
    cover_art: bool = False  # attached pictures (one-frame video streams)
    attachments: bool = False  # e.g. the fonts of styled subtitles
    display_matrix: bool = False  # the rotation of a video stream
    rewritten_data: frozenset[str] = frozenset()  # tags of data tracks the muxer writes again (see _rewritten)


# Read from ffmpeg 5.1's muxers: WebM takes only VP8/VP9/AV1, Opus/Vorbis and WebVTT; mov/mp4 take mov_text
# subtitles and cannot copy their own timecode (tmcd) and chapter (text) tracks, but write them again; .m4v (the
# ipod muxer) and .3gp are mov with a short codec list; Matroska takes no data streams and, in 5.1, no display
# matrix; AVI takes neither subtitles nor attachments; MPEG-TS (.ts .mts .m2ts) takes only DVB subtitles and
# MPEG-PS (.mpg .mpeg) only DVD ones, neither a rotation nor attachments.
_MOV = Container(
    subtitles=frozenset({"mov_text"}),
    text_subtitles_as="mov_text",
    cover_art=True,
    display_matrix=True,
    rewritten_data=frozenset({"tmcd", "text"}),
)
_MPEG_TS = Container(
    video=frozenset({"h264", "hevc", "mpeg1video", "mpeg2video", "mpeg4", "vc1"}),
    audio=frozenset({"aac", "mp2", "mp3", "ac3", "eac3", "opus"}),
    subtitles=frozenset({"dvb_subtitle", "dvb_teletext"}),
)
_MPEG_PS = Container(
    video=frozenset({"mpeg1video", "mpeg2video", "h264"}),
    audio=frozenset({"mp2", "mp3", "ac3"}),
    subtitles=frozenset({"dvd_subtitle"}),
)
MOV_FAMILY = (".mp4", ".mov", ".m4v", ".3gp")  # ISO media files: faststart, and a track's name as its handler
CONTAINERS = {
    ".mp4": _MOV,
    ".mov": _MOV,
    ".m4v": replace(_MOV, video=frozenset({"h264", "mpeg4"}), audio=frozenset({"aac", "alac", "ac3"})),
    ".3gp": replace(_MOV, video=frozenset({"h263", "h264", "mpeg4"}), audio=frozenset({"aac", "amr_nb", "amr_wb"})),
    ".ts": _MPEG_TS,
    ".mts": _MPEG_TS,
    ".m2ts": _MPEG_TS,
    ".mpg": _MPEG_PS,
    ".mpeg": _MPEG_PS,
    ".mkv": Container(
        subtitles=TEXT_SUBTITLES_IN_MATROSKA | IMAGE_SUBTITLES_IN_MATROSKA,
        text_subtitles_as="srt",
        cover_art=True,
        attachments=True,
    ),
    ".webm": Container(
        video=frozenset({"vp8", "vp9", "av1"}),
        audio=frozenset({"opus", "vorbis"}),
        subtitles=frozenset({"webvtt"}),
        text_subtitles_as="webvtt",
    ),
    ".avi": Container(),
}
CONSERVATIVE = Container()  # for an extension not in the table: video and audio only, every other drop noted


def mux_track(
    video_path: Path,
    track: np.ndarray,
    sample_rate: int,
    output_path: Path,
    audio_codec: str,
    audio_bitrate: str,
    output_sample_rate: int,
    *,
    language: str,
    title: str,
    mix_under_original_db: float | None = None,
    video_codec: str = "copy",
    alternates: Sequence[tuple[np.ndarray, str]] = (),
) -> list[str]:
    """Write `output_path`: the input with `track` (mono) as its default audio stream; returns the notes.

    The video streams are copied bit for bit unless `video_codec` names an encoder (attached pictures are always
    copied). Without `mix_under_original_db` every original audio stream is dropped (replaced). With it, the
    original's first audio stream becomes the mix of itself and the generated track at that gain, in the
    original's channel layout (the mono track is upmixed to it) and under a limiter so it cannot clip; the other
    original audio streams are kept as they are. The mix lasts exactly as long as the generated track.
    `alternates` are (track, title) pairs of other generated tracks as long as `track`, added right after it as
    tracks that are not the default (never mixed: an editor compares them with each other).
    """
    info = probe(video_path, measure_audio=False)
    suffix = output_path.suffix.lower()
    container = CONTAINERS.get(suffix, CONSERVATIVE)
    source = ffmpeg.input(str(video_path.resolve()))
    # Every generated track arrives on stdin as one channel of one stream, and is split off it again.
    piped = ffmpeg.input("pipe:", format="f32le", ac=1 + len(alternates), ar=sample_rate).audio
    generated, alternate_streams = piped, []
    if alternates:
        copies = piped.filter_multi_output("asplit", 1 + len(alternates))
        generated, *alternate_streams = [
            copies[channel].filter("channelmap", map=str(channel), channel_layout="mono")
            for channel in range(1 + len(alternates))
        ]
    first_audio = next((stream for stream in info.streams if stream.kind == "audio"), None)
    mixing = mix_under_original_db is not None and first_audio is not None

    notes: list[str] = []
    outputs: list = []  # ffmpeg-python streams, in output order
    kinds: list[str] = []  # each one's kind, what a reader must find in the file
    durations: dict[int, float] = {}  # how long the ones of known length must run
    options: list[str] = []  # options for each of them, by output stream index

    def add(stream, kind: str, codec: str, metadata: Sequence[str] = (), seconds: float | None = None, **per_stream):
        index = len(outputs)
        outputs.append(stream)
        kinds.append(kind)
        if seconds is not None:
            durations[index] = seconds
        options.extend([f"-c:{index}", codec])
        for name, value in per_stream.items():
            options.extend([f"-{name}:{index}", str(value)])
        for item in metadata:
            options.extend([f"-metadata:s:{index}", item])

    for stream in info.streams:  # the video streams first, as in nearly every input
        if stream.kind == "video":
            codec = _video_codec(stream, container, video_codec, suffix, notes)
            if codec is not None:
                main_picture = not stream.attached_pic and "video" not in kinds
                add(source[str(stream.index)], "video", codec, seconds=info.duration_s if main_picture else None)

    encoded = {"b": audio_bitrate, "ar": output_sample_rate, "disposition": "default"}
    seconds = len(track) / sample_rate
    if mixing:
        names = track_names(first_audio.language or language, title, suffix)  # the mix still speaks its language
        mixed = _mix(source, generated, first_audio, mix_under_original_db, output_sample_rate)
        add(mixed, "audio", audio_codec, names, seconds, **encoded)
    else:
        add(generated, "audio", audio_codec, track_names(language, title, suffix), seconds, ac=1, **encoded)
    for stream, (_, alternate_title) in zip(alternate_streams, alternates, strict=True):
        add(
            stream,
            "audio",
            audio_codec,
            track_names(language, alternate_title, suffix),
            seconds,
            ac=1,
            **(encoded | {"disposition": "0"}),
        )

    for stream in info.streams:
        replaced = stream.kind == "audio" and (not mixing or stream is first_audio)  # by the track, or in the mix
        if stream.kind == "video" or replaced:
            continue
        codec = _kept_codec(stream, info, container, suffix, notes)
        if codec is not None:
            # A kept original audio stream stops being the default (its other flags stay): the generated one is.
            kept = {"disposition": "-default"} if stream.kind == "audio" else {}
            add(source[str(stream.index)], stream.kind, codec, **kept)

    if suffix in MOV_FAMILY:
        options.extend(["-movflags", "+faststart"])
    command = ffmpeg.output(*outputs, str(output_path.resolve()))
    piped_tracks = np.stack([track, *(alternate for alternate, _ in alternates)], axis=1) if alternates else track
    planned = Planned(tuple(kinds), durations, frame_s=1 / info.fps if info.fps else 0.0)
    _run(command, video_path.resolve(), output_path.resolve(), options, piped_tracks, planned)
    return notes


def _video_codec(stream: StreamInfo, container: Container, video_codec: str, suffix: str, notes: list[str]):
    """The codec for a video stream in the output, or None (and a note) for cover art the container cannot hold."""
    if stream.attached_pic:
        if container.cover_art:
            return "copy"
        notes.append(f"dropped attached picture stream {stream.index} ({stream.codec}): {suffix} cannot hold it")
        return None
    if video_codec == "copy":
        if container.video is not None and stream.codec not in container.video:
            raise MediaError(
                f"its video stream {stream.index} is {stream.codec}, which a {suffix} file cannot hold "
                f"(only {', '.join(sorted(container.video))}); give the file the extension of its real format "
                "or set output.video_codec to an encoder this container takes"
            )
        if stream.rotation and not container.display_matrix:
            notes.append(
                f"video stream {stream.index} loses its {stream.rotation} degree rotation: {suffix} cannot hold it"
            )
    return video_codec  # a re-encode turns the frames upright itself (ffmpeg's autorotate)


def _kept_codec(stream: StreamInfo, info: VideoInfo, container: Container, suffix: str, notes: list[str]):
    """The codec for a kept audio, subtitle, data or attachment stream: "copy", a conversion, or None (noted)."""
    # A data stream's tag says what it is (gpmd: GoPro telemetry), where its codec is only "bin_data".
    telling_tag = stream.kind == "data" and stream.tag.isalnum() and stream.tag != stream.codec
    what = f"{stream.kind} stream {stream.index} ({stream.codec}{f' {stream.tag}' if telling_tag else ''})"
    if stream.kind == "audio" and (container.audio is None or stream.codec in container.audio):
        return "copy"
    if stream.kind == "subtitle":
        if container.subtitles is None or stream.codec in container.subtitles:
            return "copy"
        if container.text_subtitles_as and stream.codec in TEXT_SUBTITLES:
            notes.append(f"converted {what} to {container.text_subtitles_as}: {suffix} holds no {stream.codec}")
            return container.text_subtitles_as
    if stream.kind == "attachment" and container.attachments:
        return "copy"
    if stream.kind == "data" and stream.tag in container.rewritten_data and _rewritten(stream, info):
        return None  # the muxer writes this track again from what it came from: nothing is lost
    notes.append(f"dropped {what}: {suffix} cannot hold it")
    return None


def _rewritten(stream: StreamInfo, info: VideoInfo) -> bool:
    """mov/mp4 keep a timecode as a tmcd track and chapters as a text track; ffmpeg lists both as data streams
    but cannot copy them, and writes them again from the video's timecode tag and the chapters it keeps."""
    if stream.tag == "tmcd":
        return any(other.timecode for other in info.streams if other.kind == "video")
    return info.chapters > 0  # "text": the chapter track


def _mix(source, generated, original: StreamInfo, gain_db: float, sample_rate: int):
    """The original audio stream with the generated track under it, in the original's channel layout.

    amix sums the two at full gain (normalize=0, so the original keeps its level); alimiter, a look-ahead limiter
    with its automatic level-up off, then lowers only the peaks the sum pushed over MIX_CEILING_DBFS, so the mix
    cannot clip. Both inputs are brought to one layout and rate first, or ffmpeg would pick the mono one.
    """
    layout = original.channel_layout or f"{original.channels}c"
    shape = {"sample_rates": sample_rate, "channel_layouts": layout}
    under = generated.filter("volume", f"{gain_db}dB").filter("aformat", **shape)  # mono upmixed to the layout
    kept = source[str(original.index)].filter("aformat", **shape)
    mixed = ffmpeg.filter([under, kept], "amix", inputs=2, duration="first", normalize=0)
    return mixed.filter("alimiter", limit=10 ** (MIX_CEILING_DBFS / 20), level=0, latency=1)


def track_names(language: str, title: str, suffix: str) -> list[str]:
    """Language and title tags; mov/mp4 keep a track's name as its handler name, not as a title tag."""
    names = [f"language={language}", f"title={title}"]
    if suffix in MOV_FAMILY:
        names.append(f"handler_name={title}")
    return names


def _run(
    command, source_path: Path, output_path: Path, options: list[str], track: np.ndarray, planned: Planned
) -> None:
    """Run the ffmpeg-python command with `options` added, `track` on stdin; chapters and global metadata come
    from the input file, found by its position."""
    args = ffmpeg.compile(command, overwrite_output=True)
    inputs = [args[position + 1] for position, arg in enumerate(args) if arg == "-i"]
    source = str(inputs.index(str(source_path)))
    options = [*options, "-map_metadata", source, "-map_chapters", source]
    run_with_track(args, output_path, options, track, "muxing", planned)


def run_with_track(
    args: list[str], output_path: Path, options: list[str], track: np.ndarray, action: str, planned: Planned
) -> None:
    """Run ffmpeg's compiled `args` with `options` added before the output file and `track` (mono float32) on
    stdin, where a "pipe:" input in f32le reads it; a failure is a MediaError saying "`action` failed" and why.
    The file written is then checked as a reader would check it (foley.media.verify): ffmpeg can exit 0 on a
    full disk and leave a file that does not play.

    ffmpeg-python passes an option once per name, and these repeat (-metadata:s:2 twice), so they are added to
    the argument list it compiles.
    """
    at = args.index(str(output_path))
    args = [*args[:at], *options, *args[at:]]
    samples = memoryview(np.ascontiguousarray(track, dtype="<f4"))  # the track itself, not a copy of its bytes
    result = subprocess.run(args, input=samples.cast("B"), capture_output=True)
    log = result.stderr.decode(errors="replace")
    if result.returncode != 0:
        reason = ffmpeg_reason(ffmpeg.Error("ffmpeg", result.stdout, result.stderr))
        if OUT_OF_SPACE in log:
            raise out_of_space(output_path, f"{action} failed (ffmpeg: {OUT_OF_SPACE})")
        raise MediaError(f"{action} failed (ffmpeg: {reason})")
    check_written(output_path, planned, log)


def copy_video_stream(source: Path, target: Path, stream_index: int) -> None:
    """Copy one video stream, packets and timestamps untouched, into a Matroska file (`target`, .mkv): what a
    decoder that cannot seek in the source's container (MPEG-TS whose first frame is shown after it is decoded, as
    in all broadcast TS with B-frames) can seek in."""
    command = ffmpeg.input(str(source.resolve()), copyts=None).output(
        str(target.resolve()), map=f"0:{stream_index}", c="copy", f="matroska"
    )
    try:
        command.run(overwrite_output=True, capture_stdout=True, capture_stderr=True)
    except ffmpeg.Error as exc:
        raise MediaError(f"its video stream could not be copied for decoding (ffmpeg: {ffmpeg_reason(exc)})") from None
    check_written(target, Planned(("video",)))
