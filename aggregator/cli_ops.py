"""The operator's commands: `health` (for container HEALTHCHECKs and systemd), `add`, `remove`.

Registered on the `aggregator` group by cli.py. I/O: HTTP to the running daemon or to the web,
and the config file.
"""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import click

from .cli_common import config_option, load_or_exit
from .config import Config

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


@click.command()
@config_option
def health(config_path: str) -> None:
    """Ask the running daemon's /healthz: exit 0 when healthy, 1 otherwise (or unreachable)."""
    config = load_or_exit(config_path)
    url = local_url(config, "/healthz")
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT) as resp:
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
    feeds = doc.get("feeds") or {}
    summary = f"{feeds.get('total', 0)} feeds, {doc.get('failing', 0)} failing"
    if status == 200 and doc.get("status") == "ok":
        click.echo(f"healthy: {summary}")
        return
    problems = "; ".join(str(p) for p in doc.get("problems") or []) or f"HTTP {status}"
    click.echo(f"unhealthy: {problems} ({summary})", err=True)
    sys.exit(1)
