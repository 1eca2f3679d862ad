"""Which videos a job reads: every video under a folder or an s3:// prefix, one file or object, or the lines of a
.csv/.parquet list.

Each input gets its relative path, which names its output and seeds its noise, so the same library gives the same
outputs wherever it is listed from. In a list, a `relative_path` column gives each line's own; without one, the
paths below the deepest folder holding every line's video are used. A list's other columns (a CSV with a header
row, or Parquet) travel with each input: per-video settings such as a prompt (foley.pipeline.conditions).

What cannot be an input is said, never dropped without a word. A problem of one file or one list line (a broken
link, a cell that is no location) fails that input alone: its item carries the problem, and it becomes a failed row.
A problem of the whole list (not UTF-8, no 'uri' column, a column the job does not know) stops the job before it
starts. Files under the input whose extension the job does not take are counted by extension (`Listing.left_out`).

WebDataset shards (`.tar`, input.shard_extensions) under the input, or given as the input, are read for their
samples (foley.storage.shards): each sample with a video member is an input named `<shard>#<member>`, its
caption (input.prompt_from) its prompt; a shard that cannot be read fails as one input.

Links: each file under a folder is one input at its own relative path, a link as much as a file; its identity is
the content it points to, so two links to one file give two outputs. A link that is broken, loops, or points
outside the input folder fails its row; a link to a folder is not entered (it is counted as left out).
"""

from __future__ import annotations

import csv
import io
import os
import tarfile
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow.parquet as pq

from foley.storage.shards import (
    CaptionError,
    ShardIndex,
    caption,
    caption_names,
    member_identity,
    read_index,
    sample_key,
    samples,
)
from foley.storage.uris import StorageError, is_s3, local_identity, split_s3

LIST_SUFFIXES = (".csv", ".parquet")
URI_COLUMN = "uri"
RELATIVE_COLUMN = "relative_path"  # optional: each line's output path under the output root
FOLDER_LINK = "links to folders"  # what Listing.left_out calls the links to folders it did not enter
UNREADABLE = "folders that could not be read"  # ... and the folders it could not list (permissions)
NO_VIDEO = "shard samples without a video"  # ... and the samples of shards that hold no video or image member


@dataclass(frozen=True)
class InputItem:
    uri: str
    relative_path: str  # posix path under the output root, also the video's stable id
    identity: str = ""  # its content: "etag:<ETag>:size:<bytes>" on S3, "size:<bytes>:mtime:<ns>" locally
    columns: tuple[tuple[str, str], ...] = ()  # the list file's other non-empty cells of this input: (name, text)
    problem: str = ""  # why this file or list line cannot be an input; its row fails with this message
    shard: str = ""  # for a sample of a WebDataset shard: the shard's relative path (foley.storage.shards)


@dataclass(frozen=True)
class ShardReading:
    """How a job reads WebDataset shards: which files are shards, and where a sample's prompt comes from."""

    extensions: tuple[str, ...]
    videos: tuple[str, ...]  # the members that make a sample an input (its images travel with it, untouched)
    prompt_from: str = "none"  # none | txt | json:FIELD (input.prompt_from)


@dataclass(frozen=True)
class Listing:
    items: list[InputItem]
    left_out: dict[str, list[str]] = field(default_factory=dict)  # by extension: files under the input not taken
    shards: list[InputItem] = field(default_factory=list)  # the WebDataset shards whose samples are among the items

    def left_out_line(self, examples: int = 3) -> str:
        """'12 files left out: 9 .wmv, 3 .txt (input.extensions), e.g. a.wmv, b.txt', or '' when none was."""
        counts = Counter({kind: len(paths) for kind, paths in self.left_out.items()})
        if not counts:
            return ""
        by_kind = ", ".join(f"{count} {kind}" for kind, count in counts.most_common())
        shown = sorted(path for paths in self.left_out.values() for path in paths)[:examples]
        total = counts.total()
        return f"{total} file{'s' if total > 1 else ''} left out: {by_kind} (input.extensions), e.g. {', '.join(shown)}"


def is_image(path: str, image_extensions: tuple[str, ...]) -> bool:
    return path.lower().endswith(tuple(extension.lower() for extension in image_extensions))


def _extension(path: str) -> str:
    return PurePosixPath(path).suffix.lower() or "without extension"


def _common_directory(uris: list[str]) -> str:
    """The deepest folder (ending in '/') that holds every URI; outputs mirror the paths below it."""
    folders = [uri.rsplit("/", 1)[0] + "/" for uri in uris]
    prefix = os.path.commonprefix(folders)
    return prefix[: prefix.rfind("/") + 1]


