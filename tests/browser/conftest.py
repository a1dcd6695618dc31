"""Playwright (sync API) driving Debian's chromium, headless, against the real running service.

The browser comes from the distribution (``scripts/install-test-deps.sh``), never from
``playwright install``. Every request the page makes to a host other than zhserve is aborted and
recorded, so the tests also prove the UI works offline. Screenshots go to artifacts/screenshots/.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.conftest import REPO_ROOT, require_program

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
]
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 375, "height": 812}
FAILED_KEY = pytest.StashKey[bool]()


@dataclass
class PageRecord:
    """What a page did: console errors, uncaught exceptions, API calls, blocked outside requests."""

    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    api_calls: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One chromium for the browser tests, closed when they end.

    Playwright's sync API keeps an asyncio loop running on the main thread while it is open, and
    Ray's blocking ``DeploymentResponse.result()`` refuses to run inside one, so the browser must
    not outlive this package (a session-scoped browser broke every later Serve test that used a
    handle).
    """
    require_program(CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Remembers a failed test so its page fixture can save a screenshot of the failure."""
    report = yield
    if report.failed:
        item.stash[FAILED_KEY] = True
    return report


def screenshot_path(name: str) -> Path:
    """artifacts/screenshots/<name>.png, its directory created."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS / f"{name}.png"


def screenshot(page: Any, name: str) -> Path:
    """Saves a full-page screenshot as artifacts/screenshots/<name>.png."""
    path = screenshot_path(name)
    page.screenshot(path=str(path), full_page=True)
    return path


def _open_page(
    browser: Any, zhserve_url: str, viewport: dict[str, int], request: pytest.FixtureRequest
) -> Iterator[Any]:
    context = browser.new_context(
        viewport=viewport,
        base_url=zhserve_url,
        locale="zh-CN",
        permissions=["clipboard-read", "clipboard-write"],
    )
    context.set_default_timeout(30_000)
    own_host = urlsplit(zhserve_url).netloc
    record = PageRecord()

    def route(route: Any) -> None:
        url = route.request.url
        if url.startswith(("data:", "blob:")) or urlsplit(url).netloc == own_host:
            if "/v1/" in url and route.request.method == "POST":
                record.api_calls.append(urlsplit(url).path)
            route.continue_()
        else:
            record.blocked.append(url)
            route.abort()

    context.route(re.compile(r".*"), route)
    page = context.new_page()
    page.on("console", lambda message: message.type == "error" and record.console_errors.append(message.text))
    page.on("pageerror", lambda error: record.page_errors.append(str(error)))
    page.record = record
    try:
        yield page
    finally:
        if request.node.stash.get(FAILED_KEY, False):
            screenshot(page, f"FAILED-{request.node.name}")
        context.close()


@pytest.fixture
def page(browser: Any, zhserve_url: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh desktop-sized page on the UI (not yet navigated)."""
    yield from _open_page(browser, zhserve_url, DESKTOP, request)


@pytest.fixture
def phone_page(browser: Any, zhserve_url: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh 375 px wide page on the UI (not yet navigated)."""
    yield from _open_page(browser, zhserve_url, PHONE, request)
