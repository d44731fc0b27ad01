"""The pages in a real browser: Debian's headless Chromium driven by Playwright.

Starts the real daemon, opens the index, an output page and the status page, checks that
entries render and links work, and that a feed carrying <script>, onerror= and javascript:
payloads (tests/data/hostile.xml) runs nothing: no dialog, no flag set on window.

`.ci/run` installs Chromium when it is missing; elsewhere, without a browser, the test is
skipped and says why.
"""

from __future__ import annotations

import json
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
def browser() -> Any:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium here: `apt-get install chromium` (.ci/run does it in CI)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:  # the test extra is missing: `make test` installs it
        pytest.skip(f"playwright is not installed: {e}")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


WIDE_SVG = (
    b'<svg xmlns="http://www.w3.org/2000/svg" width="2400" height="300">'
    b'<rect width="2400" height="300" fill="#4a7"/></svg>'
)


def _wide_feed(feed_server: FeedServer) -> bytes:
    """A feed whose entry carries an image far wider than any screen, and a long URL."""
    feed_server.serve_bytes("/wide.svg", WIDE_SVG, "image/svg+xml")
    img = f'&lt;img src="{feed_server.url("wide.svg")}" width="2400" height="300"&gt;'
    long_word = "https://example.org/" + "averyveryverylongpathsegment" * 8
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Photos</title>'
        "<link>https://photos.example/</link><description>d</description>"
        "<item><title>A panorama</title><link>https://photos.example/pano</link>"
        "<guid>pano</guid><pubDate>Mon, 01 Jan 2024 10:00:00 GMT</pubDate>"
        f"<description>&lt;p&gt;{long_word}&lt;/p&gt;{img}</description></item>"
        "</channel></rss>"
    ).encode()


def _config(feed_server: FeedServer, write_config: Callable[..., Path], port: int) -> Path:
    body = ""
    for name, filename in (("russia", "section-russia.rss.xml"), ("hostile", "hostile.xml")):
        feed_server.serve_file(f"/{name}.xml", filename)
        body += f'[[feeds]]\nname = "{name}"\nurl = "{feed_server.url(name + ".xml")}"\n\n'
    feed_server.serve_bytes("/photos.xml", _wide_feed(feed_server), "application/rss+xml")
    body += f'[[feeds]]\nname = "photos"\nurl = "{feed_server.url("photos.xml")}"\n\n'
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


def _check_layout(page: Any, what: str, shots: Path, width: int) -> None:
    """No horizontal scrolling at this width, images inside their column, and a screenshot
    named in the test log."""
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{what} at {width}px scrolls sideways by {overflow}px"
    too_wide = page.evaluate(
        """() => [...document.querySelectorAll('img')].filter(
            i => i.getBoundingClientRect().right > document.documentElement.clientWidth + 1
        ).map(i => i.src)"""
    )
    assert too_wide == [], f"{what} at {width}px: images wider than the page: {too_wide}"
    shot = shots / f"{what}-{width}px.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"screenshot: {shot}")  # shown in the test log (-rP, or on failure)


