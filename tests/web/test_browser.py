"""The dashboard in a real browser (Debian's chromium through selenium and
chromedriver) against the real ``nexus-schedweb`` and a real daemon.

Each test saves a screenshot under its tmp_path; with NEXUS_SCHEDD_SCREENSHOTS=DIR
(e.g. ``docs/img``) the same PNG is also written there for docs/web.md.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest

from tests.web.conftest import TOKEN, SchedulerData, add_log_job, get_job
from tests.web.web_process import WebProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.timeout(90),
    pytest.mark.skipif(
        CHROMIUM is None or CHROMEDRIVER is None,
        reason="needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)",
    ),
]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

WAIT_S = 15


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    """Headless chromium with the flags it needs as root in a container."""
    profile = tempfile.mkdtemp(prefix="nxs-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        "--window-size=1280,900",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=str(CHROMEDRIVER))
    driver = webdriver.Chrome(options=options, service=service)
    driver.set_page_load_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def read_only_web(
    scheduler: SchedulerData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebProcess]:
    config = '[web]\ntimezone = "Europe/Berlin"\n'
    process = WebProcess(tmp_path_factory.mktemp("web-ro"), scheduler.socket, config)
    process.start()
    yield process
    process.close()


@pytest.fixture(scope="module")
def actions_web(
    scheduler: SchedulerData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WebProcess]:
    config = f'[web]\nactions_enabled = true\ntoken = "{TOKEN}"\ntimezone = "Europe/Berlin"\n'
    process = WebProcess(tmp_path_factory.mktemp("web-rw"), scheduler.socket, config)
    process.start()
    yield process
    process.close()


def screenshot(driver: WebDriver, tmp_path: Path, name: str) -> Path:
    """Save a PNG of the page under tmp_path (and under $NEXUS_SCHEDD_SCREENSHOTS)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(1280, min(max(int(height), 600), 1800))
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000
    target = os.environ.get("NEXUS_SCHEDD_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, Path(target) / f"{name}.png")
    driver.set_window_size(1280, 900)
    return path


def wait_for_text(driver: WebDriver, css: str, text: str) -> None:
    WebDriverWait(driver, WAIT_S).until(
        expected_conditions.text_to_be_present_in_element((By.CSS_SELECTOR, css), text)
    )


def test_overview_renders_real_data_and_live_events(
    browser: WebDriver, read_only_web: WebProcess, tmp_path: Path
) -> None:
    browser.get(read_only_web.url + "/")
    assert browser.title == "Overview · nexus-schedd"
    failed = browser.find_element(By.ID, "count-failed_permanent").text
    assert int(failed) >= 1
    assert "broken-export" in browser.find_element(By.TAG_NAME, "main").text
    # The live feed fills from Watch through /events and the small script.
    wait_for_text(browser, "#live-state", "live")
    wait_for_text(browser, "#live-feed", "heartbeat")
    screenshot(browser, tmp_path, "overview")


def test_job_page_renders_definition_occurrences_and_runs(
    browser: WebDriver, read_only_web: WebProcess, scheduler: SchedulerData, tmp_path: Path
) -> None:
    browser.get(f"{read_only_web.url}/jobs/{scheduler.report.id}")
    main = browser.find_element(By.TAG_NAME, "main").text
    assert "nightly-report" in main and "cron 30 2 * * * (Europe/Berlin)" in main
    assert len(browser.find_elements(By.CSS_SELECTOR, "ol.occurrences li")) == 10
    browser.get(f"{read_only_web.url}/jobs/heartbeat")
    assert browser.find_elements(By.CSS_SELECTOR, "table.runs tbody tr")
    assert "success" in browser.find_element(By.CSS_SELECTOR, "table.runs").text
    screenshot(browser, tmp_path, "job")


def test_timeline_renders_svg_lanes_for_the_next_24_hours(
    browser: WebDriver, read_only_web: WebProcess, tmp_path: Path
) -> None:
    browser.get(read_only_web.url + "/timeline")
    svg = browser.find_element(By.CSS_SELECTOR, "svg.timeline")
    assert svg.size["width"] >= 1000
    labels = {element.text for element in browser.find_elements(By.CSS_SELECTOR, ".tl-label")}
    assert {"heartbeat", "nightly-report", "one-shot-later"} <= labels
    assert len(browser.find_elements(By.CSS_SELECTOR, ".tl-mark")) >= 15
    screenshot(browser, tmp_path, "timeline")


def test_disabled_action_is_refused_even_when_the_button_is_forced(
    browser: WebDriver, read_only_web: WebProcess, scheduler: SchedulerData, tmp_path: Path
) -> None:
    job = anyio.run(add_log_job, scheduler.socket, "browser-read-only")
    browser.get(f"{read_only_web.url}/jobs/{job.id}")
    button = browser.find_element(By.ID, "action-pause")
    assert not button.is_enabled()
    assert "Read-only" in browser.find_element(By.CSS_SELECTOR, ".actions").text
    # Bypass the UI: enable the button and submit anyway; the server refuses.
    browser.execute_script("arguments[0].disabled = false; arguments[0].click();", button)
    wait_for_text(browser, ".error-page", "403")
    assert "Actions are disabled" in browser.find_element(By.CSS_SELECTOR, ".error-page").text
    assert anyio.run(get_job, scheduler.socket, job.id).status.value == "pending"
    screenshot(browser, tmp_path, "action-refused")


def test_enabled_action_pauses_the_job_end_to_end(
    browser: WebDriver, actions_web: WebProcess, scheduler: SchedulerData, tmp_path: Path
) -> None:
    job = anyio.run(add_log_job, scheduler.socket, "browser-pause")
    browser.get(f"{actions_web.url}/login?next=/jobs/{job.id}")
    browser.find_element(By.ID, "token").send_keys(TOKEN)
    browser.find_element(By.ID, "login-submit").click()
    # The login URL itself contains "/jobs/<id>" (?next=...): wait for the job
    # page's own button, not for the address.
    WebDriverWait(browser, WAIT_S).until(
        expected_conditions.element_to_be_clickable((By.ID, "action-pause"))
    )
    assert f"/jobs/{job.id}" in browser.current_url and "login" not in browser.current_url
    browser.find_element(By.ID, "action-pause").click()
    wait_for_text(browser, ".notice", "Job paused.")
    badge = browser.find_element(By.CSS_SELECTOR, f'[data-job-status="{job.id}"]')
    assert badge.text == "paused"
    assert anyio.run(get_job, scheduler.socket, job.id).status.value == "paused"
    assert browser.find_element(By.ID, "action-resume").is_enabled()
    screenshot(browser, tmp_path, "job-paused")
