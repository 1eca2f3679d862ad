"""The report page of a dub job, opened in a real browser (Debian's headless Chromium, driven by Selenium)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from PIL import Image

from libraries import MIXED_OK, MIXED_SKIPPED, STREET

LOADED_S = 30


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver

    if not shutil.which("chromedriver"):
        pytest.fail("chromedriver is missing: apt-get install chromium chromium-driver (make setup does)")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000", "--mute-audio"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    options.binary_location = shutil.which("chromium") or ""
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(shutil.which("chromedriver")))
    yield driver
    driver.quit()


@pytest.mark.slow
def test_the_report_lists_every_input_plays_the_sound_and_filters_by_status(mixed_run, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out, result = mixed_run.root / "out", mixed_run
    assert result.returncode == 1, result.stdout + result.stderr  # inputs failed
    page = out / "_foley/report" / "index.html"
    assert f"report: {page}" in result.stdout
    failed = sorted(mixed_run.facts["errors"])
    statuses = dict.fromkeys(MIXED_OK, "ok") | dict.fromkeys(failed, "failed") | dict.fromkeys(MIXED_SKIPPED, "skipped")

    browser.get(page.as_uri())
    wait = WebDriverWait(browser, LOADED_S)
    everything = f"{len(statuses)} matching of {len(statuses)}"
    wait.until(lambda driver: driver.find_element(By.ID, "count").text.startswith(everything))
    left_out = "1 file left out: 1 .txt (input.extensions), e.g. notes.txt"
    assert left_out in result.stdout and browser.find_element(By.ID, "left-out").text == left_out
    rows = {
        row.get_attribute("data-path"): row.get_attribute("data-status")
        for row in browser.find_elements(By.CSS_SELECTOR, "tr.video")
    }
    assert rows == statuses

    axes = [label.text for label in browser.find_elements(By.CSS_SELECTOR, "#throughput svg text")]
    assert "videos/min" in axes and "minutes since the first video finished" in axes  # a chart with units

    browser.find_element(By.CSS_SELECTOR, f'tr.video[data-path="{STREET}"]').click()
    audio = wait.until(lambda driver: driver.find_element(By.CSS_SELECTOR, "tr.detail audio"))
    wait.until(lambda driver: driver.execute_script("return arguments[0].readyState >= 1", audio))
    assert browser.execute_script("return arguments[0].error", audio) is None
    assert audio.get_attribute("src").endswith("/street%20%232%3F.flac")
    assert abs(browser.execute_script("return arguments[0].duration", audio) - 12.0) < 0.1
    pictures = browser.find_elements(By.CSS_SELECTOR, "tr.detail img")
    assert len(pictures) == 2  # the poster frames and the spectrogram
    wait.until(lambda driver: all(driver.execute_script("return arguments[0].naturalWidth > 0", p) for p in pictures))
    assert len(browser.find_elements(By.CSS_SELECTOR, "tr.detail table tr")) == 1 + 2  # a header, two windows
    headers = [cell.text for cell in browser.find_elements(By.CSS_SELECTOR, "tr.detail table th")]
    for window in browser.find_elements(By.CSS_SELECTOR, "tr.detail table tr")[1:]:
        assert "(weight 0." in window.find_elements(By.TAG_NAME, "td")[headers.index("sound sources")].text
    # The boxes are drawn on the poster frames: the middle of the best source's top edge, as the browser shows it
    # (a screenshot of the picture), has its outline colour (the first of report.source_colors, #ff3b30).
    manifest = pq.read_table(out / "_foley/manifest/manifest.parquet").to_pylist()
    [street] = [row for row in manifest if row["relative_path"] == STREET]
    assert street["detector_model"].endswith("detector:vggsound.txt")  # the sources reach the manifest, weighed
    for note in street["window_notes"]:
        assert note["sources"] and all({"label", "score", "box", "weight"} <= set(s) for s in note["sources"])
        assert sum(source["weight"] for source in note["sources"]) == pytest.approx(0.5, abs=1e-3)
    x0, y0, x1, _ = street["window_notes"][0]["sources"][0]["box"]
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", pictures[0])  # wherever its row is
    shown = Image.open(io.BytesIO(pictures[0].screenshot_as_png)).convert("RGB")  # the poster as drawn on screen
    scale_x = shown.width / browser.execute_script("return arguments[0].naturalWidth", pictures[0])
    scale_y = shown.height / browser.execute_script("return arguments[0].naturalHeight", pictures[0])
    red, green, blue = shown.getpixel((round((x0 + x1) / 2 * 119 * scale_x), round(y0 * 71 * scale_y)))
    assert red > 180 and green < 130 and blue < 130, (red, green, blue)
    if target := os.environ.get("FOLEY_REPORT_SCREENSHOT"):  # how docs/report.png is made
        Path(target).write_bytes(browser.get_screenshot_as_png())

    Select(browser.find_element(By.ID, "status")).select_by_visible_text("failed")
    shown = {row.get_attribute("data-path"): row.text for row in browser.find_elements(By.CSS_SELECTOR, "tr.video")}
    assert sorted(shown) == failed
    assert "broken.mp4" in shown["broken.mp4"] and "decode" in shown["broken.mp4"]

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []


def test_posters_spread_over_the_video_and_conditions_read_as_words():
    from foley.pipeline.report import describe_conditions
    from foley.pipeline.report_assets import chosen_posters

    assert (
        chosen_posters(2, 24) == [0, 1] and chosen_posters(100, 5) == [0, 25, 50, 74, 99] and chosen_posters(0, 5) == []
    )
    assert describe_conditions('{"negative_prompt": "", "visual_weight": null}') == ""  # the picture alone
    assert (
        describe_conditions(
            '{"prompt": "wind", "prompt_weight": 0.5, "prompt_weight_end": 0.9, "negative_prompt": "speech, music"}'
        )
        == "prompt 'wind' (weight 0.5 to 0.9); negative prompt 'speech, music'"
    )


def test_sound_source_boxes_are_outlined_on_the_poster_frames_the_best_on_top():
    import numpy as np

    from foley.config import ReportConfig
    from foley.pipeline.report_assets import poster_strip

    gray = np.full((96, 160, 3), 128, np.uint8)
    best, other = (0.1, 0.1, 0.6, 0.6), (0.1, 0.1, 0.9, 0.9)  # sharing the top-left corner
    settings = ReportConfig(jpeg_quality=95)
    strip = np.asarray(Image.open(io.BytesIO(poster_strip([gray, gray], settings, [[best, other], []]))))
    assert strip.shape == (72, 240, 3)
    top, left = round(0.1 * 71), round(0.1 * 119)
    assert strip[top, round(0.35 * 119)] == pytest.approx([255, 59, 48], abs=40)  # the best: #ff3b30
    assert strip[top, round(0.75 * 119)] == pytest.approx([255, 204, 0], abs=40)  # the second: #ffcc00
    assert strip[top, left] == pytest.approx([255, 59, 48], abs=40)  # where they meet, the best is on top
    assert strip[36, 60] == pytest.approx([128, 128, 128], abs=8) and strip[36, 180] == pytest.approx([128] * 3, abs=8)


def test_a_windows_sources_read_with_their_weights_or_as_weighed_by_the_remixer():
    from foley.pipeline.report import describe_window

    window = {"start_s": 0.0, "end_s": 10.24, "shot": 0}
    sources = [
        {"label": "dog barking", "score": 0.61, "box": [0, 0, 1, 1], "frames": 2, "weight": 0.25},
        {"label": "speech", "score": 0.4, "box": [0, 0, 1, 1], "frames": 1, "weight": None},
    ]
    described = describe_window(0, window, {"sources": sources})
    assert described["sources"] == "dog barking 0.61 (weight 0.25), speech 0.40 (weighed by the remixer)"
