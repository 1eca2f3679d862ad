"""Which videos a job reads: every video under a folder or an s3:// prefix, or the URIs of a .csv/.parquet list.

Each input gets its relative path, which names its output and seeds its noise, so the same library gives the same
outputs wherever it is listed from. A list's other columns (a CSV with a header row, or Parquet) travel with each
input: per-video settings such as a prompt (foley.pipeline.conditions).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from foley.storage.uris import StorageError, is_s3, local_identity

LIST_SUFFIXES = (".csv", ".parquet")


@dataclass(frozen=True)
class InputItem:
    uri: str
    relative_path: str  # posix path under the output root, also the video's stable id
    identity: str = ""  # its content: "etag:<ETag>:size:<bytes>" on S3, "size:<bytes>:mtime:<ns>" locally
    columns: tuple[tuple[str, str], ...] = ()  # the list file's other non-empty cells of this input: (name, text)


def is_image(path: str, image_extensions: tuple[str, ...]) -> bool:
    return path.lower().endswith(tuple(extension.lower() for extension in image_extensions))


def _common_directory(uris: list[str]) -> str:
    """The deepest folder (ending in '/') that holds every URI; outputs mirror the paths below it."""
    folders = [uri.rsplit("/", 1)[0] + "/" for uri in uris]
    prefix = os.path.commonprefix(folders)
    return prefix[: prefix.rfind("/") + 1]


class InputListing:
    """Storage's listing of inputs (mixed into Storage, whose read_bytes and list_prefix it uses)."""

    def list_inputs(self, source: str, extensions: tuple[str, ...]) -> list[InputItem]:
        """Every video under a folder or prefix (recursive, extensions case-insensitive), or the URIs of a list file."""
        if source.lower().endswith(LIST_SUFFIXES):
            return self._list_from_file(source)
        suffixes = tuple(e.lower() for e in extensions)
        if is_s3(source):
            prefix_uri = source if source.endswith("/") else source + "/"
            items = [
                InputItem(uri, uri[len(prefix_uri) :], identity)
                for uri, identity in self.list_objects(prefix_uri)
                if uri.lower().endswith(suffixes) and not uri.endswith("/")
            ]
        else:
            root = Path(source)
            if root.is_file():
                return [InputItem(str(root.resolve()), root.name, local_identity(root))]
            if not root.is_dir():
                raise StorageError(f"input {source} is neither a folder, a video, nor a .csv/.parquet list of URIs")
            items = [
                InputItem(str(path.resolve()), path.relative_to(root).as_posix(), local_identity(path))
                for path in root.rglob("*")
                if path.is_file() and path.suffix.lower() in suffixes and not path.name.startswith(".")
            ]
        return sorted(items, key=lambda item: item.relative_path)

    def _list_from_file(self, source: str) -> list[InputItem]:
        records = _list_records(source, self.read_bytes(source))
        if not records:
            raise StorageError(f"input list {source} holds no URIs; give one per line (a 'uri' column)")
        # The same file listed twice is one input (its first line counts); two different files that map to one output
        # are caught later.
        by_uri: dict[str, tuple[tuple[str, str], ...]] = {}
        for uri, columns in records:
            by_uri.setdefault(uri if is_s3(uri) else Path(uri).resolve().as_posix(), columns)
        base = _common_directory(list(by_uri))
        items = [InputItem(uri, uri[len(base) :], self.identity(uri), columns) for uri, columns in by_uri.items()]
        return sorted(items, key=lambda item: item.relative_path)


def _list_records(source: str, data: bytes) -> list[tuple[str, tuple[tuple[str, str], ...]]]:
    """(uri, other non-empty cells) per line of a list: Parquet with a 'uri' column, or CSV whose first column is the
    URI (with a header row naming the columns, or none)."""
    if source.lower().endswith(".parquet"):
        table = pq.read_table(io.BytesIO(data))
        if "uri" not in table.column_names:
            raise StorageError(f"input list {source} has no 'uri' column (columns: {table.column_names})")
        lines = table.to_pylist()
    else:
        rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
        header = ["uri"]
        if rows and rows[0] and rows[0][0].strip().lower() == "uri":
            header, rows = [name.strip().lower() for name in rows[0]], rows[1:]
        lines = [dict(zip(header, (cell.strip() for cell in row), strict=False)) for row in rows if row]
    return [
        (
            str(line["uri"]).strip(),
            tuple((name, str(value)) for name, value in line.items() if name != "uri" and value not in (None, "")),
        )
        for line in lines
        if line.get("uri") and str(line["uri"]).strip()
    ]
