"""Waiting on and killing the processes of a job started in its own session (driver, local Ray, workers)."""

import contextlib
import os
import time

import psutil


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def session_of(process: psutil.Process) -> int | None:
    """The job runs in its own session; Ray's workers keep it (though each has its own process group)."""
    try:
        return os.getsid(process.pid)
    except (ProcessLookupError, psutil.Error):
        return None


def cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


def session_processes(sid: int) -> list[psutil.Process]:
    return [process for process in psutil.process_iter() if session_of(process) == sid]


def kill_session(sid: int) -> None:
    for process in session_processes(sid):
        with contextlib.suppress(psutil.Error):
            process.kill()


def alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def kill_until_gone(living, timeout: float, what: str) -> None:
    """SIGKILL the processes `living()` returns, again and again, until it returns none (one forked meanwhile too)."""
    deadline = time.monotonic() + timeout
    while processes := living():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} survived the kill: {[cmdline(p) for p in processes]}")
        for process in processes:
            with contextlib.suppress(psutil.Error):
                process.kill()
        time.sleep(0.1)


def kill_whole_session(sid: int, timeout: float = 30) -> None:
    """Every process of the session, whatever its process group."""
    kill_until_gone(lambda: [process for process in session_processes(sid) if alive(process)], timeout, "processes")
