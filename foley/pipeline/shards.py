"""Output shards: a WebDataset shard in, a shard out at the mirrored path, once every sample of it is finished.

Each sample goes through the stages as an input of its own, and the last stage publishes its outputs into the job's
staging of the shard (foley.pipeline.outputs); a killed job keeps them, so its re-run makes only the samples it had
not finished. At the end of a run, each shard whose every sample has its final row under its current result id is
written again, member by member in order and byte for byte: with output.mode=mux or both the video member is the
muxed video under the same name, with audio or both `<key>.flac` follows the sample's members; a sample that failed
keeps its members and gets no audio member. The new shard is checked (it opens, every planned member is there)
and published atomically, and what it holds is recorded under `<output>/_foley/shards/`, so a re-run over
unchanged shards writes nothing, and a shard is written again only when one of its samples' results changed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import tarfile
from dataclasses import dataclass, field

import pyarrow as pa

from foley.pipeline.columns import FAILED, OK, SKIPPED
from foley.pipeline.layout import SAMPLES_DIR, SHARDS_DIR
from foley.storage.inputs import InputItem
from foley.storage.shards import rewrite
from foley.storage.store import Storage
from foley.storage.uris import StorageError, join

FINAL = (OK, FAILED, SKIPPED)


@dataclass
class ShardWork:
    """A shard of the run's input, and its samples' inputs: (input URI, the result id the plan gave it) by member."""

    shard: InputItem
    samples: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass
class ShardOutcome:
    published: list[str] = field(default_factory=list)
    unchanged: int = 0
    waiting: dict[str, int] = field(default_factory=dict)  # by shard: how many of its samples have no final row
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The summary's lines about shards (none when the run had none)."""
        total = len(self.published) + self.unchanged + len(self.waiting) + len(self.problems)
        if not total:
            return []
        lines = [f"shards: {len(self.published)} published, {self.unchanged} already published"]
        if self.waiting:
            examples = ", ".join(f"{name} ({count})" for name, count in sorted(self.waiting.items())[:3])
            lines.append(
                f"{len(self.waiting)} shard{'s wait' if len(self.waiting) > 1 else ' waits'} for samples without a "
                f"result (e.g. {examples}); run the job again to finish them (finished samples are kept)"
            )
        return lines


def publish_shards(storage: Storage, output_root: str, work: list[ShardWork], manifest: pa.Table) -> ShardOutcome:
    """Write each finished shard whose output is not already what its samples' results make (see the docstring)."""
    outcome = ShardOutcome()
    if not work:
        return outcome
    columns = ("input_uri", "result_id", "status", "outputs")
    records = dict(zip(manifest.column("input_uri").to_pylist(), manifest.select(columns).to_pylist(), strict=True))
    for shard in work:
        rows = {member: records.get(uri) for member, (uri, _) in shard.samples.items()}
        unfinished = [
            member
            for member, (_, result) in shard.samples.items()
            if rows[member] is None or rows[member]["result_id"] != result or rows[member]["status"] not in FINAL
        ]
        if unfinished:
            outcome.waiting[shard.shard.relative_path] = len(unfinished)
            continue
        try:  # a connection broken while the shard streams is retried whole, like any S3 exchange
            write = functools.partial(publish_shard, storage, output_root, shard, rows)
            if storage.s3_call("writing the output shard of", shard.shard.uri, write):
                outcome.published.append(shard.shard.relative_path)
            else:
                outcome.unchanged += 1
        except (StorageError, OSError, tarfile.TarError, EOFError) as exc:
            outcome.problems.append(
                f"{shard.shard.uri}: its output shard could not be written ({exc}); its samples are kept, run the job "
                "again to write it"
            )
    return outcome


def publish_shard(storage: Storage, output_root: str, work: ShardWork, rows: dict[str, dict]) -> bool:
    """Write one shard's output shard unless its record says it holds these results already; True if written."""
    target = join(output_root, work.shard.relative_path)
    holds = {member: [row["result_id"], row["status"], row["outputs"]] for member, row in sorted(rows.items())}
    digest = hashlib.sha256(json.dumps([work.shard.identity, holds]).encode()).hexdigest()
    record_uri = join(output_root, f"{SHARDS_DIR}/{work.shard.relative_path}.json")
    if storage.exists(record_uri):
        record = json.loads(storage.read_bytes(record_uri))
        if record["digest"] == digest and storage.size(target) == record["size"]:
            return False
    staging = join(output_root, f"{SAMPLES_DIR}/{work.shard.relative_path}") + "/"
    replaced, added = {}, {}  # member: the muxed video under its name; member: (name, URI) of its sound file
    for member, row in rows.items():
        for uri in row["outputs"] if row["status"] == OK else ():  # the manifest's list of output URIs
            name = uri[len(staging) :]
            if name == member:
                replaced[member] = uri
            else:
                added[member] = (name, uri)
    with storage.reading(work.shard.uri) as source, storage.staged_output(target) as local:
        written = rewrite(source, local, replaced, added, storage.read_bytes)
        check_written(local, written, work.shard.uri)
        size = local.stat().st_size
    record = {"shard": work.shard.uri, "digest": digest, "size": size, "members": len(written)}
    storage.write_bytes(record_uri, json.dumps(record).encode())
    return True


def check_written(local, planned: list[str], source: str) -> None:
    """Read the new shard as a reader would: it opens, and holds exactly the planned members, whole."""
    with tarfile.open(local, "r:") as tar:
        found = []
        for info in tar:
            if info.isfile():
                tar.extractfile(info).read()
            found.append(info.name)
    if found != planned:
        raise StorageError(f"the shard written for {source} holds {len(found)} members, not the {len(planned)} planned")
