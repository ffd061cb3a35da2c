"""Static checks of the Dockerfile and docker-compose.yml shipped at the repo top."""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
SERVICE = "smartbroker"


# --------------------------------------------------------------------------- helpers


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml must be a mapping"
    return data


@pytest.fixture(scope="module")
def service(compose: dict) -> dict:
    services = compose.get("services") or {}
    assert SERVICE in services, f"service {SERVICE!r} missing; have {sorted(services)}"
    return services[SERVICE]


def _as_argv(value: str | list) -> list[str]:
    """Compose/Dockerfile commands may be a string (shell-split) or a list."""
    if isinstance(value, str):
        return shlex.split(value)
    return [str(v) for v in value]


def _flag(argv: list[str], name: str) -> str | None:
    """Value of ``--name value`` or ``--name=value`` in argv, else None."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _container_ports(ports: list) -> set[int]:
    result: set[int] = set()
    for entry in ports:
        if isinstance(entry, dict):  # long syntax
            result.add(int(entry["target"]))
        else:  # short syntax: [ip:][host:]container[/proto]
            container = str(entry).rsplit(":", 1)[-1].split("/", 1)[0]
            result.add(int(container))
    return result


def _published_ports(ports: list) -> set[int]:
    result: set[int] = set()
    for entry in ports:
        if isinstance(entry, dict):
            if "published" in entry:
                result.add(int(entry["published"]))
        else:
            parts = str(entry).split("/", 1)[0].split(":")
            if len(parts) >= 2:
                result.add(int(parts[-2]))
    return result


def _volume_mounts(volumes: list) -> list[tuple[str, str]]:
    """(source, target) pairs from short or long volume syntax."""
    mounts = []
    for entry in volumes:
        if isinstance(entry, dict):
            mounts.append((str(entry.get("source", "")), str(entry["target"])))
        else:
            parts = str(entry).split(":")
            if len(parts) >= 2:
                mounts.append((parts[0], parts[1]))
    return mounts


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    buffer = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not buffer and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buffer += line[:-1] + " "
            continue
        buffer += line
        if buffer.strip():
            keyword, _, args = buffer.strip().partition(" ")
            instructions.append((keyword.upper(), args.strip()))
        buffer = ""
    return instructions


def _exec_form(args: str) -> list[str]:
    args = args.strip()
    if args.startswith("["):
        return [str(a) for a in json.loads(args)]
    return shlex.split(args)


# --------------------------------------------------------------------------- compose


def test_service_builds_from_repo_top(service: dict) -> None:
    build = service.get("build")
    context = build.get("context") if isinstance(build, dict) else build
    assert context in (".", "./"), f"build context is {context!r}"
    assert service.get("image") == "smartbroker:latest"


def test_service_publishes_amqp_management_and_metrics_ports(service: dict) -> None:
    ports = service.get("ports") or []
    assert {5672, 15672, 15692} <= _container_ports(ports)
    assert {5672, 15672, 15692} <= _published_ports(ports)


def test_service_publishes_kafka_and_advertises_the_host_side(service: dict) -> None:
    """9092 on both sides, and Metadata names localhost: the container's own address is
    unreachable from the host, where the clients are."""
    ports = service.get("ports") or []
    assert 9092 in _container_ports(ports) and 9092 in _published_ports(ports)
    argv = _as_argv(service["command"])
    assert argv[argv.index("--kafka-port") + 1] == "9092"
    assert argv[argv.index("--kafka-advertised-host") + 1] == "localhost"


def test_named_volume_is_declared_and_mounted(compose: dict, service: dict) -> None:
    declared = compose.get("volumes") or {}
    mounts = _volume_mounts(service.get("volumes") or [])
    named = [(src, dst) for src, dst in mounts if src in declared]
    assert named, (
        f"no mount uses a top-level named volume; mounts={mounts}, declared={list(declared)}"
    )
    assert ("smartbroker-data", "/var/lib/smartbroker") in named


def test_command_serves_on_5672_with_data_dir_on_volume(service: dict) -> None:
    argv = _as_argv(service["command"])
    assert argv[0] == "serve"
    assert _flag(argv, "--port") == "5672"
    assert _flag(argv, "--management-port") == "15672"
    assert _flag(argv, "--host") == "0.0.0.0"
    data_dir = _flag(argv, "--data-dir")
    targets = {dst for _src, dst in _volume_mounts(service.get("volumes") or [])}
    assert data_dir in targets, f"--data-dir {data_dir!r} is not a volume mount target {targets}"


def test_healthcheck_has_a_test_command(service: dict) -> None:
    healthcheck = service.get("healthcheck") or {}
    assert not healthcheck.get("disable", False)
    test = healthcheck.get("test")
    assert test, "healthcheck.test is empty"
    argv = _as_argv(test)
    assert argv[0] in ("CMD", "CMD-SHELL")
    assert len(argv) > 1
    assert "5672" in " ".join(argv), "healthcheck does not probe the AMQP port"


def test_compose_has_no_obsolete_version_key_and_restarts(compose: dict, service: dict) -> None:
    assert "version" not in compose
    assert service.get("restart") == "unless-stopped"
    assert (service.get("environment") or {}).get("SMARTBROKER_LOG_LEVEL") == "info"


def test_compose_healthcheck_python_snippet_compiles(service: dict) -> None:
    argv = _as_argv(service["healthcheck"]["test"])
    assert "-c" in argv, "expected a `python -c ...` healthcheck"
    compile(argv[argv.index("-c") + 1], "<healthcheck>", "exec")


# --------------------------------------------------------------------------- Dockerfile


def test_dockerfile_exposes_ports() -> None:
    exposed: set[int] = set()
    for keyword, args in _dockerfile_instructions():
        if keyword == "EXPOSE":
            exposed |= {int(p.split("/", 1)[0]) for p in args.split()}
    assert {5672, 15672, 15692, 9092} <= exposed


def test_dockerfile_entrypoint_and_cmd() -> None:
    instructions = dict(_dockerfile_instructions())  # last occurrence wins, like docker
    assert _exec_form(instructions["ENTRYPOINT"]) == ["smartbroker"]
    cmd = _exec_form(instructions["CMD"])
    assert cmd[0] == "serve"
    assert _flag(cmd, "--port") == "5672"
    assert _flag(cmd, "--data-dir") == "/var/lib/smartbroker"


def test_dockerfile_healthcheck_runs_non_root_with_volume() -> None:
    instructions = _dockerfile_instructions()
    keywords = [k for k, _ in instructions]
    assert keywords[0] == "FROM" and instructions[0][1].startswith("python:3.11-slim")
    healthchecks = [a for k, a in instructions if k == "HEALTHCHECK"]
    assert healthchecks and "CMD" in healthchecks[-1].split()
    assert "5672" in healthchecks[-1]
    users = [a for k, a in instructions if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    volumes = " ".join(a for k, a in instructions if k == "VOLUME")
    assert "/var/lib/smartbroker" in volumes


# --------------------------------------------------------------------------- docker compose config


def _compose_cli() -> list[str] | None:
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    return None


def test_docker_compose_config_validates() -> None:
    cli = _compose_cli()
    if cli is None:
        pytest.skip("docker compose plugin (or docker-compose) not installed")
    result = subprocess.run(
        [*cli, "-f", str(COMPOSE_FILE), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