class InputListing:
    """Storage's listing of inputs (mixed into Storage, whose read_bytes, identity and list_objects it uses)."""

    def list_inputs(
        self,
        source: str,
        extensions: tuple[str, ...],
        columns: tuple[str, ...] = (),
        shards: ShardReading | None = None,
    ) -> Listing:
        """Every video under a folder or prefix (recursive, extensions case-insensitive), one file or object, or the
        lines of a list file, whose columns besides 'uri' must be among `columns`. With `shards`, a file with one of
        its extensions is a WebDataset shard, and each of its samples with a video is an input."""
        if source.lower().endswith(LIST_SUFFIXES):
            return Listing(self._list_from_file(source, columns))
        suffixes = tuple(e.lower() for e in extensions)
        shard_suffixes = tuple(e.lower() for e in shards.extensions) if shards else ()
        if is_s3(source):
            listing = self._list_prefix(source, suffixes + shard_suffixes)
        else:
            root = Path(source)
            if root.is_file():
                listing = Listing([InputItem(str(root.resolve()), root.name, local_identity(root))])
            elif root.is_dir():
                listing = _list_folder(root.resolve(), suffixes + shard_suffixes)
            else:
                raise StorageError(f"input {source} is neither a folder, a video, nor a .csv/.parquet list of URIs")
        return self._expand_shards(listing, shards) if shards else listing

    def _expand_shards(self, listing: Listing, shards: ShardReading) -> Listing:
        """The listing with each shard replaced by its samples (a shard that cannot be read fails as one input)."""
        items, found, left_out = [], [], dict(listing.left_out)
        shard_suffixes, videos = tuple(e.lower() for e in shards.extensions), tuple(e.lower() for e in shards.videos)
        for item in listing.items:
            if item.problem or not item.relative_path.lower().endswith(shard_suffixes):
                items.append(item)
                continue
            try:
                index = self._shard_index(item.uri, shards.prompt_from)
            except (tarfile.TarError, EOFError) as exc:
                problem = f"it is not a readable tar shard ({exc}); check the file: a shard cut short, or not a tar"
                items.append(InputItem(item.uri, item.relative_path, item.identity, problem=problem))
                continue
            found.append(item)
            for members in samples(index):
                video = next((m for m in members if m.name.lower().endswith(videos)), None)
                if video is None:
                    left_out.setdefault(NO_VIDEO, []).append(f"{item.relative_path}#{sample_key(members[0].name)}")
                    continue
                try:
                    prompt, problem = caption(index, sample_key(video.name), shards.prompt_from), ""
                except CaptionError as exc:
                    prompt, problem = "", f"{exc}; fix the caption, or set input.prompt_from=none"
                items.append(
                    InputItem(
                        f"{item.uri}#{video.name}",
                        f"{item.relative_path}#{video.name}",
                        member_identity(item.identity, video),
                        (("prompt", prompt),) if prompt else (),
                        problem,
                        shard=item.relative_path,
                    )
                )
        return Listing(sorted(items, key=lambda item: item.relative_path), left_out, found)

    def _shard_index(self, uri: str, prompt_from: str) -> ShardIndex:
        """A shard's members and the captions its samples need: local, by seeking from header to header; on S3, in
        one streamed read (never to disk)."""
        wanted = caption_names(prompt_from)
        if not is_s3(uri):
            with open(uri, "rb") as shard:
                return read_index(shard, wanted, seekable=True)
        bucket, key = split_s3(uri)
        return self.s3_call(
            "reading", uri, lambda: read_index(self.s3.get_object(Bucket=bucket, Key=key)["Body"], wanted, False)
        )

    def _list_prefix(self, source: str, suffixes: tuple[str, ...]) -> Listing:
        """The objects under an s3:// prefix, or the one object `source` names."""
        prefix_uri = source if source.endswith("/") else source + "/"
        items, left_out = [], {}
        for uri, identity in self.list_objects(prefix_uri):
            relative = uri[len(prefix_uri) :]
            if uri.endswith("/") or is_hidden(relative):  # a console's folder marker; ._clip.mp4, .git/x.mp4
                continue
            if uri.lower().endswith(suffixes):
                items.append(InputItem(uri, relative, identity))
            else:
                left_out.setdefault(_extension(relative), []).append(relative)
        if not items and not left_out and not source.endswith("/") and (identity := self.identity(source)):
            return Listing([InputItem(source, source.rsplit("/", 1)[1], identity)])
        return Listing(sorted(items, key=lambda item: item.relative_path), left_out)

    def _list_from_file(self, source: str, columns: tuple[str, ...]) -> list[InputItem]:
        lines = read_list(source, self.read_bytes(source), columns)
        if not lines:
            raise StorageError(f"input list {source} holds no URIs; give one per line (a 'uri' column)")
        # A line that names no usable location fails alone, under its line number; so does a line that names a
        # video an earlier line named (the first counts); two different files that map to one output are caught later.
        failed, by_uri = [], {}
        for line in lines:
            location = line.location if is_s3(line.location) or not line.location else Path(line.location).resolve()
            location = location.as_posix() if isinstance(location, Path) else location
            problem = line.problem or location_problem(line.location) or relative_path_problem(line)
            if not problem and location in by_uri:
                problem = (
                    f"it lists {line.location} again (first on line {by_uri[location].number}); list each video once: "
                    "a video with two looks needs two copies, or two runs to two outputs"
                )
            if problem:
                where = f"{source} line {line.number}"
                failed.append(InputItem(where, f"line-{line.number}", "", line.cells, problem))
            else:
                by_uri[location] = line
        # Without a relative_path column, outputs mirror the paths under the deepest folder holding every line's
        # video: a line added from another folder moves that folder, and with it every output.
        base = _common_directory(list(by_uri))
        identities = self.identities_of(list(by_uri))
        items = [
            InputItem(uri, line.relative_path or uri[len(base) :], identities[uri], line.cells)
            for uri, line in by_uri.items()
        ]
        return sorted(items, key=lambda item: item.relative_path) + failed

    def identities_of(self, uris: list[str]) -> dict[str, str]:
        """The content identities of a list's inputs ('' for one that does not exist). Local files: a stat each.
        S3 objects: from listing the folders that hold them, one request per 1,000 objects, where a folder holds at
        least storage.list_folder_from of them; the others from HEAD requests, storage.parallel_requests at a time."""
        identities = {uri: self.identity(uri) for uri in uris if not is_s3(uri)}
        by_folder: dict[str, list[str]] = defaultdict(list)
        for uri in uris:
            if is_s3(uri):
                by_folder[uri.rsplit("/", 1)[0] + "/"].append(uri)
        one_by_one = []
        for folder, wanted in by_folder.items():
            if len(wanted) >= self.config.list_folder_from:
                listed = dict(self.list_objects(folder, recursive=False))
                identities |= {uri: listed.get(uri, "") for uri in wanted}
            else:
                one_by_one += wanted
        with ThreadPoolExecutor(self.config.parallel_requests) as pool:
            identities |= dict(zip(one_by_one, pool.map(self.identity, one_by_one), strict=True))
        return identities


