"""Local Ray heads for the tests: `ray start --head` on 127.0.0.1 with ports of its own and token authentication on,
stopped by killing exactly its own processes."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import psutil

from processes import alive, kill_until_gone

RAY = str(Path(sys.executable).parent / "ray")
TOKEN_FILE = Path.home() / ".ray" / "auth_token"  # where `ray start` and the token-mode clients look for it


@dataclass(frozen=True)
class Head:
    gcs: str  # what a driver joins with RAY_ADDRESS
    dashboard: str  # what `ray job submit --address` takes
    sid: int  # the session its daemons keep, to stop exactly them

    def client_env(self, env: dict) -> dict:
        """`env` for a process that joins this head: its address and the token mode (the token is in TOKEN_FILE)."""
        return env | {"RAY_ADDRESS": self.gcs, "RAY_AUTH_MODE": "token"}


def free_ports(count: int) -> list[int]:
    """`count` distinct free ports (held open together while chosen, so none comes twice)."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in probes]


def head_env() -> dict:
    env = os.environ | {"HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    return env


def ensure_token(env: dict) -> None:
    """Without a token `ray start` would start a head with authentication off. (Called once, before any test runs,
    so that parallel test processes never generate two.)"""
    if not TOKEN_FILE.is_file():
        subprocess.run([RAY, "get-auth-token", "--generate"], check=True, capture_output=True, env=env, timeout=120)


def start_head(env: dict, temp_dir: str, num_cpus: int = 2) -> Head:
    """`ray start --head` on 127.0.0.1 with its own ports and temp dir, token authentication on."""
    ensure_token(env)
    # Every port its own: other Ray clusters on this machine (a job's local Ray, another test's head) hold the
    # defaults, and a dashboard agent that cannot bind its HTTP port leaves the head unable to take jobs.
    gcs, dashboard, client, agent_http, agent_grpc, metrics, runtime_env, node_manager, object_manager = free_ports(9)
    start = subprocess.Popen(
        [
            RAY,
            "start",
            "--head",
            "--node-ip-address=127.0.0.1",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}",
            f"--node-manager-port={node_manager}",
            f"--object-manager-port={object_manager}",
            f"--num-cpus={num_cpus}",
            "--disable-usage-stats",
            f"--temp-dir={temp_dir}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env | {"RAY_AUTH_MODE": "token"},  # explicit: fail rather than run a head without authentication
        start_new_session=True,  # the head's daemons keep this session: stop_head kills them and nothing else
    )
    output, _ = start.communicate(timeout=300)
    if start.returncode != 0:
        stop_head(start.pid)
        raise AssertionError(f"ray start failed:\n{output}")
    return Head(gcs=f"127.0.0.1:{gcs}", dashboard=f"http://127.0.0.1:{dashboard}", sid=start.pid)


def _head_processes(sid: int) -> list[psutil.Process]:
    """The head's daemons and workers (its session), and what they started elsewhere (a job's driver)."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(process.pid) == sid:
                members.append(process)
    found = {process.pid: process for process in members}
    for process in members:
        with contextlib.suppress(psutil.Error):
            found.update({child.pid: child for child in process.children(recursive=True)})
    return [process for process in found.values() if alive(process)]


def stop_head(sid: int, timeout: float = 60) -> None:
    """What `ray stop --force` does (SIGKILL), but only to this head's processes: `ray stop` would kill every
    Ray process on the machine by name, other people's clusters included."""
    kill_until_gone(lambda: _head_processes(sid), timeout, "the head's processes")
