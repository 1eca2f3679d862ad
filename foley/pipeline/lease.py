"""One running job per output root: a lease, `<output>/_foley/lease.json`, taken with an exclusive create (a local
hard link of a finished file, an S3 conditional PUT).

A run takes the lease before it plans (planning removes partial files, claims and stale staging, which another
running job still needs) and gives it back when it ends. While it runs, a daemon thread renews the lease every
`lease.renew_s`. A second run finds the lease and stops before doing anything, saying which run holds it, on which
host and process, and since when. A lease is taken over only when its holder cannot be running any more: on the
same host, its process has ended (a killed job resumes at once); from another host, it was not renewed for
`lease.expire_s` by this machine's clock; and a damaged lease file (empty or cut short, as a full disk leaves it)
counts as expired.

Every change after the create is conditional on the version read (S3 If-Match on the ETag; locally a lock beside
the file): a takeover replaces exactly the dead lease it judged, never a fresh one another run wrote meanwhile, and
a renewal or a give-back touches only this run's own lease. A run whose renewal finds another run's lease, or none,
has lost it: it stops (`on_lost`), writing nothing more.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

from foley.config import LeaseConfig
from foley.pipeline.layout import BOOKKEEPING_DIR
from foley.storage.store import Storage
from foley.storage.uris import StorageError, join

LEASE_NAME = f"{BOOKKEEPING_DIR}/lease.json"
TAKE_ATTEMPTS = 3  # a lease given back or taken over between our create and our read: try again


class LeaseHeldError(StorageError):
    """Another run of a job holds the output root; the message says who and since when."""


class LeaseLostError(StorageError):
    """This run's lease was taken over or removed while it ran: it stopped writing."""


def process_ended(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # it exists, as another user's process
        return False
    return False


def parse_record(content: bytes) -> dict | None:
    """A lease file's record, or None when the file is damaged (empty, cut short, not a JSON object)."""
    try:
        record = json.loads(content)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "run_id" in record else None


class OutputLease:
    def __init__(
        self,
        storage: Storage,
        output_root: str,
        run_id: str,
        settings: LeaseConfig,
        on_lost: Callable[[], None] | None = None,
    ):
        """`on_lost` is called (from the renewing thread) once the lease is found lost; the job stops there."""
        self.storage, self.output_root, self.settings, self.on_lost = storage, output_root, settings, on_lost
        self.uri = join(output_root, LEASE_NAME)
        self.holder = {
            "run_id": run_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        self.version: str | None = None  # of the lease file as this run last wrote it
        self.lost = ""  # why this run no longer holds the lease, once it does not
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def take(self) -> None:
        """Hold the output root for this run, or raise LeaseHeldError naming the run that holds it."""
        for _ in range(TAKE_ATTEMPTS):
            record = self._record()
            if self.storage.create_exclusive(self.uri, record):
                found = self.storage.read_versioned(self.uri)
                if found is None or found[0] != record:  # given back or taken over at once: judge again
                    continue
                self._hold(found[1])
                return
            found = self.storage.read_versioned(self.uri)
            if found is None:  # given back meanwhile
                continue
            content, version = found
            held = parse_record(content)
            gone = f"its file is damaged ({len(content)} bytes, not a lease record)" if held is None else ""
            gone = gone or self.holder_gone(held)
            if not gone:
                raise self._held_by(held)
            taken = self.storage.replace_if(self.uri, self._record(), version)
            if taken is not None:  # the very lease judged dead, replaced in one step
                print(f"taking over {self.uri} from {describe(held)}: {gone}", file=sys.stderr, flush=True)
                self._hold(taken)
                return
        raise LeaseHeldError(f"could not take {self.uri}: other runs kept taking and giving it back; try again")

    def _held_by(self, held: dict) -> LeaseHeldError:
        age = time.time() - float(held.get("renewed_at", 0))
        return LeaseHeldError(
            f"{self.output_root} is in use by another run: run {held.get('run_id')} on host {held.get('host')} "
            f"(process {held.get('pid')}), started {held.get('started_at')}, lease renewed {age:.0f} s ago. "
            "Two runs on one output would remove each other's unfinished files; wait for that run to end. If it "
            f"is dead, its lease ({self.uri}) is taken over {self.settings.expire_s:.0f} s after its last renewal, "
            "or at once from its own host; delete that file to take it now"
        )

    def holder_gone(self, held: dict) -> str:
        """Why the holder of a lease cannot be running any more, or '' while it may be."""
        try:
            pid, renewed = int(held.get("pid", 0)), float(held.get("renewed_at", 0))
        except (TypeError, ValueError):
            return "its record is damaged (no process or renewal time)"
        if held.get("host") == self.holder["host"] and process_ended(pid):
            return f"its process {pid} on this host has ended"
        silent = time.time() - renewed
        if silent > self.settings.expire_s:
            return f"it was not renewed for {silent:.0f} s (lease.expire_s={self.settings.expire_s:.0f})"
        return ""

    def _hold(self, version: str) -> None:
        self.version, self.lost = version, ""
        self._stop.clear()
        self._renewer = threading.Thread(target=self._renew, name="output-lease", daemon=True)
        self._renewer.start()

    def give_back(self) -> None:
        """End the renewals and remove the lease, if it is still this run's (a lost lease is left to its holder)."""
        self._stop.set()
        if self._renewer is None:
            return
        self._renewer.join()
        self._renewer = None
        if self.lost or self.version is None:
            return
        try:
            self.storage.delete_if(self.uri, self.version)
        except StorageError as exc:
            print(
                f"warning: could not give back {self.uri} ({exc}); the next run on this host takes it over at once, "
                f"one elsewhere after lease.expire_s={self.settings.expire_s:.0f} s",
                file=sys.stderr,
                flush=True,
            )

    def _record(self) -> bytes:
        return json.dumps(self.holder | {"renewed_at": time.time()}).encode()

    def _renew(self) -> None:
        last_renewal = time.monotonic()
        while not self._stop.wait(self.settings.renew_s):
            try:
                renewed = self.storage.replace_if(self.uri, self._record(), self.version)
            except StorageError as exc:  # storage out of reach: try again, unless the lease may have expired
                if time.monotonic() - last_renewal < self.settings.expire_s - self.settings.renew_s:
                    print(f"warning: renewing {self.uri} failed ({exc}); trying again", file=sys.stderr, flush=True)
                    continue
                renewed, why = None, f"it could not be renewed for {self.settings.expire_s:.0f} s ({exc})"
            else:
                why = "another run took it over or removed it"
            if renewed is None:
                self._lose(why)
                return
            self.version, last_renewal = renewed, time.monotonic()

    def _lose(self, why: str) -> None:
        self.lost = f"{self.uri} is no longer held by this run: {why}"
        print(f"error: {self.lost}; stopping, so that two runs never write one output", file=sys.stderr, flush=True)
        if self.on_lost is not None:
            self.on_lost()


def describe(held: dict | None) -> str:
    if held is None:
        return "a damaged lease"
    return f"run {held.get('run_id')}"