def _list_folder(root: Path, suffixes: tuple[str, ...]) -> Listing:
    """Every file under a local folder (links as files, see the module's docstring), hidden files aside. One
    directory read per folder and one stat per file: a library of a million files is listed in seconds."""
    items, left_out = [], {}
    base, folders = str(root), [str(root)]
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            left_out.setdefault(UNREADABLE, []).append(f"{os.path.relpath(folder, base)} ({exc.strerror})")
            continue
        for entry in entries:
            relative = entry.path[len(base) + 1 :]
            if entry.name.startswith("."):  # hidden: .git/, .DS_Store, macOS's ._clip.mp4 (never an input)
                continue
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)
            elif entry.is_symlink() and _links_to_a_folder(entry):  # not entered
                left_out.setdefault(FOLDER_LINK, []).append(relative)
            elif not entry.name.lower().endswith(suffixes):
                left_out.setdefault(_extension(relative), []).append(relative)
            else:
                problem = _link_problem(Path(entry.path), root) if entry.is_symlink() else ""
                items.append(InputItem(entry.path, relative, "" if problem else local_identity(entry), problem=problem))
    return Listing(sorted(items, key=lambda item: item.relative_path), left_out)


def is_hidden(relative_path: str) -> bool:
    """A file that is hidden, or inside a hidden folder (a name starting with a dot): never an input."""
    return any(part.startswith(".") for part in relative_path.split("/"))


def _links_to_a_folder(link: os.DirEntry) -> bool:
    try:
        return link.is_dir()
    except OSError:  # a link that loops: its own problem, as a file
        return False


def _link_problem(link: Path, root: Path) -> str:
    """Why a link under the input folder cannot be an input, or '' when it points to a file inside it."""
    try:
        target = link.resolve(strict=True)
    except FileNotFoundError:
        return f"it is a broken link (to {os.readlink(link)}); fix the link or remove it"
    except (RuntimeError, OSError):  # Python 3.11 reports a loop as RuntimeError, later ones as OSError
        return "it is a link that loops back on itself; fix the link or remove it"
    if not target.is_relative_to(root):
        return f"it is a link to {target}, outside the input folder {root}; copy the file in, or dub its own folder"
    if not target.is_file():
        return f"it is a link to {target}, which is not a file"
    return ""


