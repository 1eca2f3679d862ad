"""Jobs run once per test session and read by every test that looks at a facet of them.

pytest-xdist's test processes share a session folder; a run is made there under a file lock by the first test that
needs it, while a test of another process that needs it too waits on the lock (an event, not a time), then reads
the finished run: its folder, exit code and output."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock


@dataclass(frozen=True)
class SharedRun:
    root: Path  # what the run made: its library, its output
    returncode: int
    stdout: str
    stderr: str
    facts: dict  # what the library's maker knows about it (e.g. the error each bad input must get)


def run_once(folder: Path, make: Callable[[Path], tuple[subprocess.CompletedProcess, dict]]) -> SharedRun:
    """`make(folder)` run once across every test process of the session; its run, as recorded, to all of them."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    record = folder / "run.json"
    with FileLock(f"{folder}.lock"):
        if not record.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a maker that raised left
            folder.mkdir()
            result, facts = make(folder)
            done = {"returncode": result.returncode, "stdout": result.stdout, "stderr": result.stderr, "facts": facts}
            record.write_text(json.dumps(done))
    return SharedRun(folder, **json.loads(record.read_text()))
