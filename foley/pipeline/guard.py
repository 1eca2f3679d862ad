"""The guard against layouts that could write an input: every output location resolved and compared with every
input before any work, and names that would collide with the job's own files refused.

It is the first promise (an input is never written, moved or deleted), so it owns no other concern.
"""

from __future__ import annotations

import os
import posixpath

from foley.pipeline.layout import BOOKKEEPING_DIR
from foley.storage.inputs import LIST_SUFFIXES, InputItem
from foley.storage.publish import is_partial_name
from foley.storage.uris import StorageError, is_s3


def location(uri: str) -> str:
    """A location normalised for comparison: the real path of a local file (links and '..' resolved), or the
    s3://bucket/key itself. The output root is read so: `out`, `./out` and `/abs/out` are one location, in the
    result ids as everywhere."""
    return uri if is_s3(uri) else os.path.realpath(uri)


class Locations:
    """location() of many paths, each folder resolved once: a plan compares a million inputs and outputs that sit in
    a few thousand folders. (The real path of a file that is not a link is its folder's real path and its name.)"""

    def __init__(self):
        self.folders: dict[str, str] = {}

    def __call__(self, uri: str) -> str:
        if is_s3(uri):
            return uri
        folder, name = os.path.split(os.path.abspath(uri))
        if not name or os.path.islink(uri):
            return os.path.realpath(uri)
        if folder not in self.folders:
            self.folders[folder] = os.path.realpath(folder)
        return os.path.join(self.folders[folder], name)


def check_roots(input_root: str, output_root: str) -> None:
    """Outputs inside the input folder would be picked up as inputs by the next run: refuse up front."""
    if not input_root.lower().endswith(LIST_SUFFIXES) and (
        (location(output_root).rstrip("/") + "/").startswith(location(input_root).rstrip("/") + "/")
    ):
        raise StorageError(f"--output {output_root} is inside --input {input_root}; choose an output outside it")


def check_no_input_is_written(
    inputs: list[InputItem], output_root: str, outputs: dict[str, tuple[str, ...]], location: Locations
) -> None:
    """Refuse the whole job before any work if an output location holds an input or would be one."""
    where = {location(item.uri): item.uri for item in inputs}
    root = location(output_root).rstrip("/") + "/"
    if inside := [uri for place, uri in where.items() if place.startswith(root)]:
        raise StorageError(
            f"--output {output_root} holds input {inside[0]}"
            + (f" and {len(inside) - 1} more" if inside[1:] else "")
            + "; outputs must never land where inputs are: choose an output folder or prefix that holds no input"
        )
    for input_uri, written in outputs.items():
        for output_uri in written:
            if location(output_uri) in where:
                raise StorageError(
                    f"the output of {input_uri} would be {output_uri}, which is the input "
                    f"{where[location(output_uri)]}; choose another --output"
                )


def own_name_problem(relative_path: str) -> str:
    """Why an input's output would collide with the job's own files (which it deletes or rewrites), or ''. The
    path is judged as it will be joined, normalised: `a/../_foley/x.mp4` lands in `_foley/` too."""
    normalised = posixpath.normpath(relative_path)
    first, name = normalised.split("/", 1)[0], normalised.rsplit("/", 1)[-1]
    if first == BOOKKEEPING_DIR:
        return f"its path {relative_path} would land in {first}/, the job's own folder under the output"
    if is_partial_name(name):
        return f"its name {name} is how the job names its unfinished files, which it deletes"
    return ""


def shared_outputs(outputs: dict[str, tuple[str, ...]], location: Locations) -> dict[str, str]:
    """Inputs that write a file another input writes too: each would overwrite the other's result."""
    by_output: dict[str, list[str]] = {}
    for input_uri, written in outputs.items():
        for output_uri in written:
            by_output.setdefault(location(output_uri), []).append(input_uri)
    return {
        input_uri: f"{' and '.join(group)} map to the same output {output}; list only one of them, or give them "
        "different relative paths"
        for output, group in by_output.items()
        if len(group) > 1
        for input_uri in group
    }
