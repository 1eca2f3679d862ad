"""Each video's own settings on top of the job's: its line in the input list (conditions and sound-source edits),
and being an image.

A video with the job's conditions keeps the job's config hash. A video with conditions of its own, or with a
reference sound (whose content matters as much as its name), or a still image, gets a hash of its own that adds
them, so changing one line of a list redoes that video only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import ValidationError

from foley.config import ConditionsConfig, SourcesConfig
from foley.storage.uris import is_s3

CONDITION_COLUMNS = tuple(ConditionsConfig.model_fields)
# A line's own edits of its sound sources: labels never voiced, separated by ';' (labels hold commas), and
# 'label=factor' boosts, separated by ';'. They replace the job's sources.exclude and sources.boost.
SOURCE_COLUMNS = ("sources_exclude", "sources_boost")
LIST_COLUMNS = CONDITION_COLUMNS + SOURCE_COLUMNS


class ConditionError(ValueError):
    """A list line whose condition columns do not make valid conditions; the message names the column."""


def video_conditions(defaults: ConditionsConfig, columns: tuple[tuple[str, str], ...]) -> ConditionsConfig:
    """The job's conditions with an input's list columns (InputItem.columns) of the same names on top; a local
    reference sound's path is made absolute (read against the working directory, as the list's own paths are)."""
    own = {name: value for name, value in columns if name in CONDITION_COLUMNS}
    try:
        conditions = ConditionsConfig.model_validate(defaults.model_dump() | own) if own else defaults
    except ValidationError as exc:
        problems = "; ".join(f"column {'.'.join(map(str, e['loc'])) or '?'}: {e['msg']}" for e in exc.errors())
        raise ConditionError(f"its line in the input list has invalid condition values ({problems})") from None
    reference = conditions.reference_audio
    if reference and not is_s3(reference):
        conditions = conditions.model_copy(update={"reference_audio": str(Path(reference).expanduser().resolve())})
    return conditions


def video_source_edits(defaults: SourcesConfig, columns: tuple[tuple[str, str], ...]) -> dict:
    """A line's non-empty sources_exclude / sources_boost cells as sources settings ({} when it has none)."""
    cells = {name: value.strip() for name, value in columns if name in SOURCE_COLUMNS and value.strip()}
    if "sources_boost" in cells and defaults.mode == "remixer":
        raise ConditionError(
            "its line in the input list boosts sound sources (sources_boost), which the trained remixer (sources.mode"
            "=remixer) weighs by attention; leave that cell empty (sources_exclude applies)"
        )
    if cells and defaults.mode == "off":
        raise ConditionError(
            f"its line in the input list edits sound sources ({', '.join(sorted(cells))}) but they are off; set "
            "sources.mode=zero_shot or remixer, or leave those cells empty"
        )
    edits: dict = {}
    if "sources_exclude" in cells:
        edits["exclude"] = [label.strip() for label in cells["sources_exclude"].split(";") if label.strip()]
    if "sources_boost" in cells:
        edits["boost"] = {}
        for part in filter(str.strip, cells["sources_boost"].split(";")):
            label, equals, factor = part.rpartition("=")
            try:
                edits["boost"][label.strip()] = float(factor) if equals and label.strip() else float("nan")
            except ValueError:
                edits["boost"][label.strip()] = float("nan")
    try:
        SourcesConfig.model_validate(defaults.model_dump() | edits)
    except ValidationError as exc:
        problems = "; ".join(e["msg"] for e in exc.errors())
        raise ConditionError(
            f"its line in the input list has invalid sound-source edits ({problems}); write sources_boost as "
            "'label=factor; label=factor' with finite factors of at least 0"
        ) from None
    return edits


def video_config_hash(config_hash: str, own: dict) -> str:
    """The job's hash when a video has nothing of its own, else one that adds what it has."""
    if not own:
        return config_hash
    return hashlib.sha256(json.dumps([config_hash, own], sort_keys=True).encode()).hexdigest()[: len(config_hash)]
