"""One running job per output root: a lease, `<output>/_foley/lease.json`, taken with an exclusive create (a local
O_EXCL file, an S3 conditional PUT).

A run takes the lease before it plans (planning removes partial files, claims and stale staging, which another
running job still needs) and gives it back when it ends. While it runs, a daemon thread renews the lease every
`lease.renew_s`. A second run finds the lease and stops before doing anything, saying which run holds it, on which
host and process, and since when. A lease is taken over only when its holder cannot be running any more: on the
same host, its process has ended (a killed job resumes at once); from another host, it was not renewed for
`lease.expire_s` by this machine's clock.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from datetime import UTC, datetime

from foley.config import LeaseConfig
from foley.pipeline.layout import BOOKKEEPING_DIR
from foley.storage.store import Storage
from foley.storage.uris import StorageError, join

LEASE_NAME = f"{BOOKKEEPING_DIR}/lease.json"
TAKE_ATTEMPTS = 3  # a lease given back or taken over between our create and our read: try again


class LeaseHeldError(StorageError):
    """Another run of a job holds the output root; the message says who and since when."""


def process_ended(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        return False
    return False


class OutputLease:
    def __init__(self, storage: Storage, output_root: str, run_id: str, settings: LeaseConfig):
        self.storage, self.output_root, self.settings = storage, output_root, settings
        self.uri = join(output_root, LEASE_NAME)
        self.holder = {
            "run_id": run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def take(self) -> None:
        """Hold the output root for this run, or raise LeaseHeldError naming the run that holds it."""
        for _ in range(TAKE_ATTEMPTS):
            if self.storage.create_exclusive(self.uri, self._record()):
                self._renewer = threading.Thread(target=self._renew, name="output-lease", daemon=True)
                self._renewer.start()
                return
            held = self._read()
            if held is None:  # given back meanwhile
                continue
            if gone := self.holder_gone(held):
                print(f"taking over {self.uri} from run {held.get('run_id')}: {gone}", file=sys.stderr, flush=True)
                self.storage.delete(self.uri)
                continue
            age = time.time() - float(held.get("renewed_at", 0))
            raise LeaseHeldError(
                f"{self.output_root} is in use by another run: run {held.get('run_id')} on host {held.get('host')} "
                f"(process {held.get('pid')}), started {held.get('started_at')}, lease renewed {age:.0f} s ago. "
                "Two runs on one output would remove each other's unfinished files; wait for that run to end. If it "
                f"is dead, its lease ({self.uri}) is taken over {self.settings.expire_s:.0f} s after its last renewal, "
                "or at once from its own host; delete that file to take it now"
            )
        raise LeaseHeldError(f"could not take {self.uri}: other runs kept taking and giving it back; try again")

    def holder_gone(self, held: dict) -> str:
        """Why the holder of a lease cannot be running any more, or '' while it may be."""
        if held.get("host") == self.holder["host"] and process_ended(int(held.get("pid", 0))):
            return f"its process {held.get('pid')} on this host has ended"
        silent = time.time() - float(held.get("renewed_at", 0))
        if silent > self.settings.expire_s:
            return f"it was not renewed for {silent:.0f} s (lease.expire_s={self.settings.expire_s:.0f})"
        return ""

    def give_back(self) -> None:
        """End the renewals and remove the lease, if it is still this run's."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
            self._renewer = None
            held = self._read()
            if held is not None and held.get("run_id") == self.holder["run_id"]:
                self.storage.delete(self.uri)

    def _record(self) -> bytes:
        return json.dumps(self.holder | {"renewed_at": time.time()}).encode()

    def _read(self) -> dict | None:
        try:
            return json.loads(self.storage.read_bytes(self.uri))
        except (StorageError, OSError, ValueError):
            return None

    def _renew(self) -> None:
        while not self._stop.wait(self.settings.renew_s):
            held = self._read()
            if held is None or held.get("run_id") != self.holder["run_id"]:
                print(f"warning: {self.uri} is no longer held by this run ({held})", file=sys.stderr, flush=True)
                return
            self.storage.write_bytes(self.uri, self._record())
