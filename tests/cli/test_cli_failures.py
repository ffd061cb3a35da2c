"""Every CLI failure is a non-zero exit and one readable line on stderr, never a traceback
(issue 12, section 6): empty names, HTTP refusals, malformed URLs, serve's startup."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port

EMPTY_NAMES = [
    (["queues", "declare", ""], "queue"),
    (["queues", "delete", ""], "queue"),
    (["queues", "purge", ""], "queue"),
    (["queues", "declare", "q", "--vhost", ""], "vhost"),
    (["queues", "list", "--vhost", ""], "vhost"),
    (["exchanges", "declare", ""], "exchange"),
    (["exchanges", "delete", ""], "exchange"),
    (["bind", "amq.direct", ""], "queue"),
    (["bind", "amq.direct", "", "--to-exchange"], "exchange"),
    (["vhosts", "add", ""], "vhost"),
    (["vhosts", "delete", ""], "vhost"),
    (["vhosts", "set-limit", "", "max-queues", "1"], "vhost"),
    (["vhosts", "set-limit", "/", "", "1"], "limit"),
    (["users", "add", "", "pw"], "user"),
    (["users", "delete", ""], "user"),
    (["users", "set-password", "", "pw"], "user"),
    (["users", "set-permissions", "", ".*", ".*", ".*"], "user"),
    (["users", "set-topic-permissions", "guest", "", ".*", ".*"], "exchange"),
    (["users", "set-limit", "", "max-connections", "1"], "user"),
    (["policies", "set", "", ".*", "{}"], "policy"),
    (["policies", "delete", ""], "policy"),
    (["connections", "close", ""], "connection"),
    (["streams", "info", ""], "stream"),
    (["streams", "list", "--vhost", ""], "vhost"),
    (["groups", "describe", ""], "group"),
    (["groups", "describe", "g", "--queue", ""], "stream"),
    (["groups", "reset-offsets", "g", "--queue", "", "--to-earliest"], "stream"),
    (["dlq", "inspect", ""], "queue"),
    (["dlq", "redrive", ""], "queue"),
    (["dlq", "purge", ""], "queue"),
    (["get", ""], "queue"),
    (["consume", ""], "queue"),
    (["consume", "q", "--group", ""], "group"),
    (["publish", "", "k", "body", "--vhost", ""], "vhost"),
]


@pytest.mark.parametrize(("command", "what"), EMPTY_NAMES, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else v)
def test_empty_names_are_refused(cli, command: list[str], what: str) -> None:
    result = cli(*command)
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"error: {what} name must not be empty\n"


def test_empty_names_left_nothing_behind(cli) -> None:
    import json

    assert "" not in [v["name"] for v in json.loads(cli("vhosts", "list", "--json").stdout)]
    assert cli("bind", "", "q").stderr == "error: operation not permitted on the default exchange\n"


def test_default_exchange_is_still_publishable(cli, uid: str) -> None:
    """'' is the default exchange for publish: not an empty name."""
    result = cli("publish", "", f"no.queue.{uid}", "x")
    assert "returned as unroutable" in result.stderr


def test_http_refusal_is_rabbitmqs_reason_on_one_line(cli) -> None:
    result = cli("exchanges", "delete", "amq.direct")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) > len("error: ")
    result = cli("vhosts", "set-limit", "/", "max-nonsense", "1")
    assert result.exit_code == 1
    assert len(result.stderr.splitlines()) == 1 and "max-nonsense" in result.stderr


def test_wrong_api_password_is_one_line(cli, api_url: str) -> None:
    bad = api_url.replace("guest:guest@", "guest:wrong@")
    result = cli("status", "--api", bad)
    assert result.exit_code == 1
    assert result.stderr == f"error: access refused by {bad.replace('guest:wrong@', '')} for user 'guest'\n"


@pytest.mark.parametrize(("command", "line"), [
    (["get", "q", "--url", "localhost"],
     "error: invalid --url 'localhost': expected amqp://user:password@host:port/vhost\n"),
    (["get", "q", "--url", "amqp://guest:secret@localhost:port/"],
     "error: invalid --url: Port could not be cast to integer value as 'port'\n"),
    (["status", "--api", "http://guest:secret@localhost:port"],
     "error: invalid --api: Port could not be cast to integer value as 'port'\n"),
    (["status", "--api", "ftp://localhost"],
     "error: invalid --api 'ftp://localhost': expected http(s)://user:password@host:port\n"),
    (["consume", "q", "--offset", ""],
     "error: --offset must not be empty: first, last, next, an offset or an interval\n"),
])
def test_malformed_options_are_one_line(cli, command: list[str], line: str) -> None:
    result = cli(*command)
    assert (result.exit_code, result.stderr) == (1, line)


# -- serve -----------------------------------------------------------------------------------
def serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``smartbroker serve`` on free ports, expected to fail before it listens."""
    return subprocess.run(
        [sys.executable, "-m", "smartbroker", "serve", "--host", "127.0.0.1",
         "--port", str(free_port()), "--management-port", str(free_port()),
         "--tls-port", str(free_port()), "--kafka-port", "0", *args],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
        env={**os.environ, **(env or {})})


