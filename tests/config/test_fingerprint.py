"""config_hash: the same for configs that say the same thing, in any process; different
when anything a node does changes; blind to each node's own listen address."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from aggregator.config.fingerprint import config_hash
from aggregator.config.load import load_config

BODY = """
[[feeds]]
name = "world"
url = "https://news.example/world.xml"
tags = ["news"]
interval = "{interval}"
include = ["Latin America", "/brazil|argentina/i"]
password = "env:WORLD_PASSWORD"
username = "reader"

[[feeds]]
name = "tech"
url = "https://tech.example/feed.atom"
filters = [{{ any = [{{ keyword = "rust" }}, {{ regex = "(?i)python", fields = ["title"] }}] }},
           {{ not = {{ max_age = "7d" }} }}]

[[outputs]]
name = "all"
title = "All"
token = "{token}"
dedupe = "exact"

[[outputs]]
name = "news"
title = "News"
tags = ["news"]
exclude = ["/sport/"]
"""


def _write(
    write_config: Callable[..., Path],
    name: str,
    interval: str = "1h",
    token: str = "a-token-of-sixteen-chars",
    comment: str = "",
    **settings: object,
) -> Path:
    path = write_config(comment + BODY.format(interval=interval, token=token), name, **settings)
    return path


def _hash(path: Path) -> str:
    return config_hash(load_config(path))


def test_equal_content_gives_equal_hashes_in_any_process(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_PASSWORD", "s3cret-password")
    public = "https://feeds.example"  # the nodes' public URL, behind the load balancer
    one = _write(write_config, "one.toml", listen="127.0.0.1:8081", base_url=public)
    # Another comment, 60m for 1h, another port: the same content for the nodes.
    two = _write(
        write_config,
        "two.toml",
        interval="60m",
        comment="# node 2\n",
        listen="127.0.0.1:8082",
        base_url=public,
    )
    assert _hash(one) == _hash(two)
    # Another process, with another string-hash seed, works the same hash out.
    code = (
        "import sys; from aggregator.config.fingerprint import config_hash; "
        "from aggregator.config.load import load_config; "
        "print(config_hash(load_config(sys.argv[1])))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", code, str(two)], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.strip() == _hash(one)


def test_any_change_of_content_changes_the_hash(
    write_config: Callable[..., Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WORLD_PASSWORD", "s3cret-password")
    base = _hash(_write(write_config, "base.toml"))
    assert _hash(_write(write_config, "interval.toml", interval="2h")) != base
    rotated = _hash(_write(write_config, "token.toml", token="another-token-of-16-chars"))
    assert rotated != base
    assert _hash(_write(write_config, "retention.toml", retention_days=30)) != base
    monkeypatch.setenv("WORLD_PASSWORD", "another-password")
    assert _hash(_write(write_config, "password.toml")) != base