def test_pages_in_a_real_browser(
    browser: Any,
    feed_server: FeedServer,
    write_config: Callable[..., Path],
    start_daemon: Callable[[Path, int], Daemon],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = free_port()
    daemon = start_daemon(_config(feed_server, write_config, port), port)
    base = daemon.base

    def entries() -> int:
        return len(feedparser.parse(http_get(base + "/outputs/all.atom")[2]).entries)

    wait_for(lambda: entries() == 5, "the three feeds' entries in the output")

    def broken() -> str:
        return str(json.loads(http_get(base + "/status.json")[2])["feeds"]["broken"]["status"])

    wait_for(lambda: broken() == "error", "the broken feed's error")
    shots = tmp_path / "screenshots"
    shots.mkdir()

    for width in (390, 1280):
        context = browser.new_context(viewport={"width": width, "height": 900})
        page = context.new_page()
        try:
            _visit(page, base, feed_server.url(""), shots, width)
        finally:
            context.close()
    assert daemon.stop() == 0
    # Named in the test log whether the test passes or not (on a failure, the captured
    # output above names those taken so far).
    with capsys.disabled():
        print("\nscreenshots of the pages at 390 and 1280 px:")
        for shot in sorted(shots.iterdir()):
            print(f"  {shot}")


def _visit(page: Any, base: str, images: str, shots: Path, width: int) -> None:
    dialogs: list[str] = []
    errors: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    # A page resource that fails is an error; an entry's own image that fails (hostile.xml's
    # src=x) is the feed's business. Chromium logs both as "Failed to load resource".
    page.on(
        "response",
        lambda r: (
            errors.append(f"{r.status} {r.url} ({r.request.resource_type})")
            if r.status >= 400 and r.request.resource_type != "image"
            else None
        ),
    )
    # Nothing leaves the machine: entry images point at example hosts (aborted, not errors:
    # a blocked request is logged by Chromium as a console error, so those are filtered).
    page.route(
        "**/*",
        lambda route: (
            route.continue_() if route.request.url.startswith((base, images)) else route.abort()
        ),
    )

    def console_errors() -> list[str]:
        return [
            e for e in errors if "net::ERR_FAILED" not in e and "Failed to load resource" not in e
        ]

    # The index lists the output with its counts; its link leads to the output page.
    page.goto(base + "/")
    assert page.title() == "Feeds"
    output = page.locator("#output-all")
    assert "5 entries" in output.inner_text() and "4 sources" in output.inner_text()
    assert "1 failing" in output.inner_text()
    _check_layout(page, "index", shots, width)
    page.get_by_role("link", name="Everything").click()
    page.wait_for_url(base + "/outputs/all.html")
    assert page.locator("article.entry").count() == 5
    assert page.locator("article.entry h2").first.inner_text()
    assert page.get_by_text("Entities <script>alert(5)</script> in the title").count() == 1
    assert page.locator("time").count() >= 5
    alternates = page.locator('link[rel="alternate"]').evaluate_all("els => els.map(e => e.type)")
    assert sorted(alternates) == [
        "application/atom+xml",
        "application/feed+json",
        "application/rss+xml",
    ]
    page.wait_for_load_state("load")  # the wide image, before measuring
    _check_layout(page, "output", shots, width)

    # Open the hostile entry's full text and click everything that carried a payload.
    for details in page.locator("details").all():
        details.locator("summary").click()
    page.get_by_text("Plain text that must survive sanitising.").click()
    # The javascript: URL is gone: the anchor keeps its text and has no href at all.
    claim = page.locator("a", has_text="Claim your prize")
    claim.click()
    assert not (claim.get_attribute("href") or "").lower().startswith("javascript:")
    # (The search input may get an empty style="" from the browser itself: look in main.)
    bad = page.locator("script, iframe, main [onerror], main [onclick], main [style]")
    assert bad.count() == 0, bad.evaluate_all("els => els.map(e => e.outerHTML)")
    assert page.locator("article form").count() == 0
    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == [] and console_errors() == []

    # Every link to the daemon on the page answers 200.
    hrefs = page.locator("a[href], link[href]").evaluate_all("els => els.map(e => e.href)")
    ours = sorted({h for h in hrefs if h.startswith(base)})
    assert len(ours) == 5  # the index, three feed formats and the OPML
    for href in ours:
        assert page.request.get(href).status == 200, href

    # The search box: full text within the output, then a filter by source.
    page.get_by_placeholder("Search this output").fill("panorama")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/outputs/all.html?q=panorama*")
    assert page.locator("article.entry").count() == 1
    assert page.locator("article.entry h2").inner_text() == "A panorama"
    page.get_by_placeholder("Search this output").fill("")
    page.get_by_label("Source").select_option("russia")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**source=russia*")
    sources = page.locator("article.entry .meta a").evaluate_all("els => els.map(e => e.href)")
    assert len(sources) == 2 and len(set(sources)) == 1  # russia's two entries, nothing else
    _check_layout(page, "search", shots, width)

    # Dark mode follows the system's preference.
    page.emulate_media(color_scheme="dark")
    background = page.evaluate("() => getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(22, 22, 26)", background
    page.emulate_media(color_scheme="light")

    # Back to the index, then the status page (the browser's Accept header asks for HTML).
    page.goto(base + "/outputs/all.html")
    page.get_by_role("link", name="All outputs").click()
    page.wait_for_url(base + "/")
    page.get_by_role("link", name="Feed status").click()
    page.wait_for_url(base + "/status")
    assert page.title() == "Feed status"
    summary = page.locator("#summary").inner_text()
    assert summary.startswith("4 feeds:") and "1 failing" in summary, summary
    assert page.locator("#feed-russia .status").inner_text() in ("ok", "not modified", "unchanged")
    assert page.locator("#feed-broken .status").inner_text() == "error"
    # Failing feeds first; times relative, with the exact time in <time>.
    first = page.locator("table.feeds tbody tr").first
    assert first.get_attribute("id") == "feed-broken"
    assert "500" in page.locator("#feed-broken + tr.notes").inner_text()
    stamp = page.locator("#feed-russia .last_ok time")
    assert stamp.get_attribute("datetime") and stamp.inner_text().endswith(("ago", "just now"))
    text = page.locator("body").inner_text()
    for raw in ("None", "False", "True"):
        assert raw not in text, raw
    _check_layout(page, "status", shots, width)
    assert page.evaluate("() => window.__pwned") is None
    assert dialogs == [] and console_errors() == []
