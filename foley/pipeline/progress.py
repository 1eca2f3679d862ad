"""The progress a long job prints: a line per finished video (and per staged segment of a long one) with the rate
so far and an ETA, so a job's log shows how far it is and when it should end."""

from __future__ import annotations

import time


def pace_line(done: int, total: int, elapsed_s: float) -> str:
    """The rate so far and when the rest should be done at that rate: '2.4 videos/min, ETA 3m10s'."""
    per_minute = done / max(elapsed_s, 1e-9) * 60
    left_s = (total - done) / per_minute * 60
    return f"{per_minute:.1f} videos/min, ETA {clock(left_s)}" if done < total else f"{per_minute:.1f} videos/min"


def clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


class Progress:
    """The lines of one run's stream of results: `[3/40] ok      street.mp4  (2 windows)  3.1 videos/min, ETA
    9m02s`, and `[3/40] segment 2/5 of film.mkv staged` for each staged part of a long video."""

    def __init__(self, total: int):
        self.total, self.done, self.started = total, 0, time.perf_counter()

    def staged(self, path: str, segment: int, count: int) -> None:
        print(f"[{self.done}/{self.total}] segment {segment}/{count} of {path} staged", flush=True)

    def finished(self, path: str, status: str, detail: str) -> None:
        self.done += 1
        pace = pace_line(self.done, self.total, time.perf_counter() - self.started)
        print(f"[{self.done}/{self.total}] {status:<7} {path}  ({detail})  {pace}", flush=True)
