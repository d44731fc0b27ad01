"""Every `aggregator` command against a `postgresql://` database: the real test server
(tests/pgserver.py), a loopback feed server, and the password never in any output."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner, Result
from feedserver import FeedServer
from pgserver import PgServer

from aggregator.cli import main

pytestmark = pytest.mark.postgres

BODY = """
[[feeds]]
name = "eng"
url = "{eng}"

[[feeds]]
name = "bakery"
url = "{bakery}"

[[outputs]]
name = "all"
title = "Everything"
"""


def _config(write_config: Callable[..., Path], server: FeedServer, database: str) -> Path:
    server.serve_file("/eng.xml", "rss20.xml")
    server.serve_file("/bakery.xml", "atom10.xml")
    urls = {n: server.url(f"/{n}.xml") for n in ("eng", "bakery")}
    return write_config(BODY.format(**urls), database=database)


def _run(path: Path, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(path)])


def test_every_command_works_on_a_postgresql_url(
    write_config: Callable[..., Path], feed_server: FeedServer, pg_url: str, pg_server: PgServer
) -> None:
    path = _config(write_config, feed_server, pg_url)
    outputs: list[str] = []

    def ok(*args: str) -> str:
        result = _run(path, *args)
        outputs.append(result.output)
        assert result.exit_code == 0, (args, result.output)
        return result.stdout

    assert "2 feeds" in ok("check-config")
    assert "pending" in ok("feeds")  # migrated on first use, nothing polled yet
    ok("fetch")
    listing = ok("feeds")
    assert listing.count(" ok ") == 2, listing
    found = ok("search", "outage")
    assert "Post-mortem: the 14-minute DNS outage" in found
    assert "Sourdough" in ok("search", "sourdough")
    atom = ok("render", "all")
    assert atom.count("<entry>") == 7  # 4 of the RSS feed, 3 of the Atom one
    assert "Migrating our job queue" in ok("preview", "all")
    assert "pruned 0 entries" in ok("prune")
    assert "Byte Street Engineering Blog" in ok("export-opml")  # the title read from the store

    backup = _run(path, "backup", str(path.parent / "backups"))
    outputs.append(backup.output)
    assert backup.exit_code == 1
    assert "back it up with pg_dump" in backup.output
    assert not (path.parent / "backups").exists()

    reload = _run(path, "reload")
    outputs.append(reload.output)
    assert reload.exit_code == 1 and "send SIGHUP to each node" in reload.output

    removed = ok("remove", "bakery")
    assert "each node running on this config file reloads it" in removed
    assert "bakery" not in ok("feeds")
    added = ok("add", feed_server.url("/bakery.xml"), "--name", "bakery")
    assert "each node running on this config file reloads it" in added
    # Back in the config, with the state and entries its row kept in the shared store.
    (bakery,) = [line for line in ok("feeds").splitlines() if line.startswith("bakery")]
    assert bakery.split()[1] == "ok" and bakery.split()[-1] == "3"

    for text in outputs:
        assert pg_server.password not in text
    # What the commands wrote is in the shared database: a second connection sees it.
    with psycopg.connect(pg_server.admin_url(pg_url.rsplit("/", 1)[1])) as conn:
        rows = conn.execute("SELECT feed, count(*) FROM entries GROUP BY feed ORDER BY feed")
        assert rows.fetchall() == [("bakery", 3), ("eng", 4)]


def test_a_password_from_pgpassword_and_an_unreachable_server(
    write_config: Callable[..., Path], feed_server: FeedServer, pg_url: str, pg_server: PgServer
) -> None:
    # The URL without its password: libpq takes it from $PGPASSWORD (a real subprocess, so the
    # environment is the command's own).
    bare = pg_url.replace(f":{pg_server.password}@", "@")
    assert pg_server.password not in bare
    path = _config(write_config, feed_server, bare)
    env = {"PATH": "/usr/bin:/bin", "PGPASSWORD": pg_server.password}
    command = [sys.executable, "-m", "aggregator", "--config", str(path)]
    done = subprocess.run([*command, "fetch"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert pg_server.password not in done.stdout + done.stderr
    listing = subprocess.run(
        [*command, "feeds"], capture_output=True, text=True, env=env, timeout=120
    )
    assert listing.stdout.count(" ok ") == 2, listing.stdout

    # Or from a pass file (host:port:database:user:password), named by $PGPASSFILE.
    passfile = path.parent / "pgpass"
    host_port_db = pg_url.split("@", 1)[1]
    host, rest = host_port_db.split(":", 1)
    port, database = rest.split("/", 1)
    passfile.write_text(f"{host}:{port}:{database}:*:{pg_server.password}\n")
    passfile.chmod(0o600)
    with_file = subprocess.run(
        [*command, "search", "outage"],
        capture_output=True,
        text=True,
        env={"PATH": env["PATH"], "PGPASSFILE": str(passfile)},
        timeout=120,
    )
    assert with_file.returncode == 0, with_file.stderr
    assert "Post-mortem: the 14-minute DNS outage" in with_file.stdout

    # A wrong password and a server that is not there: one line each, exit 1, no secret.
    wrong = subprocess.run(
        [*command, "feeds"],
        capture_output=True,
        text=True,
        env={**env, "PGPASSWORD": "not-the-password"},
        timeout=120,
    )
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("error: cannot open database postgresql://127.0.0.1:")
    assert "not-the-password" not in wrong.stderr and len(wrong.stderr.splitlines()) == 1
    port = pg_url.split("@127.0.0.1:")[1].split("/")[0]
    gone = write_config(
        BODY.format(eng="http://127.0.0.1:1/a", bakery="http://127.0.0.1:1/b"),
        name="gone.toml",
        database=pg_url.replace(f":{port}/", ":1/"),
    )
    refused = _run(gone, "feeds")
    assert refused.exit_code == 1 and "cannot open database postgresql://127.0.0.1:1/" in (
        refused.output
    )
    assert pg_server.password not in refused.output


def test_a_database_named_by_a_libpq_service_file(
    write_config: Callable[..., Path], feed_server: FeedServer, pg_url: str, pg_server: PgServer
) -> None:
    # `database = "postgresql:///?service=NAME"`: host, port, database, user and password all
    # come from the service file $PGSERVICEFILE names (a real subprocess: its own environment).
    user_host, database = pg_url.split("//", 1)[1].split("@", 1)[1].rsplit("/", 1)
    host, port = user_host.split(":")
    user = pg_url.split("//", 1)[1].split(":", 1)[0]
    path = _config(write_config, feed_server, "postgresql:///?service=news")
    services = path.parent / "pg_service.conf"
    services.write_text(
        f"[news]\nhost={host}\nport={port}\ndbname={database}\nuser={user}\n"
        f"password={pg_server.password}\n"
    )
    services.chmod(0o600)
    env = {"PATH": "/usr/bin:/bin", "PGSERVICEFILE": str(services)}
    command = [sys.executable, "-m", "aggregator", "--config", str(path)]
    fetched = subprocess.run(
        [*command, "fetch"], capture_output=True, text=True, env=env, timeout=120
    )
    assert fetched.returncode == 0, fetched.stderr
    listing = subprocess.run(
        [*command, "feeds"], capture_output=True, text=True, env=env, timeout=120
    )
    assert listing.stdout.count(" ok ") == 2, listing.stdout
    for done in (fetched, listing):
        assert pg_server.password not in done.stdout + done.stderr
    # The entries are in the service's database, as a direct connection sees them.
    with psycopg.connect(pg_server.admin_url(database)) as conn:
        row = conn.execute("SELECT count(DISTINCT feed) FROM entries").fetchone()
    assert row == (2,)
    # A service the file does not have: one line, exit 1, naming the database as written.
    missing = _config(write_config, feed_server, "postgresql:///?service=elsewhere")
    failed = subprocess.run(
        [sys.executable, "-m", "aggregator", "--config", str(missing), "feeds"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert failed.returncode == 1
    assert failed.stderr.startswith("error: cannot open database postgresql:///?service=elsewhere")
    assert len(failed.stderr.splitlines()) == 1
