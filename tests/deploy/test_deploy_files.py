"""The files an operator deploys with (deploy/): every command they run is a real ``pneumo``
command that parses, every variable they set is one pneumo reads, the proxy reaches the ports
the services listen on, and the health checks ask for routes the API has. The image itself is
not built here (no registry for the base image)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pneumo.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNITS = sorted((DEPLOY / "systemd").glob("*.service"))


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def pneumo_services() -> dict[str, dict]:
    return {
        name: s
        for name, s in compose()["services"].items()
        if s.get("image", "").startswith("pneumo")
    }


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of deploy/Dockerfile, continuation lines joined."""
    text = (DEPLOY / "Dockerfile").read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [tuple(line.split(None, 1)) for line in joined.splitlines() if line.strip()]


def parse_cli(argv: list[str]):
    """The CLI's own parser; argparse's SystemExit becomes a test failure naming the command."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"`pneumo {shlex.join(argv)}` does not parse")


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def api_routes() -> set[str]:
    pytest.importorskip("fastapi")
    from pneumo.api.main import create_app

    app = create_app()
    # routers included under a prefix show their paths in the schema, not in app.routes
    return set(app.openapi()["paths"]) | {r.path for r in app.routes if hasattr(r, "path")}


def variables_pneumo_reads() -> set[str]:
    names = set()
    for path in (ROOT / "src" / "pneumo").rglob("*.py"):
        names.update(re.findall(r"\bPNEUMO_[A-Z0-9_]*[A-Z0-9]\b", path.read_text()))
    return names


def test_every_compose_command_is_a_pneumo_subcommand_that_parses():
    services = pneumo_services()
    assert {"api", "app", "migrate"} <= set(services)
    ran = {name: parse_cli(s["command"]).command for name, s in services.items()}
    assert ran == {"api": "serve", "app": "app", "migrate": "db"}


def test_servers_listen_beyond_their_container():
    for name in ("api", "app"):
        assert option(pneumo_services()[name]["command"], "--host") == "0.0.0.0", name


def test_the_schema_is_migrated_before_the_app_and_api_start():
    services = compose()["services"]
    assert services["migrate"]["command"] == ["db", "migrate"]
    for name in ("app", "api"):
        assert services[name]["depends_on"]["migrate"]["condition"] == (
            "service_completed_successfully"
        )
    assert services["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"
    assert "pgdata" in compose()["volumes"]
    assert any(v.startswith("pgdata:") for v in services["db"]["volumes"])


def test_two_api_and_two_app_replicas():
    services = pneumo_services()
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["app"]["deploy"]["replicas"] == 2


def test_variables_set_for_pneumo_are_ones_it_reads():
    example = (DEPLOY / "pneumo.env.example").read_text()
    named = set(re.findall(r"^(PNEUMO_[A-Z0-9_]+)=", example, re.M))
    named |= set(re.findall(r"\b(PNEUMO_[A-Z0-9_]+)=", (DEPLOY / "Dockerfile").read_text()))
    for unit in UNITS:
        named |= set(re.findall(r"\b(PNEUMO_[A-Z0-9_]+)=", unit.read_text()))
    assert {"PNEUMO_DB", "PNEUMO_API_KEY", "PNEUMO_MODEL"} <= named
    assert named - variables_pneumo_reads() == set()
    for service in pneumo_services().values():
        assert service["env_file"] == "pneumo.env"


def test_the_proxy_reaches_the_ports_the_services_listen_on():
    conf = (DEPLOY / "nginx.conf").read_text()
    upstreams = dict(re.findall(r"upstream\s+(\w+)\s*\{([^}]*)\}", conf))
    servers = {
        name: re.findall(r"^\s*server\s+([\w.-]+):(\d+);", body, re.M)
        for name, body in upstreams.items()
    }
    services = pneumo_services()
    reached = set()
    for name, targets in servers.items():
        assert targets, f"upstream {name} has no server"
        for host, port in targets:
            assert host in services, f"upstream {name}: no compose service {host}"
            assert option(services[host]["command"], "--port") == port, (host, port)
            reached.add(host)
    assert reached == {"api", "app"}
    assert all(f"proxy_pass http://{name};" in conf for name in servers)
    listens = set(re.findall(r"^\s*listen\s+(\d+);", conf, re.M))
    published = {p.split(":")[-1] for p in compose()["services"]["proxy"]["ports"]}
    assert listens == published


def test_the_app_upstream_is_sticky_and_passes_websockets():
    conf = (DEPLOY / "nginx.conf").read_text()
    app_upstream = re.search(r"upstream\s+pneumo_app\s*\{([^}]*)\}", conf).group(1)
    assert "ip_hash;" in app_upstream
    app_server = conf[conf.index("proxy_pass http://pneumo_app") - 400 :]
    for line in (
        "proxy_http_version 1.1;",
        "proxy_set_header Upgrade $http_upgrade;",
        "proxy_set_header Connection $connection_upgrade;",
    ):
        assert line in app_server


def test_dockerfile_entry_point_and_default_command_parse():
    instructions = dict(dockerfile_instructions())
    entrypoint = json.loads(instructions["ENTRYPOINT"])
    command = json.loads(instructions["CMD"])
    assert entrypoint == ["pneumo"]
    assert parse_cli(command).command == "serve"
    # the two entry points an operator types after `docker run IMAGE`
    assert parse_cli(["app", "--host", "0.0.0.0", "--port", "8501"]).command == "app"
    assert instructions["USER"] == "pneumo"
    copies = [args for name, args in dockerfile_instructions() if name == "COPY"]
    assert any(args.endswith("models/default /opt/pneumo/models/default") for args in copies)
    assert "PNEUMO_MODEL=/opt/pneumo/models/default" in instructions["ENV"]


def test_health_checks_ask_for_real_api_routes():
    routes = api_routes()
    healthcheck = dict(dockerfile_instructions())["HEALTHCHECK"]
    paths = re.findall(r"http://127\.0\.0\.1:(\d+)(/[\w/]+)", healthcheck)
    assert paths == [("8000", "/v1/ready")]
    assert paths[0][1] in routes
    # the port the health check asks is the one the default command serves on
    assert option(json.loads(dict(dockerfile_instructions())["CMD"]), "--port") == "8000"


def test_app_health_check_runs_a_real_pneumo_command():
    test = pneumo_services()["app"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    pneumo_part = test[1].split("&&")[-1].split()
    assert pneumo_part[0] == "pneumo"
    assert parse_cli(pneumo_part[1:]).command == "db"


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_units_start_real_commands_hardened(unit):
    text = unit.read_text()
    for line in (
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/pneumo",
        "PrivateTmp=yes",
        "Restart=on-failure",
        "EnvironmentFile=/etc/pneumo/pneumo.env",
        "User=pneumo",
    ):
        assert line in text.splitlines(), f"{unit.name}: {line}"
    for command in re.findall(r"^ExecStart(?:Pre)?=(\S+) (.*)$", text, re.M):
        assert command[0].endswith("/bin/pneumo")
        parse_cli(shlex.split(command[1]))


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_systemd_analyze_verify_finds_nothing(unit, tmp_path):
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    pneumo = Path(sys.executable).with_name("pneumo")
    if not pneumo.is_file():
        pytest.skip(f"no pneumo script beside {sys.executable}")
    # the unit as installed, its pneumo being the one of this environment
    copy = tmp_path / unit.name
    copy.write_text(unit.read_text().replace("/opt/pneumo/venv/bin/pneumo", str(pneumo)))
    done = subprocess.run(
        ["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60
    )
    if "Failed to" in done.stderr and "manager" in done.stderr.lower():
        pytest.skip(f"systemd-analyze cannot run here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == ""
