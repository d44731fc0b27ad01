"""End to end: the operator's day with the real daemon: health probes, adding and removing
feeds while it runs, and what a misconfigured feed says."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import FeedServer, free_port
from test_e2e import Daemon, http_get, start_daemon, wait_for
from test_e2e_unattended import cli, feed_toml, rss, settings

__all__ = ["start_daemon"]
pytestmark = pytest.mark.e2e
StartDaemon = Callable[[Path, int], Daemon]


def test_health_command_exits_0_when_healthy_and_1_without_a_daemon(
    feed_server: FeedServer, write_config: Callable[..., Path], start_daemon: StartDaemon
) -> None:
    port = free_port()
    feed_server.serve_bytes("/one.xml", rss("One", ["a"]))
    feed_server.serve_status("/broken.xml", 500)
    body = feed_toml("one", feed_server.url("one.xml"))
    body += feed_toml("broken", feed_server.url("broken.xml"))
    path = write_config(body, **settings(port))
    down = cli(path, "health")
    assert down.returncode == 1 and "unhealthy: no answer from" in down.stderr

    daemon = start_daemon(path, port)

    def failing() -> int:
        doc = json.loads(http_get(daemon.base + "/healthz")[2])
        return int(doc["failing"])

    wait_for(lambda: failing() == 1, "the broken feed counted as failing")
    up = cli(path, "health")
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "healthy: 2 feeds, 1 failing"
    assert daemon.stop() == 0
    assert cli(path, "health").returncode == 1
