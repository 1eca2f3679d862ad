"""The libraries that session-shared runs dub (conftest.py's fixtures), and what each input of them must become."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path

from foley.media.render import render_test_video

# The mixed library: ok, failed and skipped inputs together, dubbed with sound sources and sound files beside the
# videos. The report test reads its page; the failures test reads its rows.
STREET = "street #2?.webm"  # two windows; a '#' or '?' left as it is in a link would cut the name there
ODD_NAME = "clip; touch PWNED; $(touch PWNED2).mp4"  # a shell would run this; an argument list does not
INPUT_LIMITS = ["input.max_width=400", "input.max_duration_s=20"]  # what make_bad_inputs's errors assume
MIXED_SETTINGS = [
    *INPUT_LIMITS,
    "output.mode=both",
    "sources.mode=zero_shot",  # the tiny random detector's boxes: random places, real plumbing
]
MIXED_OK = (STREET, "good.mp4", ODD_NAME, "av1.mkv")
MIXED_SKIPPED = ("has-sound.mp4",)  # it has sound already


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, capture_output=True)


def make_bad_inputs(folder: Path) -> dict[str, str]:
    """Damaged and unusable inputs: input name -> the words its manifest error must contain (with INPUT_LIMITS)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.mp4").write_bytes(b"")
    (folder / "notes.mp4").write_text("meeting notes, not a video\n" * 20)
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    whole = render_test_video(folder / "whole.tmp.mp4", 6.0, 320, 240, 25).read_bytes()
    (folder / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    (folder / "whole.tmp.mp4").unlink()
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:duration=3", "-c:a", "aac", str(folder / "audio_only.mp4"))
    render_test_video(folder / "too_wide.mp4", 2.0, 640, 360, 25)
    render_test_video(folder / "too_long.mp4", 25.0, 160, 120, 10)
    return {
        "empty.mp4": "empty (0 bytes)",
        "notes.mp4": "not a readable video",
        "broken.mp4": "not a readable video",
        "truncated.mp4": "not a readable video",
        "audio_only.mp4": "has no video stream (streams found: audio)",
        "too_wide.mp4": "640x360, over input.max_width",
        "too_long.mp4": "25.0 s long, over input.max_duration_s=20",
    }


def make_mixed_library(folder: Path) -> dict[str, str]:
    """The mixed library in `folder`; the bad inputs' expected errors."""
    expected_errors = make_bad_inputs(folder)
    render_test_video(folder / STREET, 12.0, 160, 96, 24)
    render_test_video(folder / "good.mp4", 3.0, 320, 240, 25)
    render_test_video(folder / ODD_NAME, 2.0, 160, 120, 25)
    av1 = ["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10:duration=2", "-c:v", "libaom-av1", "-cpu-used", "8"]
    ffmpeg(*av1, str(folder / "av1.mkv"))  # what most web video is today
    render_test_video(folder / "has-sound.mp4", 2.0, 160, 96, 24, with_audio=True)
    (folder / "notes.txt").write_text("not an input: counted as left out")
    return expected_errors


# A WebDataset dataset: two shards of samples (members that share a key), one sample with a broken video, one
# without any; dubbed with the captions of the .txt members as prompts and both outputs (a muxed video member and a
# sound member). The shards tests read it.
SHARD_A, SHARD_B = "part/shard-000000.tar", "part/shard-000001.tar"
SHARD_SETTINGS = ["output.mode=both", "input.prompt_from=txt"]
SHARD_OK = {f"{SHARD_A}#000000.mp4": "rain on a tin roof", f"{SHARD_A}#000001.mp4": None, f"{SHARD_B}#000010.mp4": None}
SHARD_BROKEN = f"{SHARD_A}#000002.mp4"


def clip_bytes(folder: Path, seconds: float) -> bytes:
    """A silent test clip's bytes, for a shard member."""
    path = render_test_video(folder / f"clip-{seconds:g}.tmp.mp4", seconds, 160, 96, 24)
    data = path.read_bytes()
    path.unlink()
    return data


def write_shard(path: Path, members: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    """A tar shard of these members, in order, as webdataset's writers make them; the members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as shard:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_700_000_000, 0o644
            shard.addfile(info, io.BytesIO(data))
    return members


def make_shard_dataset(folder: Path) -> dict[str, list[tuple[str, bytes]]]:
    """The two shards under `folder`; each shard's members, by relative path."""
    caption = json.dumps({"caption": "a dog barks", "id": 0}).encode()
    return {
        SHARD_A: write_shard(
            folder / SHARD_A,
            [
                ("000000.mp4", clip_bytes(folder, 3.0)),
                ("000000.txt", b"rain on a tin roof\n"),
                ("000000.json", caption),
                ("000001.mp4", clip_bytes(folder, 2.0)),
                ("000001.json", json.dumps({"caption": "waves"}).encode()),
                ("000002.mp4", b"not a video at all"),
                ("000002.txt", b"a broken clip"),
                ("000003.txt", b"a sample without a video"),
                ("000003.cls", b"7"),
            ],
        ),
        SHARD_B: write_shard(folder / SHARD_B, [("000010.mp4", clip_bytes(folder, 2.5)), ("000010.cls", b"3")]),
    }


def shard_members(shard: Path | bytes) -> list[tuple[str, bytes]]:
    """A shard's members (its file, or its bytes as read from S3) as a reader reads them: (name, content), in order."""
    with tarfile.open(shard) if isinstance(shard, Path) else tarfile.open(fileobj=io.BytesIO(shard)) as tar:
        return [(info.name, tar.extractfile(info).read()) for info in tar if info.isfile()]
