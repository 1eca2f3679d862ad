"""The driver's bookkeeping at library scale: S3 requests and seconds of the plan, of the journal's batches during
the run, of the re-plan after a killed job and of the fold, side by side for a bucket prefix, an input list of S3
URIs and a local folder, in one run; then a local folder of a million files, planned with nothing done and re-planned
with 100 new files once every other is done, with the seconds and the peak memory of each.

    python -m jobs.bench.bookkeeping [--inputs 20000] [--local-inputs 20000] [--million 1000000] --out DIR

The inputs are 16-byte stand-ins (empty files for the million; the plan opens no input) in a bucket served by moto
on loopback (the test dependency `moto[server]`), the outputs go to the same bucket (the million's to a local
folder), and every request the driver's S3 client sends is counted. The last stage's one-row journal files are
written beside the count, as the stage's actors do. "Killed" means: every input's row was journalled by the last
stage, and the driver died just before its next batch, the most one-row files a kill can leave unbatched
(journal.batch_rows - 1). The tiny preset's models (models/tiny, from `make demo`) are identified, as in a real run.
Writes bookkeeping.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from foley.config import FoleyConfig, load_config
from foley.pipeline.columns import OK
from foley.pipeline.job import JobRun
from foley.pipeline.journal import RunJournal
from foley.pipeline.kinds import DUB
from foley.pipeline.outputs import dub_outputs
from foley.storage.store import Storage

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = b"not a real video"  # 16 bytes
NEW_FILES = 100  # added to the million once it is done: the re-plan must find exactly these


def counted(storage: Storage) -> Counter:
    """Every request the storage's S3 client sends from now on, by HTTP method."""
    requests: Counter = Counter()
    storage.s3.meta.events.register("before-send.s3", lambda request, **_: requests.update([request.method]))
    return requests


def job_run(config: FoleyConfig, input_arg: str, output: str) -> JobRun:
    return JobRun(argparse.Namespace(input=input_arg, output=output, force=False), config, DUB)


def plan(run: JobRun) -> list[dict]:
    return run.plan(lambda item: dub_outputs(run.args.output, item, run.config))


def phases(config: FoleyConfig, input_arg: str, output: str, count: int) -> dict[str, dict]:
    """Plan with nothing done, the run's journal batches, re-plan after a killed job, fold: requests and seconds."""
    results = {}

    def measure(name: str, work) -> object:
        run = job_run(config, input_arg, output)
        requests, started = counted(run.storage), time.perf_counter()
        value = work(run)
        seconds = time.perf_counter() - started
        run.lease.give_back()
        total = sum(requests.values())
        results[name] = {
            "requests": total,
            "by_method": dict(requests),
            "per_input": round(total / count, 4),
            "seconds": round(seconds, 2),
        }
        print(f"  {name:<28} {total:>7} requests ({total / count:.4f} per input) {seconds:>8.1f} s", flush=True)
        return value

    rows = measure("plan, nothing done", plan)
    stage = job_run(config, input_arg, output)  # the last stage's actors: their writes are not the driver's
    with ThreadPoolExecutor(config.storage.parallel_requests) as pool:
        one_row_files = list(pool.map(lambda row: stage.manifest.record(stage.columns | row | {"status": OK}), rows))
    batched = len(one_row_files) - (config.journal.batch_rows - 1)

    def journal_until_the_kill(run: JobRun) -> None:
        journal = RunJournal(run.manifest, rows[0]["run_id"], rows[0]["run_seq"], config.journal)
        for one_row_file in one_row_files[:batched]:
            journal.add(one_row_file)
        journal.write()  # its last batch; the rows after it reached only their one-row files

    measure("journal batches, to the kill", journal_until_the_kill)
    measure("re-plan after a killed job", plan)
    measure("fold the journal", lambda run: run.manifest.compact())
    return results


def in_a_process_of_its_own(work, *args) -> dict:
    """Run `work(*args)` in a fresh process: its result, with its seconds and its peak memory (max RSS)."""
    context = multiprocessing.get_context("spawn")
    answers = context.Queue()
    process = context.Process(target=_measured, args=(answers, work, *args))
    process.start()
    answer = answers.get()
    process.join()
    return answer


def _measured(answers, work, *args) -> None:
    started = time.perf_counter()
    result = work(*args)
    seconds = time.perf_counter() - started
    answers.put(result | {"seconds": round(seconds, 1), "peak_memory_mib": round(peak_resident_kib() / 1024)})


