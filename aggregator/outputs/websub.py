"""WebSub publishing: tell the configured hub when an output's content changed. Network I/O.

A poll that writes entries only marks outputs as possibly changed; one background task then
renders each output (through the server's cache, so subscribers reuse that render), compares
its ETag with the last one announced, and pings the hub for the outputs that really changed.
Bursts of polls coalesce into one round of pings. A hub that fails is logged and counted,
never raised: subscribers still poll.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

import aiohttp

from ..config.resolved import Config, Output

log = logging.getLogger("aggregator.websub")
TOPIC_FORMATS = ("atom", "rss", "json")


def topics(config: Config, name: str) -> list[str]:
    """The topic URLs of an output: its feed formats, as their self links name them."""
    return [f"{config.aggregator.base_url}/outputs/{name}.{fmt}" for fmt in TOPIC_FORMATS]


def public_outputs(config: Config) -> list[Output]:
    """The outputs announced to the hub: never a private one, whose content the hub would
    fetch with its token and pass on to whoever subscribes."""
    return [o for o in config.outputs.values() if o.token is None]


def publish_form(urls: Sequence[str]) -> list[tuple[str, str]]:
    """The de-facto publish ping (PubSubHubbub 0.4, accepted by WebSub hubs):
    hub.mode=publish with one hub.url per topic."""
    return [("hub.mode", "publish"), *(("hub.url", url) for url in urls)]


class HubNotifier:
    """Pings `config().aggregator.hub` for outputs whose rendered ETag changed.

    `etag_of(name)` renders (or reads from cache) an output and returns its ETag; `on_ping`
    hears "ok" or "error" for each ping sent.
    """

    def __init__(
        self,
        config: Callable[[], Config],
        etag_of: Callable[[str], Awaitable[str]],
        on_ping: Callable[[str], None] = lambda result: None,
    ) -> None:
        self.config = config
        self.etag_of = etag_of
        self.on_ping = on_ping
        self._announced: dict[str, str] = {}
        self._changed = asyncio.Event()

    async def seed(self) -> None:
        """Remember what every output looks like now, so a restart pings nothing by itself."""
        for output in public_outputs(self.config()):
            self._announced[output.name] = await self.etag_of(output.name)

    def changed(self) -> None:
        """The store changed: outputs may have. Cheap; the work happens in `run`."""
        self._changed.set()

    async def run(self) -> None:
        """Until cancelled: wait for a change, then ping the hub for changed outputs."""
        while True:
            await self._changed.wait()
            self._changed.clear()
            try:
                await self.check()
            except Exception:
                log.exception("WebSub check failed")

    async def check(self) -> list[str]:
        """Ping the hub for each output whose ETag changed; returns their names."""
        config = self.config()
        hub = config.aggregator.hub
        if hub is None:
            return []
        changed = []
        for output in public_outputs(config):
            etag = await self.etag_of(output.name)
            if self._announced.get(output.name) != etag:
                changed.append(output.name)
                self._announced[output.name] = etag
        if changed:
            await self._ping(config, hub, changed)
        return changed

    async def _ping(self, config: Config, hub: str, names: list[str]) -> None:
        urls = [url for name in names for url in topics(config, name)]
        settings = config.aggregator
        timeout = aiohttp.ClientTimeout(total=settings.timeout.total_seconds())
        headers = {"User-Agent": settings.user_agent}
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, headers=headers) as session,
                session.post(hub, data=publish_form(urls)) as resp,
            ):
                await resp.read()
                ok = 200 <= resp.status < 300
                detail = f"HTTP {resp.status}"
        except (aiohttp.ClientError, TimeoutError) as e:
            ok, detail = False, str(e) or type(e).__name__
        if ok:
            log.info("websub ping hub=%s outputs=%s %s", hub, ",".join(names), detail)
        else:
            log.warning("websub ping failed hub=%s outputs=%s: %s", hub, ",".join(names), detail)
        self.on_ping("ok" if ok else "error")