def assert_one_line(proc: subprocess.CompletedProcess, line: str) -> None:
    assert "Traceback" not in proc.stderr
    assert (proc.returncode, proc.stderr) == (1, line + "\n")


def test_serve_data_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    assert_one_line(serve(tmp_path, "--data-dir", "afile"),
                    "error: data directory afile is not a directory")


def test_serve_data_dir_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    assert_one_line(serve(tmp_path, "--data-dir", "afile/data"),
                    "error: data directory afile/data is not usable: Not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_serve_data_dir_read_only(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        assert_one_line(serve(tmp_path, "--data-dir", "ro"),
                        "error: data directory ro is not usable: Permission denied")
        assert_one_line(serve(tmp_path, "--data-dir", "ro/data"),
                        "error: data directory ro/data is not usable: Permission denied")
    finally:
        ro.chmod(0o755)


def test_serve_data_dir_that_cannot_be_created(tmp_path: Path) -> None:
    """Even root cannot create directories in /proc (a read-only file system for that)."""
    assert_one_line(serve(tmp_path, "--data-dir", "/proc/smartbroker-data"),
                    "error: data directory /proc/smartbroker-data is not usable: "
                    "No such file or directory")


def _pem_pair(tmp_path: Path, name: str) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_serve_bad_tls_files(tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    data = ("--data-dir", "data")
    assert_one_line(serve(tmp_path, *data, "--tls-cert", "junk.pem", "--tls-key", "junk.pem"),
                    "error: cannot load TLS files (junk.pem, junk.pem): "
                    "not a PEM certificate and key")
    assert_one_line(serve(tmp_path, *data, "--tls-cert", "missing.pem"),
                    "error: cannot load TLS files (missing.pem): No such file or directory")
    a_cert, _ = _pem_pair(tmp_path, "a")
    _, b_key = _pem_pair(tmp_path, "b")
    assert_one_line(serve(tmp_path, *data, "--tls-cert", "a.crt", "--tls-key", "b.key"),
                    "error: cannot load TLS files (a.crt, b.key): "
                    "the key does not match the certificate")


def test_serve_bad_config(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text("port = [\n")
    proc = serve(tmp_path, "--data-dir", "data", "--config", "bad.toml")
    assert_one_line(proc, "error: config file bad.toml is not valid TOML: "
                          "Invalid value (at end of document)")
    proc = serve(tmp_path, "--data-dir", "data", env={"SMARTBROKER_LOOPBACK_USERS": "x"})
    assert_one_line(proc, 'error: invalid setting: error parsing value for field '
                          '"loopback_users" from source "EnvSettingsSource"')


@pytest.mark.parametrize(("command", "line"), [
    (["queues", "declare"],
     "error: Missing argument 'name'. (see 'smartbroker queues declare --help')"),
    (["queues", "frobnicate"], "error: No such command 'frobnicate'. (see 'smartbroker queues --help')"),
    (["get", "q", "--count", "0"],
     "error: Invalid value for '--count' / '-n': Input should be greater than or equal to 1 "
     "(see 'smartbroker get --help')"),
    (["queues", "list", "--bogus"],
     "error: No such option: --bogus (see 'smartbroker queues list --help')"),
])
def test_usage_errors_are_one_line(command: list[str], line: str) -> None:
    """A real process: the boxed rich panel was several lines of stderr."""
    script = Path(sys.executable).parent / "smartbroker"  # the installed entry point
    proc = subprocess.run([str(script), *command], capture_output=True, text=True, timeout=30)
    assert (proc.returncode, proc.stderr, proc.stdout) == (2, line + "\n", "")