def peak_resident_kib() -> int:
    """This process's peak resident memory since it started its program (VmHWM; getrusage's max RSS would count
    the parent's memory at the fork)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


def plan_a_folder(config: FoleyConfig, folder: str, output: str) -> dict:
    run = job_run(config, folder, output)
    rows = plan(run)
    run.lease.give_back()
    return {"to_process": len(rows), "new_found": sorted(row["relative_path"] for row in rows)[:NEW_FILES]}


def finish_every_input(config: FoleyConfig, folder: str, output: str) -> dict:
    """What a run that did every input leaves: each row journalled and the journal folded."""
    run = job_run(config, folder, output)
    rows = plan(run)
    for start in range(0, len(rows), config.journal.batch_rows):
        run.journal.add_rows(
            [run.columns | row | {"status": OK} for row in rows[start : start + config.journal.batch_rows]]
        )
    del rows
    run.finish()
    return {}


def a_million_files(config: FoleyConfig, out: Path, count: int) -> dict[str, dict]:
    """A local folder of `count` empty files: plan with nothing done, finish every input, then re-plan with
    NEW_FILES more; seconds and peak memory of each, in a process of its own."""
    folder, output = out / "million", out / "million-out"
    for index in range(count):
        path = folder / f"d{index // 1000:04d}" / f"v{index:07d}.mp4"
        if index % 1000 == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    results = {"plan, nothing done": in_a_process_of_its_own(plan_a_folder, config, str(folder), str(output))}
    results["finish every input (journal, fold)"] = in_a_process_of_its_own(
        finish_every_input, config, str(folder), str(output)
    )
    new = folder / "new"
    new.mkdir()
    for index in range(NEW_FILES):
        (new / f"n{index:03d}.mp4").touch()
    replan = in_a_process_of_its_own(plan_a_folder, config, str(folder), str(output))
    assert replan.pop("new_found") == sorted(f"new/n{index:03d}.mp4" for index in range(NEW_FILES)), "not the new ones"
    results[f"re-plan with {NEW_FILES} new files"] = replan
    results["plan, nothing done"].pop("new_found")
    for name, result in results.items():
        print(f"  {name:<36} {result['seconds']:>7.1f} s, peak {result['peak_memory_mib']:>6} MiB", flush=True)
    return results


def main(argv: list[str] | None = None) -> None:
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - a test dependency, for this benchmark only

    parser = argparse.ArgumentParser(prog="python -m jobs.bench.bookkeeping", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=20000, help="inputs in the bucket and in the list")
    parser.add_argument("--local-inputs", type=int, default=20000, help="files in the local folder")
    parser.add_argument("--million", type=int, default=1_000_000, help="files in the large local folder (0: none)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # moto takes any; boto3 signs with something
        os.environ[name] = "bench"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's server logs every request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    tiny = [f"storage.endpoint_url={endpoint}", f"storage.cache_dir={args.out / 'cache'}", "report.enabled=false"]
    config = load_config(ROOT / "configs" / "tiny.yaml", tiny)
    storage = Storage(config.storage)
    bucket = "library"
    storage.s3.create_bucket(Bucket=bucket)
    uris = [f"s3://{bucket}/silent/v{index:06d}.mp4" for index in range(args.inputs)]
    with ThreadPoolExecutor(config.storage.parallel_requests) as pool:
        list(pool.map(lambda uri: storage.s3.put_object(Bucket=bucket, Key=uri.split("/", 3)[3], Body=STAND_IN), uris))
    listed = args.out / "list.csv"
    listed.write_text("uri\n" + "\n".join(uris) + "\n")
    folder = args.out / "folder"
    for index in range(args.local_inputs):
        path = folder / f"d{index // 1000:03d}" / f"v{index:06d}.mp4"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(STAND_IN)

    cases = {
        f"bucket prefix, {args.inputs} inputs": (f"s3://{bucket}/silent/", f"s3://{bucket}/out-prefix/", args.inputs),
        f"list of {args.inputs} S3 URIs": (str(listed), f"s3://{bucket}/out-list/", args.inputs),
        f"local folder, {args.local_inputs} files": (str(folder), f"s3://{bucket}/out-local/", args.local_inputs),
    }
    results = {}
    for name, (input_arg, output, count) in cases.items():
        print(name, flush=True)
        results[name] = phases(config, input_arg, output, count)
    server.stop()
    if args.million:
        print(f"local folder of {args.million} files, output to a local folder", flush=True)
        results[f"local folder, {args.million} files"] = a_million_files(config, args.out, args.million)
    (args.out / "bookkeeping.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'bookkeeping.json'}")


if __name__ == "__main__":
    main()
