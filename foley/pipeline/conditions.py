"""Each video's own settings on top of the job's: its line in the input list (conditions), and being an image.

A video with the job's conditions keeps the job's config hash. A video with conditions of its own, or with a
reference sound (whose content matters as much as its name), or a still image, gets a hash of its own that adds
them, so changing one line of a list redoes that video only.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import ValidationError

from foley.config import ConditionsConfig
from foley.storage.uris import is_s3

CONDITION_COLUMNS = tuple(ConditionsConfig.model_fields)


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


def video_config_hash(config_hash: str, own: dict) -> str:
    """The job's hash when a video has nothing of its own, else one that adds what it has."""
    if not own:
        return config_hash
    return hashlib.sha256(json.dumps([config_hash, own], sort_keys=True).encode()).hexdigest()[: len(config_hash)]