def location_problem(location: str) -> str:
    """What is wrong with a list cell as the location of one input, or '' when it is a local path or an object."""
    if not location:
        return f"has no '{URI_COLUMN}' (the video's location)"
    if is_s3(location):
        bucket, _, key = location.removeprefix("s3://").partition("/")
        if not bucket:
            return f"{location!r} names no bucket; give s3://BUCKET/KEY"
        if not key or key.endswith("/"):
            return f"{location!r} names a bucket or a folder, not an object; give the key of one video"
        return ""
    if "://" in location:
        return f"{location!r} is neither a local path nor an s3:// URI"
    return ""


def relative_path_problem(line: ListLine) -> str:
    """What is wrong with a line's relative_path cell, in a list that has the column ('' when nothing is)."""
    if line.relative_path is None:
        return ""
    if not line.relative_path:
        return f"its '{RELATIVE_COLUMN}' cell is empty; in a list with that column, give every line its output path"
    if ".." in line.relative_path.replace("\\", "/").split("/"):
        return (
            f"its {RELATIVE_COLUMN} {line.relative_path!r} has a '..' part; give a plain path under the output root "
            "(a/b.mp4)"
        )
    if _extension(line.relative_path) != _extension(line.location):
        return (
            f"its {RELATIVE_COLUMN} {line.relative_path!r} has another extension than {line.location!r}; keep "
            f"{_extension(line.location)} (the output keeps its video's container)"
        )
    return ""


@dataclass(frozen=True)
class ListLine:
    number: int  # as a spreadsheet numbers it (the header is line 1)
    location: str  # the 'uri' cell
    cells: tuple[tuple[str, str], ...]  # the other non-empty cells: (column, text)
    problem: str = ""  # what is wrong with the line as a whole
    relative_path: str | None = None  # its relative_path cell; None when the list has no such column


def read_list(source: str, data: bytes, columns: tuple[str, ...]) -> list[ListLine]:
    """Each line of a list that is not blank: Parquet with a 'uri' column, or CSV (UTF-8,
    with or without a byte-order mark) with a header row naming its columns, or one location per line."""
    if source.lower().endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        header = [name.strip().lower() for name in table.column_names]
        body, first_line = [list(row.values()) for row in table.to_pylist()], 1
    else:
        header, body, first_line = _csv_rows(source, data)
    if URI_COLUMN not in header:
        raise StorageError(
            f"input list {source} has no '{URI_COLUMN}' column (columns found: {', '.join(header)}); name the "
            f"column of video locations '{URI_COLUMN}'"
        )
    used = {name for index, name in enumerate(header) if name or any(_cell(row, index) for row in body)}
    if unknown := sorted(used - {URI_COLUMN, RELATIVE_COLUMN, *columns}):
        known = ", ".join([URI_COLUMN, RELATIVE_COLUMN, *columns])
        raise StorageError(
            f"input list {source} has columns this job does not know: {', '.join(n or '(no name)' for n in unknown)}"
            f"; the columns it knows: {known}"
        )
    lines = []
    for number, row in enumerate(body, start=first_line):
        if not any(_cell(row, index) for index in range(len(row))):
            continue  # a blank line
        cells = {name: _cell(row, index) for index, name in enumerate(header) if name}
        location, relative = cells.pop(URI_COLUMN), cells.pop(RELATIVE_COLUMN, None)
        others = tuple((name, text) for name, text in cells.items() if text)
        filled = len([cell for cell in row if cell not in (None, "")])
        problem = f"it has {filled} cells, but the header names {len(header)} columns" if filled > len(header) else ""
        lines.append(ListLine(number, location, others, problem, relative))
    return lines


def _cell(row: list, index: int) -> str:
    return str(row[index]).strip() if index < len(row) and row[index] is not None else ""


def _csv_rows(source: str, data: bytes) -> tuple[list[str], list[list[str]], int]:
    """(column names, rows, the first row's line number). Without a header row (the first cell is a location) the
    one column is the URI."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StorageError(
            f"input list {source} is not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}); save the "
            "list as UTF-8 (a spreadsheet's 'CSV UTF-8')"
        ) from None
    rows = list(csv.reader(io.StringIO(text)))
    if not any(cell.strip() for row in rows for cell in row):
        return [URI_COLUMN], [], 1
    names = [cell.strip().lower() for cell in rows[0]]
    if URI_COLUMN in names:
        return names, rows[1:], 2
    if _is_location(rows[0][0].strip()):
        if any(len([cell for cell in row if cell.strip()]) > 1 for row in rows):  # cells a header would name
            raise StorageError(
                f"input list {source} has more than one column but no header row; add a first line naming the "
                f"columns ('{URI_COLUMN}' for the video locations)"
            )
        return [URI_COLUMN], rows, 1
    return names, rows[1:], 2  # a header without 'uri': refused by the caller, naming what it found


def _is_location(cell: str) -> bool:
    """Whether a CSV's first cell is a location (so the list has no header row), not a column name."""
    return "/" in cell or "\\" in cell or bool(PurePosixPath(cell).suffix)
