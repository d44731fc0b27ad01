"""Secret references, their redaction in logs and old databases, and the token checks."""

from __future__ import annotations

import base64
import io
import json
import logging
from pathlib import Path

import pytest

from aggregator.config.load import load_config, parse_config
from aggregator.config.secret import RedactingFilter, Secret, redact, resolve_secret, split_userinfo
from aggregator.errors import ConfigError
from aggregator.logs import JsonFormatter
from aggregator.outputs.tokens import is_admin, may_read, presented, token_query, visible_outputs
from aggregator.store.sqlite import SqliteStore as Store

MARK = "S3CRET-MARKER-unit-91ab"


def test_references_resolve_from_the_environment_a_file_or_literally(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("A_SECRET", MARK + "-env")
    (tmp_path / "s").write_text(MARK + "-file\r\n", encoding="utf-8")
    assert resolve_secret("env:A_SECRET").value == MARK + "-env"
    assert resolve_secret(f"file:{tmp_path / 's'}").value == MARK + "-file"
    literal = resolve_secret(MARK)
    assert literal.value == MARK and literal.reference == "literal"
    # Shown by reference, never by value; equal by value, so a rotation is a change.
    assert repr(resolve_secret("env:A_SECRET")) == "Secret(env:A_SECRET: ***)"
    assert MARK not in str(literal) and MARK not in f"{literal!r}"
    assert Secret("a") == Secret("a", "env:X") and Secret("a") != Secret("b")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("env:", "'env:' needs the name of an environment variable"),
        ("env:SURELY_NOT_SET_123", "environment variable SURELY_NOT_SET_123 is not set"),
        ("file:/nonexistent/x", "cannot read secret file /nonexistent/x"),
        ("", "is empty"),
        (42, "expected a string"),
    ],
)
def test_unresolvable_references_say_why(raw: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_secret(raw)


def test_redact_blanks_known_secrets_and_url_userinfo() -> None:
    resolve_secret(MARK + "-redact")
    text = f"failed: {MARK}-redact at http://user:pw@proxy.example:3128/ and mailto:a@b"
    assert redact(text) == "failed: *** at http://***@proxy.example:3128/ and mailto:a@b"
    assert split_userinfo("https://u%40x:p%3Aw@h.example/f?q=1") == (
        "https://h.example/f?q=1",
        "u@x",
        "p:w",
    )
    assert split_userinfo("https://h.example/") == ("https://h.example/", None, None)


def test_the_log_filter_blanks_secrets_in_messages_and_tracebacks() -> None:
    resolve_secret(MARK + "-log")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("test.secret.filter")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("header was %s", MARK + "-log")
        try:
            raise RuntimeError(f"echoed {MARK}-log back")
        except RuntimeError:
            logger.exception("bug")
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert lines[0]["message"] == "header was ***"
    assert "echoed *** back" in lines[1]["exception"]
    assert MARK not in stream.getvalue()


def test_an_old_database_loses_the_userinfo_of_its_urls(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    store = Store(path)
    store.sync_feeds([("f", f"https://user:{MARK}@h.example/feed")])
    store.db.execute(
        "UPDATE feeds SET redirect_url = ?, last_error = ?",
        (f"https://u:{MARK}@h2.example/", f"cannot connect to http://u:{MARK}@p/"),
    )
    store.db.execute("DELETE FROM _sqlite_migrations WHERE name = 'm010_no_userinfo'")
    store.db.conn.commit()
    store.close()
    row = next(iter(Store(path).db.query("SELECT * FROM feeds")))
    assert MARK not in json.dumps(row)
    assert row["url"] == "https://h.example/feed"
    assert row["redirect_url"] == "https://h2.example/"


TOKEN = "tok-" + MARK


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("query", "headers", "token"),
    [
        ({"token": TOKEN}, {}, TOKEN),
        ({}, {"Authorization": f"Bearer {TOKEN}"}, TOKEN),
        ({}, {"Authorization": f"bearer  {TOKEN}"}, TOKEN),
        ({}, {"Authorization": basic("anyone", TOKEN)}, TOKEN),
        ({}, {"Authorization": basic("", TOKEN)}, TOKEN),
        ({}, {"Authorization": basic(TOKEN, "")}, None),  # the token is the password
        ({}, {"Authorization": "Basic not-base64!"}, None),
        ({}, {"Authorization": "Digest x"}, None),
        ({}, {}, None),
    ],
)
def test_a_token_is_read_from_the_query_bearer_or_basic_auth(
    query: dict[str, str], headers: dict[str, str], token: str | None
) -> None:
    assert presented(query, headers) == token


def test_private_outputs_are_visible_and_readable_with_their_token_only() -> None:
    config = parse_config(
        {
            "aggregator": {"admin_token": "admin-" + MARK},
            "outputs": [
                {"name": "public", "title": "P"},
                {"name": "mine", "title": "M", "token": TOKEN},
                {"name": "theirs", "title": "T", "token": "other-" + MARK},
            ],
        }
    )
    public, mine, theirs = config.outputs.values()
    assert may_read(public, None) and may_read(mine, TOKEN)
    assert (
        not may_read(mine, None) and not may_read(mine, TOKEN[:-1]) and not may_read(theirs, TOKEN)
    )
    names = [o.name for o in visible_outputs(config, TOKEN)]
    assert names == ["public", "mine"]
    assert [o.name for o in visible_outputs(config, None)] == ["public"]
    assert len(visible_outputs(config, "admin-" + MARK, admin=True)) == 3
    assert is_admin(config, "admin-" + MARK) and not is_admin(config, TOKEN)
    assert token_query(mine) == f"token={TOKEN}" and token_query(public) == ""
    # Without an admin_token, the daemon's own pages stay open, as before.
    assert is_admin(parse_config({}), None)


def test_a_token_must_be_long_and_fit_in_a_url() -> None:
    for bad, message in (("short", "at least 16"), ("has a space in it ok", "spaces")):
        with pytest.raises(Exception, match=message):
            parse_config({"outputs": [{"name": "o", "title": "O", "token": bad}]})


def test_commands_that_need_no_secret_load_a_config_whose_secrets_are_elsewhere(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        '[aggregator]\nadmin_token = "env:NOT_HERE_ADMIN"\n'
        '[[feeds]]\nname = "f"\nurl = "https://h.example/"\nusername = "u"\n'
        'password = "file:/nonexistent/pw"\nproxy = "env:NOT_HERE_PROXY"\n'
        '[[outputs]]\nname = "o"\ntitle = "O"\ntoken = "env:NOT_HERE_TOKEN"\n',
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.problems) == 4
    config = load_config(path, need_secrets=False)
    assert config.feeds["f"].request_options is not None  # private, its password unread
    token = config.outputs["o"].token
    assert token is not None and not token.resolved and token.reference == "env:NOT_HERE_TOKEN"
    # Only a reference that could not be read is let through: other mistakes still count.
    path.write_text('[[outputs]]\nname = "o"\ntitle = "O"\ntoken = "short"\n', encoding="utf-8")
    with pytest.raises(ConfigError):
        load_config(path, need_secrets=False)
