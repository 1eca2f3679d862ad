"""How fast the report opens for a large library: a synthetic manifest of N rows, its report written, then opened
in headless Chromium (Debian's chromium and chromium-driver, driven by Selenium).

    python -m jobs.bench.report_load [--rows 100000] --out DIR

Prints the seconds to write the report, to show the first rows, to load every row, and to filter by status.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from foley.config import FoleyConfig
from foley.pipeline.kinds import DUB
from foley.pipeline.layout import MANIFEST_DIR, REPORT_DIR
from foley.pipeline.manifest import manifest_schema
from foley.pipeline.report import write_report

WINDOWS = [{"start_s": 0.0, "end_s": 10.24, "shot": 0}, {"start_s": 9.6, "end_s": 12.0, "shot": 0}]
STATUSES = ("ok", "failed", "skipped")
TIMEOUT_S = 600


def synthetic_manifest(out: Path, rows: int) -> None:
    now = datetime.now(UTC)
    records = [
        {
            "input_uri": f"s3://library/v{i:06d}.mp4",
            "output_uri": str(out / f"v{i:06d}.mp4"),
            "outputs": [str(out / f"v{i:06d}.mp4")],
            "result_id": f"{i:016x}",
            "relative_path": f"v{i:06d}.mp4",
            "status": STATUSES[i % 3],
            "error": "" if i % 3 == 0 else f"decode: v{i:06d}.mp4: not a readable video",
            "duration_s": 12.0,
            "n_windows": len(WINDOWS),
            "windows": WINDOWS,
            "config_hash": "0123456789abcdef",
            "finished_at": now,
            **{f"seconds_{stage}": 1.0 for stage in DUB.stages},
        }
        for i in range(rows)
    ]
    (out / MANIFEST_DIR).mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records, schema=manifest_schema(DUB)), out / MANIFEST_DIR / "manifest.parquet")


def main(argv: list[str] | None = None) -> int:
    from selenium import webdriver  # noqa: PLC0415 - a test dependency, needed here only
    from selenium.webdriver.common.by import By  # noqa: PLC0415
    from selenium.webdriver.support.ui import Select  # noqa: PLC0415

    parser = argparse.ArgumentParser(prog="python -m jobs.bench.report_load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    shutil.rmtree(args.out, ignore_errors=True)
    synthetic_manifest(args.out, args.rows)
    started = time.perf_counter()
    page = write_report(FoleyConfig(), str(args.out))
    written = time.perf_counter() - started

    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or ""
    options.page_load_strategy = "none"  # time the page itself, not the browser's load event
    browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    try:
        started = time.perf_counter()
        browser.get(Path(page).as_uri())
        while not browser.find_elements(By.CSS_SELECTOR, "tr.video") and time.perf_counter() - started < TIMEOUT_S:
            time.sleep(0.05)
        first = time.perf_counter() - started
        loaded = f"{args.rows} matching of {args.rows}"
        while not browser.find_element(By.ID, "count").text.startswith(loaded):
            if time.perf_counter() - started > TIMEOUT_S:
                raise TimeoutError(f"the report did not load {args.rows} rows in {TIMEOUT_S} s")
            time.sleep(0.2)
        every = time.perf_counter() - started
        started = time.perf_counter()
        Select(browser.find_element(By.ID, "status")).select_by_visible_text("failed")
        filtered = time.perf_counter() - started
        count = browser.find_element(By.ID, "count").text
    finally:
        browser.quit()
    data_mb = sum(f.stat().st_size for f in (args.out / REPORT_DIR / "data").iterdir()) / 1e6
    print(
        f"{args.rows} rows: report written in {written:.1f} s ({data_mb:.0f} MB of data scripts); first rows shown "
        f"after {first:.2f} s, every row loaded after {every:.1f} s; filtering by status took {filtered:.2f} s "
        f"({count})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
