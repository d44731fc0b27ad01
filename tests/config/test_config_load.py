"""Config loading: every user mistake is one line naming its key; defaults; durations; the CLI."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import FrozenInstanceError
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from tests_support import REPO

from aggregator.cli import main
from aggregator.config.database import Database
from aggregator.config.load import load_config, parse_config
from aggregator.config.resolved import Config
from aggregator.config.settings import DEFAULT_USER_AGENT
from aggregator.config.values import format_duration, parse_duration
from aggregator.errors import ConfigError

SHIPPED_CONFIG = REPO / "config" / "aggregator.toml"

FEED_A = {"name": "a", "url": "https://a.example/feed.xml", "tags": ["news"]}
FEED_B = {"name": "b", "url": "https://b.example/feed.xml", "tags": ["tech", "blogs"]}
FEED_C = {"name": "c", "url": "http://c.example/rss"}


def problems_of(data: dict[str, Any]) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, "test.toml")
    assert info.value.path == "test.toml"
    return info.value.problems


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {"aggregator": {"intervall": "1h"}},
            "aggregator.intervall: unknown key (is it misspelled?)",
            id="typo-in-aggregator",
        ),
        pytest.param(
            {"feeds": [{**FEED_A, "tgas": ["x"]}]},
            "feeds[0].tgas: unknown key (is it misspelled?)",
            id="typo-in-feeds",
        ),
        pytest.param(
            {"feeds": [FEED_A], "outputs": [{"name": "o", "title": "O", "limt": 5}]},
            "outputs[0].limt: unknown key (is it misspelled?)",
            id="typo-in-outputs",
        ),
        pytest.param(
            {"agregator": {}},
            "agregator: unknown key (is it misspelled?)",
            id="typo-in-top-level-table",
        ),
        pytest.param(
            {"feeds": [FEED_A, {**FEED_B, "name": "a"}]},
            "feeds[1].name: duplicate name 'a' (also feeds[0])",
            id="duplicate-feed-name",
        ),
        pytest.param(
            {
                "feeds": [FEED_A],
                "outputs": [
                    {"name": "o", "title": "O"},
                    {"name": "p", "title": "P"},
                    {"name": "o", "title": "O2"},
                ],
            },
            "outputs[2].name: duplicate name 'o' (also outputs[0])",
            id="duplicate-output-name",
        ),
        pytest.param(
            {"feeds": [{**FEED_A, "url": "ftp://a.example/feed.xml"}]},
            "feeds[0].url: 'ftp://a.example/feed.xml' is not an http(s) URL",
            id="ftp-url",
        ),
        pytest.param(
            {"feeds": [{**FEED_A, "url": "a.example/feed.xml"}]},
            "feeds[0].url: 'a.example/feed.xml' is not an http(s) URL",
            id="url-without-scheme",
        ),
        pytest.param(
            {"aggregator": {"base_url": "file:///srv/feeds"}},
            "aggregator.base_url: 'file:///srv/feeds' is not an http(s) URL",
            id="base-url-not-http",
        ),
        pytest.param(
            {"aggregator": {"interval": "5 minutes"}},
            "aggregator.interval: expected a duration such as '90s', '30m', '1h30m', '2h', '1d' "
            "or '1w', got '5 minutes'",
            id="bad-duration-syntax",
        ),
        pytest.param(
            {"feeds": [{**FEED_A, "interval": "1y"}]},
            "feeds[0].interval: expected a duration such as '90s', '30m', '1h30m', '2h', '1d' "
            "or '1w', got '1y'",
            id="bad-duration-unit-on-feed",
        ),
        pytest.param(
            {"aggregator": {"interval": "1s"}},
            "aggregator.interval: interval 1s is out of range (5s to 30d)",
            id="interval-too-short",
        ),
        pytest.param(
            {"aggregator": {"interval": "31d"}},
            "aggregator.interval: interval 31d is out of range (5s to 30d)",
            id="interval-too-long",
        ),
        pytest.param(
            {"feeds": [{**FEED_A, "interval": "2s"}]},
            "feeds[0].interval: interval 2s is out of range (5s to 30d)",
            id="feed-interval-too-short",
        ),
        pytest.param(
            {"aggregator": {"timeout": "1h"}},
            "aggregator.timeout: timeout 1h is out of range (1s to 10m)",
            id="timeout-too-long",
        ),
        pytest.param(
            {"aggregator": {"timeout": 0}},
            "aggregator.timeout: timeout 0s is out of range (1s to 10m)",
            id="timeout-zero",
        ),
        pytest.param(
            {"feeds": [FEED_A], "outputs": [{"name": "o", "title": "O", "feeds": ["a", "nope"]}]},
            "outputs[0].feeds[1]: no feed is named 'nope'",
            id="output-names-missing-feed",
        ),
        pytest.param(
            {"feeds": [FEED_A], "outputs": [{"name": "o", "title": "O", "tags": ["sport"]}]},
            "outputs[0].tags[0]: no feed has the tag 'sport'",
            id="output-names-missing-tag",
        ),
        pytest.param(
            {"feeds": [{"name": "a"}]},
            "feeds[0].url: required key is missing",
            id="feed-without-url",
        ),
        pytest.param(
            {"feeds": [{"url": "https://a.example/"}]},
            "feeds[0].name: required key is missing",
            id="feed-without-name",
        ),
        pytest.param(
            {"feeds": [FEED_A], "outputs": [{"name": "o"}]},
            "outputs[0].title: required key is missing",
            id="output-without-title",
        ),
        pytest.param(
            {"aggregator": {"listen": "localhost"}},
            "aggregator.listen: 'localhost' is not HOST:PORT (for example '127.0.0.1:8080')",
            id="listen-without-port",
        ),
        pytest.param(
            {"aggregator": {"listen": "127.0.0.1:99999"}},
            "aggregator.listen: '127.0.0.1:99999' is not HOST:PORT (for example '127.0.0.1:8080')",
            id="listen-port-out-of-range",
        ),
        pytest.param(
            {"aggregator": {"listen": ":8080"}},
            "aggregator.listen: ':8080' is not HOST:PORT (for example '127.0.0.1:8080')",
            id="listen-without-host",
        ),
        pytest.param(
            {"feeds": [{**FEED_A, "name": "World News"}]},
            "feeds[0].name: 'World News' is not a valid name: use lower-case letters, digits, "
            "'-' and '_' (at most 64, starting with a letter or digit)",
            id="bad-feed-slug",
        ),
        pytest.param(
            {"feeds": [FEED_A], "outputs": [{"name": "-news", "title": "O"}]},
            "outputs[0].name: '-news' is not a valid name: use lower-case letters, digits, "
            "'-' and '_' (at most 64, starting with a letter or digit)",
            id="bad-output-slug",
        ),
        pytest.param(
            {"aggregator": {"log_level": "verbose"}},
            "aggregator.log_level: 'verbose' is not one of debug, info, warning, error",
            id="bad-log-level",
        ),
    ],
)
def test_one_problem_one_line(data: dict[str, Any], expected: str) -> None:
    assert problems_of(data) == (expected,)


def test_bad_regex_names_the_exact_key_path() -> None:
    data = {
        "feeds": [FEED_A],
        "outputs": [
            {"name": "o", "title": "O", "include": ["/fine/"]},
            {"name": "p", "title": "P", "include": ["/(/", "ok"], "exclude": ["x", "/[/i"]},
        ],
    }
    problems = problems_of(data)
    assert len(problems) == 2
    assert problems[0].startswith("outputs[1].include[0]: invalid regex: ")
    assert "missing )" in problems[0]
    assert problems[1].startswith("outputs[1].exclude[1]: invalid regex: ")


def test_empty_rule_is_reported() -> None:
    data = {"feeds": [FEED_A], "outputs": [{"name": "o", "title": "O", "exclude": ["  "]}]}
    assert problems_of(data) == ("outputs[0].exclude[0]: empty rule",)


def test_several_problems_are_reported_together() -> None:
    data = {
        "aggregator": {"intervall": "1h", "timeout": "1h"},
        "feeds": [
            {"name": "a", "url": "ftp://a.example/"},
            {"name": "a", "url": "https://b.example/"},
        ],
        "outputs": [{"name": "o", "title": "O", "include": ["/(/"], "tags": ["missing"]}],
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, "several.toml")
    problems = info.value.problems
    assert set(problems) >= {
        "aggregator.intervall: unknown key (is it misspelled?)",
        "aggregator.timeout: timeout 1h is out of range (1s to 10m)",
        "feeds[0].url: 'ftp://a.example/' is not an http(s) URL",
        "feeds[1].name: duplicate name 'a' (also feeds[0])",
        "outputs[0].tags[0]: no feed has the tag 'missing'",
    }
    assert any(p.startswith("outputs[0].include[0]: invalid regex: ") for p in problems)
    assert len(problems) == 6
    message = str(info.value)
    assert message.startswith("several.toml: invalid config (6 problem(s)):\n")
    assert all(f"\n  {p}" in message for p in problems)


def test_toml_syntax_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('[aggregator]\ninterval = "1h\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    assert len(info.value.problems) == 1
    assert info.value.problems[0].startswith("not valid TOML: ")
    assert str(info.value).startswith(f"{path}: invalid config (1 problem(s)):")


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.path == str(path)
    assert info.value.problems == ("file not found",)
    assert str(path) in str(info.value)


def test_env_var_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "from-env.toml"
    path.write_text('[[feeds]]\nname = "a"\nurl = "https://a.example/"\n', encoding="utf-8")
    monkeypatch.setenv("AGGREGATOR_CONFIG", str(path))
    assert list(load_config().feeds) == ["a"]


def test_defaults() -> None:
    config = parse_config({})
    s = config.aggregator
    assert s.database == Database(path=Path("data/aggregator.db"))
    assert not s.database.is_postgres
    assert s.listen == "127.0.0.1:8080"
    assert (s.host, s.port) == ("127.0.0.1", 8080)
    assert s.base_url == "http://127.0.0.1:8080"
    assert s.user_agent == DEFAULT_USER_AGENT
    assert s.timeout == timedelta(seconds=20)
    assert s.interval == timedelta(minutes=30)
    assert s.max_concurrency == 32
    assert s.max_body_size == 10 * 1024**2
    assert s.parse_workers == 0
    assert s.log_level == "info"
    assert config.feeds == {}
    assert config.outputs == {}


def test_values_are_normalised(write_config: Callable[..., Path]) -> None:
    path = write_config(
        '[[feeds]]\nname = "a"\nurl = "https://a.example/"\ninterval = "90s"\n\n'
        '[[feeds]]\nname = "b"\nurl = "https://b.example/"\n\n'
        '[[outputs]]\nname = "all"\ntitle = "All"\n',
        base_url="https://feeds.example/agg/",
        listen="[::1]:9000",
        max_body_size="512KiB",
        log_level="DEBUG",
    )
    config = load_config(path)
    s = config.aggregator
    assert s.base_url == "https://feeds.example/agg"
    assert (s.host, s.port) == ("::1", 9000)
    assert s.max_body_size == 512 * 1024
    assert s.log_level == "debug"
    assert s.interval == timedelta(hours=1)
    assert config.feeds["a"].interval == timedelta(seconds=90)
    assert config.feeds["b"].interval == timedelta(hours=1)
    output = config.outputs["all"]
    assert (output.limit, output.filter.checks) == (100, ())
    with pytest.raises(KeyError):
        config.feeds["zzz"]


def test_config_is_immutable() -> None:
    config = parse_config({"feeds": [FEED_A]})
    with pytest.raises(FrozenInstanceError):
        config.feeds["a"].name = "b"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.feeds["b"] = config.feeds["a"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        (" 1.5h ", timedelta(minutes=90)),
        ("1h30m", timedelta(minutes=90)),
        ("1w", timedelta(weeks=1)),
        ("1w2d", timedelta(days=9)),
        ("2h 15m 30s", timedelta(hours=2, minutes=15, seconds=30)),
        ("0.5m", timedelta(seconds=30)),
        (45, timedelta(seconds=45)),
        (2.5, timedelta(seconds=2.5)),
        (timedelta(minutes=7), timedelta(minutes=7)),
    ],
)
def test_parse_duration(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(
    "text", ["", "5", "5 minutes", "1y", "-5s", "m", "30m1h", "1h1h", True, None, []]
)
def test_parse_duration_rejects(text: object) -> None:
    with pytest.raises(ValueError, match="expected a duration such as"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        (timedelta(seconds=0), "0s"),
        (timedelta(seconds=5), "5s"),
        (timedelta(seconds=90), "90s"),
        (timedelta(minutes=1), "1m"),
        (timedelta(minutes=90), "90m"),
        (timedelta(hours=2), "2h"),
        (timedelta(hours=36), "36h"),
        (timedelta(days=1), "1d"),
        (timedelta(days=30), "30d"),
    ],
)
def test_format_duration(d: timedelta, expected: str) -> None:
    assert format_duration(d) == expected
    assert parse_duration(expected) == d


def _sources_config() -> Config:
    return parse_config(
        {
            "feeds": [FEED_A, FEED_B, FEED_C],
            "outputs": [
                {"name": "by-feed", "title": "T", "feeds": ["c", "a"]},
                {"name": "by-tag", "title": "T", "tags": ["blogs"]},
                {"name": "both", "title": "T", "feeds": ["c"], "tags": ["news"]},
                {"name": "all", "title": "T"},
            ],
        }
    )


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("by-feed", ["a", "c"]),  # in config order, not the order the output names them
        ("by-tag", ["b"]),
        ("both", ["a", "c"]),
        ("all", ["a", "b", "c"]),
    ],
)
def test_sources_of(output: str, expected: list[str]) -> None:
    config = _sources_config()
    assert [f.name for f in config.outputs[output].sources] == expected


@pytest.mark.skipif(not SHIPPED_CONFIG.exists(), reason="config/aggregator.toml not written yet")
def test_shipped_config_loads() -> None:
    config = load_config(SHIPPED_CONFIG)
    assert config.feeds
    assert config.outputs
    for output in config.outputs.values():
        assert output.sources, output.name


def test_cli_check_config_valid(write_config: Callable[..., Path]) -> None:
    path = write_config('[[feeds]]\nname = "a"\nurl = "https://a.example/"\n')
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{path}: ok (1 feeds, 0 outputs)\n"


def test_cli_check_config_invalid(write_config: Callable[..., Path]) -> None:
    path = write_config(
        '[[feeds]]\nname = "a"\nurl = "gopher://a.example/"\ntgas = ["x"]\n\n'
        '[[outputs]]\nname = "o"\ntitle = "O"\nfeeds = ["b"]\n',
        interval="1x",
    )
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines == [
        f"error: {path}: invalid config (4 problem(s)):",
        "  aggregator.interval: expected a duration such as '90s', '30m', '1h30m', '2h', '1d' "
        "or '1w', got '1x'",
        "  feeds[0].url: 'gopher://a.example/' is not an http(s) URL",
        "  feeds[0].tgas: unknown key (is it misspelled?)",
        "  outputs[0].feeds[0]: no feed is named 'b'",
    ]


def test_cli_check_config_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    result = CliRunner().invoke(main, ["check-config", "--config", str(path)])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        f"error: {path}: invalid config (1 problem(s)):",
        "  file not found",
    ]


def test_embed_hosts_must_be_host_names() -> None:
    from aggregator.errors import ConfigError

    ok = parse_config({"aggregator": {"embed_hosts": ["www.youtube.com", "player.vimeo.com"]}})
    assert ok.aggregator.embed_hosts == ("www.youtube.com", "player.vimeo.com")
    with pytest.raises(ConfigError) as info:
        parse_config({"aggregator": {"embed_hosts": ["https://www.youtube.com/"]}})
    assert info.value.problems[0].startswith("aggregator.embed_hosts[0]: ") or (
        info.value.problems[0].startswith("aggregator.embed_hosts: ")
    )
    assert "is not a host name" in info.value.problems[0]


def test_base_url_defaults_to_the_listen_address() -> None:
    def base(listen: str) -> str:
        return parse_config({"aggregator": {"listen": listen}}).aggregator.base_url

    assert base("127.0.0.1:9090") == "http://127.0.0.1:9090"
    assert base("0.0.0.0:8080") == "http://127.0.0.1:8080"  # a wildcard is reached on loopback
    assert base("[::]:8080") == "http://[::1]:8080"
    assert base("feeds.lan:80") == "http://feeds.lan:80"
    given = {"listen": "0.0.0.0:80", "base_url": "https://feeds.example/"}
    assert parse_config({"aggregator": given}).aggregator.base_url == "https://feeds.example"


def test_every_aggregator_key_can_come_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "a.toml"
    path.write_text('[aggregator]\nlisten = "127.0.0.1:1111"\nmax_concurrency = 4\n')
    monkeypatch.setenv("AGGREGATOR_LISTEN", "0.0.0.0:2222")
    monkeypatch.setenv("AGGREGATOR_DATABASE", str(tmp_path / "env.db"))
    monkeypatch.setenv("AGGREGATOR_MAX_CONCURRENCY", "8")
    monkeypatch.setenv("AGGREGATOR_INTERVAL", "1h30m")
    monkeypatch.setenv("AGGREGATOR_MAX_BODY_SIZE", "2MiB")
    monkeypatch.setenv("AGGREGATOR_ADAPTIVE", "true")
    monkeypatch.setenv("AGGREGATOR_EMBED_HOSTS", "www.youtube.com, player.vimeo.com")
    monkeypatch.setenv("AGGREGATOR_LOG_LEVEL", "")  # empty: ignored
    s = load_config(path).aggregator
    assert s.listen == "0.0.0.0:2222" and s.base_url == "http://127.0.0.1:2222"
    assert s.database.path == tmp_path / "env.db" and s.max_concurrency == 8
    assert s.interval == timedelta(minutes=90) and s.max_body_size == 2 * 1024**2
    assert s.adaptive is True and s.embed_hosts == ("www.youtube.com", "player.vimeo.com")
    assert s.log_level == "info"
    # A bad value names the variable it came from.
    monkeypatch.setenv("AGGREGATOR_MAX_CONCURRENCY", "lots")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    [problem] = caught.value.problems
    assert problem.startswith("aggregator.max_concurrency (from $AGGREGATOR_MAX_CONCURRENCY): ")
