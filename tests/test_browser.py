"""The pages in a real browser: Debian's headless Chromium driven by Playwright.

Starts the real daemon, opens the index, an output page and the status page, checks that
entries render and links work, and that a feed carrying <script>, onerror= and javascript:
payloads (tests/data/hostile.xml) runs nothing: no dialog, no flag set on window.

`.ci/run` installs Chromium when it is missing; elsewhere, without a browser, the test is
skipped and says why.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import feedparser
import pytest
from conftest import FeedServer, free_port
from test_e2e import Daemon, http_get, start_daemon, wait_for

__all__ = ["start_daemon"]
pytestmark = pytest.mark.e2e

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str | None:
    found = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    return found if Path(found).exists() else None


@pytest.fixture
def browser_page() -> Any:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium here: `apt-get install chromium` (.ci/run does it in CI)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # the test extra is missing: `make test` installs it
        pytest.skip(f"playwright is not installed: {e}")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            yield page
        finally:
            browser.close()


def _config(feed_server: FeedServer, write_config: Callable[..., Path], port: int) -> Path:
    body = ""
    for name, filename in (("russia", "section-russia.rss.xml"), ("hostile", "hostile.xml")):
        feed_server.serve_file(f"/{name}.xml", filename)
        body += f'[[feeds]]\nname = "{name}"\nurl = "{feed_server.url(name + ".xml")}"\n\n'
    feed_server.serve_status("/broken.xml", 500)
    body += f'[[feeds]]\nname = "broken"\nurl = "{feed_server.url("broken.xml")}"\n\n'
    body += '[[outputs]]\nname = "all"\ntitle = "Everything"\n'
    return write_config(
        body,
        listen=f"127.0.0.1:{port}",
        base_url=f"http://127.0.0.1:{port}",
        interval="5s",
        timeout="5s",
    )


def test_pages_in_a_real_browser(
    browser_page: Any,
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[[Path, int], Daemon],
) -> None:
    port = free_port()
    daemon = start_daemon(_config(feed_server, write_config, port), port)
    base = daemon.base

    def entries() -> int:
        return len(feedparser.parse(http_get(base + "/outputs/all.atom")[2]).entries)

    wait_for(lambda: entries() == 4, "both feeds' entries in the output")
    wait_for(lambda: b'"error"' in http_get(base + "/status.json")[2], "the broken feed's error")

    page = browser_page
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    # Nothing leaves the machine: entry images point at example hosts.
    page.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(base) else route.abort(),
    )

    # The index lists the output; its link leads to the output page.
    page.goto(base + "/")
    assert page.title() == "Feeds"
    page.get_by_role("link", name="Everything").click()
    page.wait_for_url(base + "/outputs/all.html")
    assert page.locator("article.entry").count() == 4
    assert page.locator("article.entry h2").first.inner_text()
    assert page.get_by_text("Entities <script>alert(5)</script> in the title").count() == 1
    assert page.locator("time").count() >= 4
    alternates = page.locator('link[rel="alternate"]').evaluate_all("els => els.map(e => e.type)")
    assert sorted(alternates) == [
        "application/atom+xml",
        "application/feed+json",
        "application/rss+xml",
    ]

    # Open the hostile entry's full text and click everything that carried a payload.
    for details in page.locator("details").all():
        details.locator("summary").click()
    page.get_by_text("Plain text that must survive sanitising.").click()
    # The javascript: URL is gone: the anchor keeps its text and has no href at all.
    claim = page.locator("a", has_text="Claim your prize")
    claim.click()
    assert not (claim.get_attribute("href") or "").lower().startswith("javascript:")
    assert page.locator("script, iframe, form, [onerror], [onclick], [style]").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == [] and errors == []

    # Every link to the daemon on the page answers 200.
    hrefs = page.locator("a[href], link[href]").evaluate_all("els => els.map(e => e.href)")
    ours = sorted({h for h in hrefs if h.startswith(base)})
    assert len(ours) == 5  # the index, three feed formats and the OPML
    for href in ours:
        assert page.request.get(href).status == 200, href

    # Back to the index, then the status page (the browser's Accept header asks for HTML).
    page.get_by_role("link", name="All outputs").click()
    page.wait_for_url(base + "/")
    page.get_by_role("link", name="Feed status").click()
    page.wait_for_url(base + "/status")
    assert page.title() == "Feed status"
    assert page.locator("#feed-russia .status").inner_text() in ("ok", "not_modified", "unchanged")
    assert page.locator("#feed-broken .status").inner_text() == "error"
    assert "500" in page.locator("#feed-broken .http_status").inner_text()
    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == [] and errors == []
    assert daemon.stop() == 0
