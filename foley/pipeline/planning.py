"""Choosing a run's work: every input listed, its output located and checked by the guard, its result id made of
what changes it (foley.pipeline.kinds, foley.pipeline.conditions), and the inputs the manifest already has as done
under that id left out, unless their published outputs are gone or cut short.

The planner reads; what it decides the run (foley.pipeline.job) writes, under its lease.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from foley.config import ConditionsConfig, ConfigError, FoleyConfig
from foley.models.identity import ModelIdentities
from foley.pipeline.columns import FAILED, OK, SKIPPED
from foley.pipeline.conditions import (
    LIST_COLUMNS,
    ConditionError,
    video_conditions,
    video_config_hash,
    video_source_edits,
)
from foley.pipeline.guard import Locations, check_no_input_is_written, own_name_problem, shared_outputs
from foley.pipeline.kinds import JobKind, clap_settings, container_settings, image_settings, result_id
from foley.pipeline.layout import SEGMENTS_DIR
from foley.pipeline.manifest import Manifest, utc_now
from foley.pipeline.report_assets import media_uri
from foley.pipeline.rows import planned_row
from foley.pipeline.shards import ShardWork
from foley.storage.inputs import InputItem, Listing, ShardReading, is_image
from foley.storage.store import Storage
from foley.storage.uris import StorageError, UnsafePathError, join


@dataclass
class Layout:
    """The inputs listed, the files each one's result writes (the main one first), and the inputs refused, with
    why: checked, before anything is written, so that no output can land on an input."""

    listing: Listing
    outputs: dict[str, tuple[str, ...]]
    refused: dict[str, str]


@dataclass
class Plan:
    """What a run does: the rows to stream, the rows refused (failed, never written), the finished rows whose
    input moved (journalled again under the new location), and how many inputs are already done."""

    rows: list[dict] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)
    moved: list[dict] = field(default_factory=list)
    already_done: int = 0
    shards: list[ShardWork] = field(default_factory=list)  # the input's shards, each with its samples' results


class Planner:
    """The plan of one run over its inputs; `config` is the run's, with an unpinned hub model pinned to the commit
    the plan identified once identify_models() has run."""

    def __init__(
        self, args: argparse.Namespace, config: FoleyConfig, kind: JobKind, storage: Storage, manifest: Manifest,
        columns: dict,
    ):  # fmt: skip
        self.args, self.config, self.kind, self.storage, self.manifest = args, config, kind, storage, manifest
        self.identities = ModelIdentities(storage)  # content digests, cached per node by size and mtime
        self.columns = columns  # a row's columns besides the plan's, for the rows refused here
        self._clap_identity: str | None = None
        self._conditions: dict[tuple, tuple[str, dict, dict] | Exception] = {}  # by an input's list cells

    def layout(self, outputs_for: Callable[[InputItem], tuple[str, ...]]) -> Layout:
        """Every input and its outputs (`outputs_for` names the files an input's result writes, the main one
        first); a layout that could write an input refuses the whole job (StorageError). Inputs whose output path
        would be unsafe, that share an output with another input, or whose list line is invalid are refused."""
        extensions, columns, shards = self.config.input.extensions, (), None
        if self.kind.sound_design:
            extensions, columns = extensions + self.config.input.image_extensions, LIST_COLUMNS
            shards = ShardReading(
                self.config.input.shard_extensions, self.config.input.extensions, self.config.input.prompt_from
            )
        listing = self.storage.list_inputs(self.args.input, extensions, columns, shards)
        # A shard's output shard is written too: it must never land on an input, nor two shards on one output.
        outputs = {shard.uri: (join(self.args.output, shard.relative_path),) for shard in listing.shards}
        refused = {}
        for item in listing.items:
            if item.problem:  # a broken link, a list line with no usable location
                refused[item.uri] = item.problem
            elif collision := own_name_problem(item.relative_path):
                refused[item.uri] = f"{collision}; rename or move the file"
            else:
                try:  # e.g. an object key '../x.mp4'
                    outputs[item.uri] = outputs_for(item)
                except UnsafePathError as exc:
                    refused[item.uri] = str(exc)
        locations = Locations()
        check_no_input_is_written([*listing.items, *listing.shards], self.args.output, outputs, locations)
        return Layout(listing, outputs, refused | shared_outputs(outputs, locations))

    def identify_models(self) -> dict[str, str]:
        """Each model's identity; an unpinned hub model is pinned to the commit it resolved to, so that every worker
        loads exactly what the hash names."""
        models = self.kind.model_identities(self.config, self.identities)
        self.identities.save()
        audioldm = models.get("audioldm_model", "")
        if audioldm.startswith("hub:") and not self.config.audioldm.revision:
            self.config = self.config.with_overrides(f"audioldm.revision={audioldm.rsplit('@', 1)[1]}")
        return models

    def plan(self, layout: Layout, current: pa.Table, config_hash: str, shared: dict) -> Plan:
        """The plan over `current` (the manifest's key columns): `shared` holds the values every row of this run
        has (its id, its number on the output root, the models' identities)."""
        plan, refused = Plan(), dict(layout.refused)
        shards = {shard.relative_path: ShardWork(shard) for shard in layout.listing.shards}
        finished = {} if self.args.force else finished_results(current)
        done_before = []  # (row, index in current) of results finished before
        for item in layout.listing.items:
            written = layout.outputs.get(item.uri, ("",))
            row = planned_row(item, written[0]) | shared  # one string of each shared value for every row
            if written[1:]:
                row["outputs"] = json.dumps(written)
            try:
                own = self.own_settings(item, row) if item.uri not in refused else {}
            except (ConditionError, StorageError) as exc:
                refused[item.uri], own = str(exc), {}
            row["config_hash"] = video_config_hash(config_hash, own)
            row["result_id"] = result_id(row["config_hash"], item.identity, written[0])
            row["staging_uri"] = join(self.args.output, f"{SEGMENTS_DIR}/{row['result_id']}")
            if self.kind.sound_design and self.config.report.enabled:
                row["report_uri"] = media_uri(self.args.output, row["result_id"])
            if item.shard:
                shards[item.shard].samples[item.relative_path[len(item.shard) + 1 :]] = (item.uri, row["result_id"])
            if item.uri in refused:  # recorded as failed, never written
                failed = {"status": FAILED, "error": f"{item.uri}: {refused[item.uri]}", "outputs": "[]"}
                plan.refused.append(self.columns | row | failed)
            elif (done := finished.get(row["result_id"])) is not None:
                done_before.append((row, done))
            else:
                plan.rows.append(row)
        unpublished = self.unpublished(current, [done for _, done in done_before])
        done_inputs = current.column("input_uri").to_pylist()
        moved: dict[str, str] = {}  # result id: its input's new location
        for row, done in done_before:
            if done in unpublished:  # its output is gone or not what was published: made again
                plan.rows.append(row)
                continue
            plan.already_done += 1
            if done_inputs[done] != row["input_uri"]:  # the library moved: its row follows the input (by this run)
                moved[row["result_id"]] = row["input_uri"]
        plan.moved = self.moved_rows(moved, shared["run_seq"])
        plan.shards = list(shards.values())
        self.identities.save()  # the reference sounds' digests too
        return plan

    def unpublished(self, current: pa.Table, done: list[int]) -> set[int]:
        """Of these finished rows (indices in `current`), those whose outputs are not all there at the size each was
        published with (a row from before sizes were kept: only that it is there). An output deleted, or cut short
        behind the job's back, is made again. Prints how many, with examples."""
        status = current.column("status").to_pylist()
        done = [index for index in done if status[index] == OK]  # a skipped input wrote nothing
        if not done:
            return set()
        outputs, sizes = current.column("outputs").to_pylist(), current.column("output_sizes").to_pylist()
        main = current.column("output_uri").to_pylist()
        expected = {index: published(outputs[index], sizes[index], main[index]) for index in done}
        found = self.storage.sizes([uri for files in expected.values() for uri, _ in files], self.args.output)
        broken = {
            index
            for index, files in expected.items()
            if any(uri not in found or size not in (None, found[uri]) for uri, size in files)
        }
        if broken:
            names = ", ".join(sorted(main[index] for index in broken)[:3])
            print(
                f"{len(broken)} finished output{'s are' if len(broken) > 1 else ' is'} missing or not the size it was "
                f"published with (e.g. {names}); made again",
                flush=True,
            )
        return broken

    def moved_rows(self, moved: dict[str, str], sequence: int) -> list[dict]:
        """The finished rows of results whose input moved (by result id: its new location), to be journalled again
        by run number `sequence` under the new location."""
        if not moved:
            return []
        current, _ = self.manifest.snapshot()  # the whole rows, read only when some input moved
        wanted = current.filter(pc.is_in(current.column("result_id"), pa.array(list(moved))))
        now = utc_now()
        return [
            record | {"input_uri": moved[record["result_id"]], "run_seq": sequence, "finished_at": now}
            for record in wanted.to_pylist()
            if record["status"] in (OK, SKIPPED)
        ]

    def own_settings(self, item: InputItem, row: dict) -> dict:
        """What this input's result depends on beyond the job's settings (foley.pipeline.conditions); its
        conditions and kind go into the row."""
        if not self.kind.sound_design:
            return {}
        row["conditions"], own, edits = self.conditions_of(item.columns)
        own = dict(own)
        if edits:
            row["source_edits"] = json.dumps(edits, sort_keys=True)
            own["sources"] = edits
        if is_image(item.relative_path, self.config.input.image_extensions):
            row["image"] = True
            own["image"] = image_settings(self.config)
        return own | container_settings(self.config, row["output_uri"])

    def conditions_of(self, columns: tuple[tuple[str, str], ...]) -> tuple[str, dict, dict]:
        """The conditions of inputs with these list cells (JSON, for the row), what of them goes into their hash,
        and their sound-source edits; worked out once per distinct cells (a folder's million inputs share the
        job's), or the error they give."""
        if columns not in self._conditions:
            try:
                self._conditions[columns] = (
                    *self._own_conditions(video_conditions(self.config.conditions, columns)),
                    video_source_edits(self.config.sources, columns),
                )
            except (ConditionError, StorageError) as exc:
                self._conditions[columns] = exc
        if isinstance(known := self._conditions[columns], Exception):
            raise known
        return known

    def _own_conditions(self, conditions: ConditionsConfig) -> tuple[str, dict]:
        own = {}
        if conditions.counted() != self.config.conditions.counted():
            own["conditions"] = conditions.counted()
        if reference := conditions.reference_audio:
            if not self.storage.identity(reference):
                raise StorageError(f"its reference_audio {reference} does not exist; fix the path or URI")
            own["reference_audio"] = self.identities.of(reference)  # its content: a copy elsewhere is one sound
            if not self.config.uses_clap():  # the CLAP that embeds it is a model of this video only
                own["clap_model"] = self.clap_identity()
                own["clap"] = clap_settings(self.config)
        return json.dumps(conditions.used(), sort_keys=True), own

    def clap_identity(self) -> str:
        """The identity of AudioLDM's CLAP, for videos with a reference sound of their own (where it is missing, the
        videos that need it fail, the others go on)."""
        if self._clap_identity is None:
            self._clap_identity = clap_identity(self.storage, self.config, "a reference sound")
        return self._clap_identity


def published(outputs: list[str] | None, sizes: list[int] | None, main: str) -> list[tuple[str, int | None]]:
    """An ok row's files with their sizes as published (None where its row is from before sizes were kept)."""
    uris = outputs if outputs is not None else [main]  # a row from before the outputs column wrote its main one
    return [(uri, sizes[index] if sizes and index < len(sizes) else None) for index, uri in enumerate(uris) if uri]


def finished_results(current: pa.Table) -> dict[str, int]:
    """The manifest's finished rows (their indices in `current`) by result id: ok, or skipped (a decision that is
    final too). Done work is found by what it is, not by where its input sits, so a moved library finds its
    results."""
    finished = pc.is_in(current.column("status"), pa.array([OK, SKIPPED])).to_pylist()
    return {result: index for index, result in enumerate(current.column("result_id").to_pylist()) if finished[index]}


def clap_identity(storage: Storage, config: FoleyConfig, needed_by: str) -> str:
    """The identity of AudioLDM's CLAP (clap.checkpoint), or a StorageError that says how to make it."""
    try:
        return ModelIdentities(storage).of(config.clap.checkpoint)
    except ConfigError:  # neither there nor a hub model
        raise StorageError(
            f"{needed_by} needs AudioLDM's CLAP, but clap.checkpoint={config.clap.checkpoint} does not exist; make it "
            "with python -m jobs.convert_audioldm_clap, or set clap.checkpoint to where it is"
        ) from None
