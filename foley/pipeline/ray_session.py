"""The Ray session of a job: starting or joining Ray, the checks that it can host the job, and Ray Data's settings,
made in one place.

Ray is started or joined only here, once there is work: a run with nothing left to do never starts it (the jobs
import the stage helpers, which import Ray's modules, but importing is not starting).
"""

from __future__ import annotations

import logging
import os
import sys

from foley.config import ConfigError, FoleyConfig, ProgressConfig
from foley.pipeline.kinds import JobKind
from foley.pipeline.rows import first_line
from foley.storage.uris import is_s3

log = logging.getLogger("foley.job")
ONE_ROW_PER_BLOCK = 1  # bytes: any row is larger, so each becomes a block of its own


def check_gpus(config: FoleyConfig, kind: JobKind, cluster_gpus: float) -> None:
    """Stages that ask for GPUs on a cluster without any would wait forever; say so instead."""
    wanting = [name for name in kind.stages if getattr(config.stages, name).num_gpus > 0]
    if wanting and cluster_gpus == 0:
        message = (
            f"stages {', '.join(wanting)} ask for GPUs but the Ray cluster has none; set "
            f"stages.<name>.num_gpus=0 (or use a CPU preset) or run on a cluster with GPU workers"
        )
        if os.environ.get("RAY_ADDRESS"):  # an autoscaling cluster may still add GPU nodes
            log.warning(message)
        else:
            raise ConfigError(message)


class RayStartError(ConfigError):
    """This machine could not start or join Ray: the job cannot run as set up (exit 2, like a bad setting)."""


def check_local_output(output_root: str, config: FoleyConfig, nodes: int) -> None:
    """A local output on a cluster of several nodes is written on whichever node runs the last stage, and a long
    video's segments staged on two nodes never meet: refuse it, unless every node mounts that folder."""
    if nodes > 1 and not is_s3(output_root) and not config.storage.shared_local_output:
        raise ConfigError(
            f"--output {output_root} is a local folder, but the Ray cluster has {nodes} nodes: each would write its "
            "part on its own disk. Give an s3:// output, or set storage.shared_local_output=true if every node "
            "mounts that folder at the same path"
        )


def connect_ray():
    """Join the cluster in RAY_ADDRESS (as under `ray job submit`; `auto` is the newest one on this machine), or
    start a local Ray of this job's own: never, unasked, another job's Ray that happens to run on this machine, which
    ray.init() alone would join (the newest in /tmp/ray), with its nodes, its load and its end."""
    import ray  # noqa: PLC0415 - only once there is work: a run with nothing left to do never starts or loads Ray

    if not ray.is_initialized():
        try:
            ray.init(address=os.environ.get("RAY_ADDRESS") or "local", log_to_driver=True)
        except Exception as exc:  # noqa: BLE001 - whatever stops Ray, the job cannot start; say why, not a traceback
            address = os.environ.get("RAY_ADDRESS")
            where = f"join the Ray cluster at RAY_ADDRESS={address}" if address else "start a local Ray"
            raise RayStartError(
                f"could not {where} ({type(exc).__name__}: {first_line(exc)}); check that the machine has free "
                "memory and space under /tmp (or RAY_TMPDIR, whose path must be short), that no other Ray holds its "
                "ports, and try again"
            ) from None
    return ray


def quiet_progress_when_logged(progress: ProgressConfig) -> None:
    """In a terminal Ray Data draws progress bars, which stay. Into a log file or a job's log it prints its
    execution plans and every stage's progress every 10 s instead, screens of it for a short job, while this job
    prints a line per video with the rate and an ETA. So its INFO lines go only to its own log file (ray-data.log in
    the session's logs), unless progress.non_tty_ray_data_lines asks for them, then one total line per interval.
    (Ray Data reads its interval from the environment when it first logs.)"""
    from ray.data import DataContext  # noqa: PLC0415 - Ray is imported only once there is work

    if sys.stdout.isatty():
        return
    if not progress.non_tty_ray_data_lines:
        for handler in logging.getLogger("ray.data").handlers:
            if isinstance(handler, logging.StreamHandler):  # the console; its file handler keeps every line
                handler.setLevel(logging.WARNING)
        return
    os.environ.setdefault("RAY_DATA_NON_TTY_PROGRESS_LOG_INTERVAL", str(progress.non_tty_interval_s))
    DataContext.get_current().enable_operator_progress_bars = progress.non_tty_operator_lines


def configure_data(progress: ProgressConfig, *, one_row_per_block: bool) -> None:
    """Ray Data's settings for a job over videos, all made here, once it has joined Ray."""
    from ray.data import DataContext  # noqa: PLC0415 - Ray is imported only once there is work

    context = DataContext.get_current()
    # A batch whose task failed is logged and dropped, not the end of the job: its videos have no row at the end,
    # and the run fails them by name.
    context.max_errored_blocks = -1
    if one_row_per_block:
        # Ray Data hands whole blocks to actors: blocks of one row (a video, or a segment of one) are what spreads
        # the segments of one long video over every actor of the next stage.
        context.target_max_block_size = ONE_ROW_PER_BLOCK
    quiet_progress_when_logged(progress)
