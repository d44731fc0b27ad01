"""The deployment examples: deploy/compose.yaml parses and runs PostgreSQL, two pollers and
one server from the project's image, on a config that loads; the systemd templates run their
role; README names every file of deploy/."""

from __future__ import annotations

import configparser
import os
from typing import Any

import pytest
import yaml
from tests_support import REPO

from aggregator.config.load import load_config

DEPLOY = REPO / "deploy"
README = (REPO / "README.md").read_text(encoding="utf-8")


def _compose() -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    return doc


def _role(service: dict[str, Any]) -> str:
    command = service["command"]
    return str(command[command.index("--role") + 1])


def test_compose_runs_postgresql_two_pollers_and_one_server() -> None:
    services = _compose()["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    nodes = {name: s for name, s in services.items() if name != "postgres"}
    assert sorted(_role(s) for s in nodes.values()) == ["poller", "poller", "server"]
    for name, s in nodes.items():
        # The YAML merge key gave every node the shared settings: the project's image, the
        # database URL, the config, and a start after PostgreSQL answers.
        assert s["build"] == {"context": "..", "dockerfile": "Dockerfile"}, name
        assert (DEPLOY / s["build"]["context"] / s["build"]["dockerfile"]).is_file()
        url = s["environment"]["AGGREGATOR_DATABASE"]
        assert url.startswith("postgresql://") and "@postgres:5432/" in url, name
        assert ":" not in url.removeprefix("postgresql://").split("@")[0]  # no password
        assert s["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert s["command"][:2] == ["aggregator", "run"]
        assert s["command"][s["command"].index("--listen") + 1] == "0.0.0.0:8080"
        source, target = s["volumes"][0].split(":")[:2]
        assert target == s["command"][s["command"].index("--config") + 1]
        assert (DEPLOY / source).is_file()
    assert [_role(s) for s in nodes.values() if "ports" in s] == ["server"]


def test_the_compose_config_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in os.environ if k.startswith("AGGREGATOR_")]:
        monkeypatch.delenv(key)
    config = load_config(DEPLOY / "aggregator.toml")
    assert config.aggregator.listen == "0.0.0.0:8080"
    assert set(config.outputs) == {"all", "news"}


@pytest.mark.parametrize("role", ["poller", "server"])
def test_each_role_has_a_systemd_template_unit(role: str) -> None:
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read(DEPLOY / "systemd" / f"aggregator-{role}@.service", encoding="utf-8")
    start = unit["Service"]["ExecStart"].split()
    assert start[1:3] == ["run", "--config"]
    assert start[start.index("--role") + 1] == role
    assert start[start.index("--listen") + 1].endswith(":%i")  # the instance is the port
    assert unit["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert unit["Service"]["EnvironmentFile"] == "/etc/aggregator/cluster.env"
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_readme_names_every_deployment_file() -> None:
    files = sorted(p.relative_to(REPO).as_posix() for p in DEPLOY.rglob("*") if p.is_file())
    assert files, "deploy/ is empty"
    for name in files:
        assert f"`{name}`" in README, name
    assert "## Scaling out" in README and "pg_dump" in README
