"""WebDataset tar shards as inputs: each sample (the members that share a key) with a video member is
an input of its own, read where the shard lies.

A sample's key is its member name up to the first dot of the file name, as the `webdataset` library groups
members (`000123.mp4`, `000123.txt`, `000123.json` are one sample). A sample's input is addressed as
`<shard URI>#<member name>`; its identity holds the shard's content identity, the member's name and its byte
range, so a changed shard changes every sample's identity and a stage reads just that range (a seek locally, a
ranged GET on S3), never the whole shard. Listing reads the shard's headers only (a seek per member locally, one
streamed read on S3), and the captions its samples need.
"""

from __future__ import annotations

import copy
import io
import json
import posixpath
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

MEMBER_IDENTITY = "tar-member:"  # how a sample's identity starts: what tells a member from a file named `a#b.mp4`


@dataclass(frozen=True)
class Member:
    name: str
    offset: int  # of its data in the shard
    size: int


def sample_key(name: str) -> str:
    """The sample a member belongs to, as webdataset reads it: its folder in the tar and its file name up to the
    first dot (`clips/000123.left.mp4` -> `clips/000123`)."""
    folder, base = posixpath.split(name)
    return posixpath.join(folder, base.split(".", 1)[0])


def member_identity(shard_identity: str, member: Member) -> str:
    return MEMBER_IDENTITY + json.dumps([shard_identity, member.name, member.offset, member.size])


def member_of(uri: str, identity: str) -> tuple[str, Member] | None:
    """(the shard's URI, the member) of a sample's input, or None for a plain file or object."""
    if not identity.startswith(MEMBER_IDENTITY):
        return None
    _, name, offset, size = json.loads(identity[len(MEMBER_IDENTITY) :])
    return uri[: -len(name) - 1], Member(name, offset, size)


@dataclass(frozen=True)
class ShardIndex:
    """A shard's regular members in order, and the content of the captions asked for."""

    members: list[Member]
    captions: dict[str, bytes]


def read_index(stream: BinaryIO, wanted: Callable[[str], bool], seekable: bool) -> ShardIndex:
    """The index of a tar read from `stream`: by seeking from header to header when it can, else in one pass."""
    members, captions = [], {}
    with tarfile.open(fileobj=stream, mode="r:" if seekable else "r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            members.append(Member(info.name, info.offset_data, info.size))
            if wanted(info.name):
                captions[info.name] = tar.extractfile(info).read()
    return ShardIndex(members, captions)


def samples(index: ShardIndex) -> Iterator[list[Member]]:
    """The shard's samples: runs of consecutive members with one key."""
    group: list[Member] = []
    for member in index.members:
        if group and sample_key(group[0].name) != sample_key(member.name):
            yield group
            group = []
        group.append(member)
    if group:
        yield group


class CaptionError(ValueError):
    """A caption member that is there but cannot be read as the prompt (`input.prompt_from`)."""


def caption(index: ShardIndex, key: str, prompt_from: str) -> str:
    """The sample's prompt from its caption member ('' when it has none: the job's prompt applies)."""
    if prompt_from == "txt":
        text = index.captions.get(f"{key}.txt")
        return _text(text, f"{key}.txt").strip() if text is not None else ""
    if prompt_from.startswith("json:"):
        field, raw = prompt_from.removeprefix("json:"), index.captions.get(f"{key}.json")
        if raw is None:
            return ""
        try:
            document = json.loads(_text(raw, f"{key}.json"))
        except json.JSONDecodeError as exc:
            raise CaptionError(f"its member {key}.json is not JSON ({exc.msg} at line {exc.lineno})") from None
        value = document.get(field) if isinstance(document, dict) else None
        if value is not None and not isinstance(value, str):
            raise CaptionError(f"its member {key}.json has a '{field}' that is not text ({type(value).__name__})")
        return (value or "").strip()
    return ""


def _text(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise CaptionError(f"its member {name} is not UTF-8 text") from None


def caption_names(prompt_from: str) -> Callable[[str], bool]:
    """Which members listing reads for their content: the caption members `prompt_from` names."""
    suffix = {"txt": ".txt"}.get(prompt_from, ".json" if prompt_from.startswith("json:") else None)
    return (lambda name: name.endswith(suffix)) if suffix else (lambda name: False)


def read_range(path: Path, member: Member) -> bytes:
    with open(path, "rb") as shard:
        shard.seek(member.offset)
        return shard.read(member.size)


def rewrite(
    source: BinaryIO,
    target: Path,
    replaced: dict[str, str],
    added: dict[str, tuple[str, str]],
    read: Callable[[str], bytes],
) -> list[str]:
    """Write the tar read from `source` to `target`: every member in order and byte for byte, except that a member
    named in `replaced` gets the content `read` gives for its URI (under its own name), and each member named in
    `added` ((name, URI) of a new member) is followed by that new member once the rest of its sample is copied.
    One new member is in memory at a time. Returns the names written, in order."""
    written: list[str] = []
    pending: dict[str, tuple[str, str, tarfile.TarInfo]] = {}  # by key: the member to add after that sample

    with tarfile.open(fileobj=source, mode="r|") as reading, tarfile.open(target, "w") as writing:

        def add_pending(unless: str | None) -> None:
            for key in [key for key in pending if key != unless]:
                name, uri, template = pending.pop(key)
                data = read(uri)
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), template.mtime, template.mode
                info.uid, info.gid, info.uname, info.gname = template.uid, template.gid, template.uname, template.gname
                writing.addfile(info, io.BytesIO(data))
                written.append(name)

        for info in reading:
            key = sample_key(info.name)
            add_pending(unless=key)
            if info.isfile() and info.name in replaced:
                data = read(replaced[info.name])
                header = copy.copy(info)  # its name, times and owner, with the new content's size
                header.size = len(data)
                writing.addfile(header, io.BytesIO(data))
            else:
                writing.addfile(info, reading.extractfile(info) if info.isfile() else None)
            written.append(info.name)
            if info.isfile() and info.name in added:
                pending[key] = (*added[info.name], info)
        add_pending(unless=None)
    return written
