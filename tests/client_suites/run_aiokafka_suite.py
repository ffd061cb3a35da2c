#!/usr/bin/env python3
"""Run aiokafka's own test suite (its GitHub ``tests/`` at the installed version's tag)
against smartbroker.

    .venv/bin/python tests/client_suites/run_aiokafka_suite.py             # whole suite
    .venv/bin/python tests/client_suites/run_aiokafka_suite.py -k producer
    .venv/bin/python tests/client_suites/run_aiokafka_suite.py --source ~/src/aiokafka

Not a pytest module of ours (the file name keeps it out of collection). aiokafka's PyPI
sdist has no tests, so they come from a clone of github.com/aio-libs/aiokafka
(``--source``: a git directory, bare or not, that has the tag ``v<installed version>``,
or an already unpacked tree with ``tests/``). They run against the aiokafka installed in
this interpreter (with its C extensions), not the source tree's.

The suite starts Kafka in docker (``--docker-image``; ``tests/conftest.py``). This script
copies ``tests/`` (and ``docker/scripts``, which the Kerberos helper reads) to a temporary
directory and appends to the copied conftest.py fixtures of the same names, which then
win (a module's later definition replaces the earlier one):

* ``docker``/``kafka_image``/``kafka_server``: a smartbroker started here (free ports,
  temporary data dir): ``port`` is its Kafka listener, ``sasl_plain_port`` the same
  listener (SASL is offered on every smartbroker Kafka listener), ``ssl_port`` and
  ``sasl_ssl_port`` its Kafka TLS listener; ``container`` is None.
* ``ssl_folder``: ``ca.crt``, ``client.crt``, ``client.key`` and the broker's certificate
  made with openssl here (the suite makes them with keytool inside its image).
* ``kafka_config.add_scram_user(u, p)`` (``kafka-configs.sh`` in the container) becomes a
  smartbroker user with that password and every permission on "/" (PUT /api/users), so
  SCRAM logs in; ``acl_manager.add_acl`` (``kafka-acls.sh`` against ZooKeeper; smartbroker
  has no Kafka ACL API) denies READ/WRITE on a topic or CREATE on the cluster through the
  user's permission patterns (PUT /api/permissions) and skips tests that need ACLs on groups,
  transactional ids or DESCRIBE (no equivalent); ``kerberos_utils`` (GSSAPI) skips its test.
* ``--docker-image`` (default ``aiolibs/kafka:2.13_2.8.1``, the suite's Makefile and CI
  default) only gives the Kafka version the tests gate on (``@kafka_versions``).
* The broker has the suite's Kafka settings: ``NUM_PARTITIONS=2`` (auto-created topics:
  ``SMARTBROKER_KAFKA_NUM_PARTITIONS``), initial rebalance delay 0
  (``SMARTBROKER_KAFKA_INITIAL_REBALANCE_DELAY_MS``); user ``test``/``test`` exists
  (the suite's ``kafka_server_jaas.conf``).
* pytest-asyncio and pytest-mock (its requirements-ci.txt), and cramjam (its codecs) are
  pip-installed once into ``--cache`` and put on the suite's PYTHONPATH.
* Per-test timeout (default 120 s, the suite's own ``TEST_TIMEOUT``) with
  pytest-timeout's signal method.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_runs import add_user, management_api, run_suite  # noqa: E402

from smartbroker.launcher import BrokerProcess, free_port  # noqa: E402

MIRROR = Path("/work/.mirror/aio-libs+aiokafka/repo")
DEPS = ("pytest-asyncio==1.3.0", "pytest-mock==3.15.1", "cramjam")
USERS = ("test",)  # the suite's kafka_server_jaas.conf: user test, password test
BROKER_ENV = {"SMARTBROKER_KAFKA_INITIAL_REBALANCE_DELAY_MS": "0",
              "SMARTBROKER_KAFKA_NUM_PARTITIONS": "2"}
CONFTEST_OVERRIDE = '''

# ---- appended by smartbroker's tests/client_suites/run_aiokafka_suite.py: an external
# broker (SB_* environment) instead of docker; these definitions replace the ones above.
import re
import ssl as _sb_ssl
import urllib.request as _sb_urllib
from base64 import b64encode as _sb_b64


class _SbExternal:
    """What the docker helpers did, done against smartbroker or skipped."""

    def __init__(self, what):
        self._what = what

    def _api(self, method, path, body):
        req = _sb_urllib.Request(os.environ["SB_API"] + path, method=method,
                                 data=json.dumps(body).encode(),
                                 headers={"content-type": "application/json",
                                          "authorization": "Basic " +
                                          _sb_b64(b"guest:guest").decode()})
        _sb_urllib.urlopen(req, timeout=10, context=_sb_ssl._create_unverified_context()).read()

    def add_scram_user(self, username, password):
        self._api("PUT", f"/users/{username}", {"password": password, "tags": ""})
        self._api("PUT", f"/permissions/%2F/{username}",
                  {"configure": ".*", "write": ".*", "read": ".*"})

    def list_acl(self, principal=None):
        return b""

    def _permit(self, user, **kinds):
        perms = {"configure": ".*", "write": ".*", "read": ".*", **kinds}
        self._api("PUT", f"/permissions/%2F/{user}", perms)

    def cleanup(self):
        for user in getattr(self, "_denied", ()):
            self._permit(user)
        self._denied = set()

    def add_acl(self, *, operation, topic=None, cluster=None, allow_principal=None,
                deny_principal=None, group=None, transactional_id=None, **rest):
        """A deny of READ or WRITE on a topic, or of CREATE on the cluster, becomes the
        user's read/write/configure permission pattern without that topic (or configure
        nothing); allows are what the user already has (every permission on "/").
        Kafka ACLs on groups, transactional ids or DESCRIBE have no smartbroker
        equivalent (RabbitMQ's permissions name queues only): the test is skipped."""
        if allow_principal is not None and group is None and transactional_id is None:
            return
        op = operation.upper()
        if deny_principal is not None and topic is not None and op in ("READ", "WRITE"):
            others = "^(?!" + re.escape(topic) + "$).*"
            self._permit(deny_principal, **{op.lower(): others})
        elif deny_principal is not None and cluster and op == "CREATE":
            self._permit(deny_principal, configure="^$")
        else:
            pytest.skip(f"Kafka ACL {acl_params_text(op, topic, group, transactional_id)}: "
                        "smartbroker's permissions have no equivalent")
        self._denied = getattr(self, "_denied", set()) | {deny_principal}

    def remove_acl(self, **acl_params):
        self.cleanup()

    def kinit(self, *args, **kwargs):
        pytest.skip("GSSAPI (Kerberos KDC in the Kafka container): smartbroker has none")

    def kdestroy(self, *args, **kwargs):
        pass


def acl_params_text(op, topic, group, transactional_id):
    what = [f"{k} {v}" for k, v in (("topic", topic), ("group", group),
                                     ("transactional id", transactional_id)) if v]
    return " ".join([op, "on", *what]) if what else op


@pytest.fixture(scope="session")
def docker(request):
    yield None


@pytest.fixture(scope="session")
def kafka_image(request):
    return request.config.getoption("--docker-image")


@pytest.fixture(scope="session")
def ssl_folder():
    return pathlib.Path(os.environ["SB_SSL_DIR"])


@pytest.fixture(scope="session")
def kafka_server(kafka_image):
    yield KafkaServer("127.0.0.1", int(os.environ["SB_KAFKA_PORT"]),
                      int(os.environ["SB_KAFKA_TLS_PORT"]), int(os.environ["SB_KAFKA_PORT"]),
                      int(os.environ["SB_KAFKA_TLS_PORT"]), None)


@pytest.fixture(scope="class")
def acl_manager(kafka_server):
    return _SbExternal("acl")


@pytest.fixture(scope="class")
def kafka_config(kafka_server):
    return _SbExternal("config")


@pytest.fixture(scope="class")
def kerberos_utils(kafka_server):
    return _SbExternal("kerberos")
'''


def tests_tree(source: Path, ver: str, into: Path) -> Path:
    """aiokafka's tests/ (and docker/scripts) of tag v<ver> copied under ``into``."""
    src = into / f"aiokafka-{ver}"
    src.mkdir()
    if (source / "tests" / "conftest.py").is_file():  # an unpacked tree
        shutil.copytree(source / "tests", src / "tests")
        if (source / "docker").is_dir():
            shutil.copytree(source / "docker", src / "docker")
        shutil.copy(source / "pyproject.toml", src)  # the suite's pytest settings
    else:  # a git directory: the tag's files, whatever is checked out
        archive = subprocess.run(["git", "--git-dir", str(source), "archive", f"v{ver}",
                                  "tests", "docker/scripts", "pyproject.toml"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "x", "-C", str(src)], input=archive, check=True)
    return src


def patch_conftest(src: Path) -> None:
    """No docker import (a stand-in module), and the external-broker fixtures appended."""
    conftest = src / "tests" / "conftest.py"
    text = conftest.read_text()
    old = "import docker as libdocker\n"
    assert old in text, "aiokafka's conftest.py changed: update run_aiokafka_suite.py"
    stub = ("import types as _sb_types\nimport json\n"
            "libdocker = _sb_types.SimpleNamespace(models=_sb_types.SimpleNamespace("
            "containers=_sb_types.SimpleNamespace(Container=object)))  # no docker\n")
    conftest.write_text(text.replace(old, stub) + CONFTEST_OVERRIDE)


def certificates(into: Path) -> Path:
    """A CA, the broker's certificate (localhost, 127.0.0.1) and the suite's client files."""
    into.mkdir()

    def ssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=into, check=True, capture_output=True)

    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=sb-ca",
        "-keyout", "ca.key", "-out", "ca.crt")
    (into / "san.ext").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name in ("server", "client"):
        ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        ssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.ext", "-out", f"{name}.crt")
    return into


def deps(cache: Path) -> Path:
    """The suite's pytest plugins and codec, installed once into ``cache`` (no deps: pytest
    itself is this interpreter's)."""
    target = cache / "aiokafka-deps"
    if not (target / "pytest_asyncio").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--target", str(target), *DEPS], check=True)
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Other arguments are passed to pytest.")
    ap.add_argument("--source", type=Path, default=MIRROR,
                    help="aiokafka git directory (with tag v<version>) or source tree")
    ap.add_argument("--docker-image", default="aiolibs/kafka:2.13_2.8.1",
                    help="only its tag matters: the Kafka version the tests gate on")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sb-suites")
    ap.add_argument("--timeout", type=int, default=120, help="seconds per test")
    ap.add_argument("--junit", type=Path, help="keep the JUnit XML report here")
    a, pytest_args = ap.parse_known_args()
    ver = version("aiokafka")
    work = Path(tempfile.mkdtemp(prefix="aiokafka-suite-"))
    src = tests_tree(a.source, ver, work)
    patch_conftest(src)
    ssl_dir = certificates(work / "ssl")
    tls_port = free_port()
    broker = BrokerProcess(work / "data", kafka=True, env=BROKER_ENV, extra_args=(
        "--kafka-tls-port", str(tls_port), "--tls-cert", str(ssl_dir / "server.crt"),
        "--tls-key", str(ssl_dir / "server.key"), "--tls-ca", str(ssl_dir / "ca.crt"),
        "--tls-port", str(free_port()))).start()
    api = management_api(broker)
    junit = a.junit or work / "junit.xml"
    env = {**os.environ, "SB_KAFKA_PORT": str(broker.kafka_port),
           "SB_KAFKA_TLS_PORT": str(tls_port), "SB_SSL_DIR": str(ssl_dir), "SB_API": api,
           "PYTHONPATH": os.pathsep.join(
               p for p in (str(deps(a.cache)), os.environ.get("PYTHONPATH")) if p)}
    where = [] if any(x.startswith("tests") for x in pytest_args) else ["tests"]
    cmd = [sys.executable, "-m", "pytest", *where, "-p", "no:cacheprovider",
           "--docker-image", a.docker_image, "--no-pull", f"--timeout={a.timeout}",
           "-o", "asyncio_default_fixture_loop_scope=function",  # unset: a warning = error
           "-W", "ignore::pytest.PytestRemovedIn10Warning",  # its CI's pytest is 9.0
           "--continue-on-collection-errors",
           "--timeout-method=signal", "-q", "-rfEs", f"--junitxml={junit}", *pytest_args]
    print(f"aiokafka {ver} suite from {src} against {broker.kafka_bootstrap} "
          f"(TLS {tls_port}):\n  {' '.join(cmd)}", flush=True)

    def users() -> None:
        for user in USERS:
            add_user(api, user)

    return run_suite(f"aiokafka {ver}", cmd, src, env, broker, junit, setup=users)


if __name__ == "__main__":
    sys.exit(main())
