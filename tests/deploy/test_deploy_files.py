"""deploy/'s three descriptions of the process set say the same thing: the Procfile's command
lines are the docker-compose services' and the systemd units' (which add absolute paths and
systemd's `$$` escape), and the instance config loads with every value from the environment."""

import re
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _procfile() -> dict[str, str]:
    lines = (DEPLOY / "Procfile").read_text().splitlines()
    return dict(ln.split(": ", 1) for ln in lines if ln.strip() and not ln.startswith("#"))


def test_compose_runs_the_procfile_commands_with_postgres_and_redis():
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "migrate"} <= set(services)
    for name, command in _procfile().items():
        sh, dash_c, line = services[name]["command"]
        assert (sh, dash_c) == ("sh", "-c")
        # Compose turns `$$` into `$` before the shell sees the line.
        assert line.replace("$$", "$") == f"exec {command}", name
    assert "bosun db upgrade" in services["migrate"]["command"][2]
    # No secret in the file: passwords and keys are required from the environment.
    text = (DEPLOY / "docker-compose.yml").read_text()
    assert "${BOSUN_PG_PASSWORD:?" in text and "${BOSUN_AUDIT_KEY:?" in text


def test_systemd_units_run_the_procfile_commands():
    commands = _procfile()
    for unit, name in (
        ("bosun-code-server.service", "codeserver"),
        ("bosun-webserver.service", "webserver"),
        ("bosun-daemon.service", "daemon"),
    ):
        start = re.search(r"^ExecStart=(.*)$", (DEPLOY / "systemd" / unit).read_text(), re.M).group(1)
        start = start.replace("$$", "$").replace("/opt/bosun/.venv/bin/", "")
        assert commands[name] in start, (unit, start)


def test_instance_config_takes_every_connection_from_the_environment():
    # That Dagster loads it against a real Postgres is tests/deploy/test_process_set.py's part.
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    assert config["storage"]["postgres"]["postgres_url"] == {"env": "DAGSTER_PG_URL"}
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["run_coordinator"]["config"]["max_concurrent_runs"] == {"env": "BOSUN_MAX_CONCURRENT_RUNS"}
    assert config["telemetry"] == {"enabled": False}
    workspace = yaml.safe_load((DEPLOY / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"]["port"] == {"env": "BOSUN_CODE_SERVER_PORT"}
