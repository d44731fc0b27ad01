"""The operator's commands: `health` (for container HEALTHCHECKs and systemd), `add`, `remove`.

Registered on the `aggregator` group by cli.py. I/O: HTTP to the running daemon or to the web,
and the config file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import click

from .cli_common import command, fail, load
from .config.edit import append_feeds, remove_feed
from .config.resolved import Config
from .errors import AggregatorError
from .ingest.discover import Discovery, describe, discover, probe
from .ingest.feedlinks import FeedLink
from .ingest.workers import DeadlinePool
from .outputs.opml import Subscription, slugify
from .runtime import make_fetcher, make_parse_pool
from .store.lock import running_daemon

HEALTH_TIMEOUT = 5.0  # seconds; a HEALTHCHECK gives the command little more


def local_url(config: Config, path: str) -> str:
    """The daemon's own address for `path`: its `listen` address, with a wildcard host
    (0.0.0.0, ::) replaced by loopback, since that is where a probe on the same machine goes."""
    host = config.aggregator.host
    if host in ("0.0.0.0", "", "*"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{config.aggregator.port}{path}"


@command()
def health(config_path: str) -> None:
    """Ask the running daemon's /healthz: exit 0 when healthy, 1 otherwise (or unreachable)."""
    config = load(config_path)
    url = local_url(config, "/healthz")
    request = urllib.request.Request(url)
    admin = config.aggregator.admin_token
    if admin is not None and admin.resolved:
        # With it, the daemon tells its feed counts and problems, not only ok or fail.
        request.add_header("Authorization", f"Bearer {admin.value}")
    try:
        with urllib.request.urlopen(request, timeout=HEALTH_TIMEOUT) as resp:
            status, body = resp.status, resp.read()
    except urllib.error.HTTPError as e:  # a 503 still carries the daemon's reasons
        status, body = e.code, e.read()
    except (OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        click.echo(f"unhealthy: no answer from {url}: {reason}", err=True)
        sys.exit(1)
    try:
        doc = json.loads(body)
    except ValueError:
        click.echo(f"unhealthy: {url} answered {status} without a JSON body", err=True)
        sys.exit(1)
    feeds = doc.get("feeds")
    summary = (
        f"{feeds.get('total', 0)} feeds, {doc.get('failing', 0)} failing"
        if isinstance(feeds, dict)
        else "no detail without the admin token"
    )
    if status == 200 and doc.get("status") == "ok":
        click.echo(f"healthy: {summary}")
        return
    problems = "; ".join(str(p) for p in doc.get("problems") or []) or f"HTTP {status}"
    click.echo(f"unhealthy: {problems} ({summary})", err=True)
    sys.exit(1)


def _signal_reload(config: Config) -> str:
    """Ask a running daemon to reload (SIGHUP); say what will happen either way."""
    if config.aggregator.database.is_postgres:
        return "each node running on this config file reloads it within seconds"
    try:
        pid = running_daemon(config.aggregator.database)
        os.kill(pid, signal.SIGHUP)
    except (AggregatorError, OSError):
        return "no daemon is running on this database: the change applies when it starts"
    return f"the running daemon (pid {pid}) is reloading its config"


def _unique_name(wanted: str, taken: set[str]) -> str:
    base = (slugify(wanted) or "feed")[:60].strip("-_") or "feed"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    return name


async def _discover(config: Config, url: str, pool: DeadlinePool) -> Discovery:
    async with make_fetcher(config) as fetcher:
        return await discover(fetcher, url, pool)


async def _probe(config: Config, url: str, pool: DeadlinePool) -> Discovery:
    async with make_fetcher(config) as fetcher:
        return await probe(fetcher, url, pool)


@contextlib.contextmanager
def _parse_pool(config: Config) -> Iterator[DeadlinePool]:
    """One parse worker under the config's parse_timeout: the pages `add` reads are anyone's."""
    pool = make_parse_pool(1, config.aggregator.parse_timeout.total_seconds())
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _why(found: Discovery) -> str:
    return "".join(f"; {problem}" for problem in found.problems)


def _choose(found: Discovery, pick: int | None) -> FeedLink:
    links = found.feeds
    if len(links) == 1 and pick in (None, 1):
        return links[0]
    if pick is not None:
        if not 1 <= pick <= len(links):
            fail(f"--pick {pick}: there are {len(links)} feeds", 2)
        return links[pick - 1]
    click.echo(f"{len(links)} feeds found:")
    for line in describe(links):
        click.echo("  " + line)
    if not sys.stdin.isatty():
        fail("several feeds found: run again with --pick N, or with the feed's own URL", 2)
    choice: int = click.prompt("Add which one", type=click.IntRange(1, len(links)), default=1)
    return links[choice - 1]


@command()
@click.argument("url")
@click.option("--name", help="The feed's name in the config (default: from its title).")
@click.option("--tags", default="", help="Comma-separated tags, for example 'news,world'.")
@click.option("--title", help="Display title, in place of the feed's own.")
@click.option("--pick", type=int, help="When the page advertises several feeds, add the Nth.")
def add(
    config_path: str, url: str, name: str | None, tags: str, title: str | None, pick: int | None
) -> None:
    """Add the feed at URL (or the feed a web page at URL advertises) to the config."""
    config = load(config_path)
    if url.startswith("feed://"):
        url = "http://" + url.removeprefix("feed://")
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        fail(f"{url!r} is not an http(s) URL", 2)
    with _parse_pool(config) as pool:
        found = asyncio.run(_discover(config, url, pool))
        if not found.feeds:
            tried = ", ".join(found.tried)
            fail(f"no feed found at {url} (tried {tried}){_why(found)}; give the feed's own URL")
        link = _choose(found, pick)
        if not found.checked:
            # Advertised or guessed: check it is a feed, and learn its own title for the name.
            checked = asyncio.run(_probe(config, link.url, pool))
            if not checked.feeds:
                fail(f"{link.url} (advertised by {url}) is not a feed{_why(checked)}")
            link = checked.feeds[0]
    known = {f.url: f.name for f in config.feeds.values()}
    if link.url in known:
        fail(f"{link.url} is already configured as feed {known[link.url]!r}", 2)
    taken = set(config.feeds)
    if name is not None and name in taken:
        fail(f"a feed named {name!r} already exists", 2)
    chosen = name or _unique_name(title or link.title or urlsplit(link.url).hostname or "", taken)
    tag_list = tuple(t.strip() for t in tags.split(",") if t.strip())
    header = f"Added by `aggregator add` on {datetime.now(UTC):%Y-%m-%d}"
    append_feeds(Path(config_path), [Subscription(chosen, link.url, title, None, tag_list)], header)
    click.echo(f"added feed {chosen!r}: {link.url}")
    click.echo(_signal_reload(config))


@command()
@click.argument("name")
def remove(config_path: str, name: str) -> None:
    """Remove feed NAME from the config; its stored entries stay until they are pruned."""
    config = load(config_path)
    edited = remove_feed(Path(config_path), name)  # ConfigError: exit 2
    click.echo(f"removed feed {name!r} from {config_path}")
    if edited:
        click.echo(f"and from the feeds of output(s): {', '.join(edited)}")
    click.echo(
        "its entries stay in the database until the prune removes them "
        f"(retention_days = {config.aggregator.retention_days})"
    )
    click.echo(_signal_reload(config))
