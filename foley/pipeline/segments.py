"""Long videos travel as segments: runs of consecutive windows that go through the model stages as rows of their
own, so one film's windows spread over every actor.

The last stage stages each finished segment under `<output>/_foley/segments/<result id>/` (the waveforms and what made
them); the segment that completes the set claims the video (an exclusive create, so exactly one of several racing
actors wins), assembles the track from the staged segments and publishes it; the staging is removed once the
video's manifest row is written. A killed job keeps its staged segments, so its re-run makes only the missing
ones. Staging belongs to one result id: other settings or models never mix their segments in. A staged segment is
named by the windows it holds, so a re-run cut into segments of another size reuses exactly the segments whose
windows match and never mistakes one for another.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from foley.pipeline.layout import SEGMENTS_DIR
from foley.storage.store import Storage
from foley.storage.uris import is_s3, join

CLAIM_NAME = "publish.claim"
ASSEMBLE_ONLY = -1  # the segment index of a row that carries no windows: every segment is staged already
_NAME = re.compile(r"windows-(\d{6})-to-(\d{6})\.npz$")  # [first, end) of the video's windows


def segment_ranges(n_windows: int, segment_windows: int | None) -> list[tuple[int, int]]:
    """[first, end) window ranges of a video's segments; one segment when `segment_windows` is None."""
    size = segment_windows or max(n_windows, 1)
    return [(first, min(first + size, n_windows)) for first in range(0, max(n_windows, 1), size)]


class SegmentStaging:
    """The staged segments of one video (one result id), cut into the [first, end) window `ranges`."""

    def __init__(self, storage: Storage, staging_uri: str, ranges: list[tuple[int, int]]):
        self.storage, self.root, self.ranges = storage, staging_uri, ranges

    @property
    def count(self) -> int:
        return len(self.ranges)

    def uri(self, index: int) -> str:
        first, end = self.ranges[index]
        return join(self.root, f"windows-{first:06d}-to-{end:06d}.npz")

    def staged(self) -> set[int]:
        """Indices of this segmentation's segments that are staged; files of other windows are ignored."""
        found = (_NAME.search(uri) for uri in self.storage.list_prefix(self.root + "/"))
        ranges = {(int(m.group(1)), int(m.group(2))) for m in found if m}
        return {index for index, window_range in enumerate(self.ranges) if window_range in ranges}

    def stage(self, index: int, waveforms: np.ndarray, info: dict) -> None:
        buffer = io.BytesIO()
        np.savez(buffer, waveforms=np.asarray(waveforms, dtype=np.float32), info=np.array(json.dumps(info)))
        self.storage.write_bytes(self.uri(index), buffer.getvalue())

    def load(self, index: int) -> tuple[np.ndarray, dict]:
        with np.load(io.BytesIO(self.storage.read_bytes(self.uri(index)))) as archive:
            return archive["waveforms"], json.loads(str(archive["info"]))

    def claim(self, token: str) -> bool:
        """True for exactly one claimant of the video's publication: the first to create the claim, or that same
        claimant again (a retried batch on a new actor)."""
        uri = join(self.root, CLAIM_NAME)
        return self.storage.create_exclusive(uri, token.encode()) or self.storage.read_bytes(uri) == token.encode()

    def remove(self) -> None:
        for uri in self.storage.list_prefix(self.root + "/"):
            self.storage.delete(uri)
        if not is_s3(self.root):  # a local folder stays behind, empty, unless removed too
            with contextlib.suppress(OSError):
                Path(self.root).rmdir()


def clear_stale_staging(storage: Storage, output_root: str, keep: set[str]) -> int:
    """Before a run: drop every claim (the job that made it is gone) and the staging of results no input of this run
    has (other settings, models or inputs). Returns how many staged segments were removed."""
    removed = 0
    for uri in storage.list_prefix(join(output_root, SEGMENTS_DIR) + "/"):
        result = uri.rsplit("/", 2)[-2]
        if uri.endswith("/" + CLAIM_NAME) or result not in keep:
            storage.delete(uri)
            removed += not uri.endswith("/" + CLAIM_NAME)
    return removed


def segment_rows(
    storage: Storage, row: dict, windows: list, segment_windows: int | None, embed: Callable[[list], dict]
) -> list[dict]:
    """The decode stage's fan-out: one row per segment an earlier run has not staged yet, with its windows'
    columns (`embed` makes them, for only those windows: CLIP embeddings and any other per-window columns); a
    video short enough is one segment, and one whose every segment is staged is one row without windows."""
    ranges, size = segment_ranges(len(windows), segment_windows), segment_windows or 0
    staged = SegmentStaging(storage, row["staging_uri"], ranges).staged() if ranges[1:] else set()
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
