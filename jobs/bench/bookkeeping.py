"""The driver's bookkeeping at library scale: S3 requests and seconds of the plan, of the re-plan after a killed job
(its journal not folded) and of the fold, side by side for a bucket prefix, an input list of S3 URIs and a local
folder, in one run.

    python -m jobs.bench.bookkeeping [--inputs 2000] [--local-inputs 20000] --out DIR

The inputs are 16-byte stand-ins (the plan opens no input) in a bucket served by moto on loopback (the test
dependency `moto[server]`), the outputs go to the same bucket, and every request the driver's S3 client sends is
counted. "Killed" means every input's row was journalled by the last stage and the job died before its fold. The
tiny preset's models (models/tiny, from `make demo`) are identified, as in a real run. Writes bookkeeping.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

from foley.config import FoleyConfig, load_config
from foley.pipeline.job import JobRun
from foley.pipeline.kinds import DUB
from foley.pipeline.outputs import dub_outputs
from foley.pipeline.rows import OK
from foley.storage.store import Storage

ROOT = Path(__file__).resolve().parents[2]
STAND_IN = b"not a real video"  # 16 bytes


def counted(storage: Storage) -> Counter:
    """Every request the storage's S3 client sends from now on, by HTTP method."""
    requests: Counter = Counter()
    storage.s3.meta.events.register("before-send.s3", lambda request, **_: requests.update([request.method]))
    return requests


def phases(config: FoleyConfig, input_arg: str, output: str, count: int) -> dict[str, dict]:
    """Plan with nothing done, re-plan after a killed job, fold: requests and seconds of each."""
    results = {}

    def measure(name: str, work) -> object:
        run = JobRun(argparse.Namespace(input=input_arg, output=output, force=False), config, DUB)
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
        print(f"  {name:<28} {total:>7} requests ({total / count:.3f} per input) {seconds:>8.1f} s", flush=True)
        return value

    rows = measure("plan, nothing done", lambda run: run.plan(lambda item: dub_outputs(output, item, config)))
    journal = JobRun(argparse.Namespace(input=input_arg, output=output, force=False), config, DUB).manifest
    for row in rows:  # what the Mux stage journals as each video is published
        journal.record(row | {"status": OK})
    measure("re-plan after a killed job", lambda run: run.plan(lambda item: dub_outputs(output, item, config)))
    measure("fold the journal", lambda run: run.manifest.compact())
    return results


def main(argv: list[str] | None = None) -> None:
    from moto.server import ThreadedMotoServer  # noqa: PLC0415 - a test dependency, for this benchmark only

    parser = argparse.ArgumentParser(prog="python -m jobs.bench.bookkeeping", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", type=int, default=2000, help="inputs in the bucket and in the list")
    parser.add_argument("--local-inputs", type=int, default=20000, help="files in the local folder")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # moto takes any; boto3 signs with something
        os.environ[name] = "bench"
    os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    tiny = [f"storage.endpoint_url={endpoint}", f"storage.cache_dir={args.out / 'cache'}", "report.enabled=false"]
    config = load_config(ROOT / "configs" / "tiny.yaml", tiny)
    storage = Storage(config.storage)
    bucket = "library"
    storage.s3.create_bucket(Bucket=bucket)
    uris = [f"s3://{bucket}/silent/v{index:06d}.mp4" for index in range(args.inputs)]
    for uri in uris:
        storage.s3.put_object(Bucket=bucket, Key=uri.split("/", 3)[3], Body=STAND_IN)
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
    (args.out / "bookkeeping.json").write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out / 'bookkeeping.json'}")


if __name__ == "__main__":
    main()
