#!/usr/bin/env python3
"""Run confluent-kafka-python's own integration suite (its GitHub ``tests/integration``)
against smartbroker.

    .venv/bin/python tests/client_suites/run_confluent_kafka_suite.py            # the suite
    .venv/bin/python tests/client_suites/run_confluent_kafka_suite.py --share    # + KIP-932
    .venv/bin/python tests/client_suites/run_confluent_kafka_suite.py -k transactions
    .venv/bin/python tests/client_suites/run_confluent_kafka_suite.py --bootstrap 127.0.0.1:9092

Not a pytest module of ours (the file name keeps it out of collection). confluent-kafka's
PyPI sdist has no tests, so they come from a clone of
github.com/confluentinc/confluent-kafka-python (``--source``: a git directory and
``--tag``, default v2.15.0, the newest tag of the clone here; or an unpacked tree). They
run against the confluent-kafka installed in this interpreter.

How the suite is pointed at a running broker, with its own switch: ``BROKERS=host:port``
makes its ``kafka_cluster`` fixture a ``ByoFixture`` (bring your own cluster) instead of a
trivup cluster. Beyond that:

* ``trivup`` (imported by ``cluster_fixture.py`` even for a ByoFixture) is a stand-in
  module written here; the schema-registry and serializer packages its fixtures import
  (authlib, joserfc, attrs, cachetools, avro, fastavro, jsonschema and its helpers,
  protobuf, googleapis-common-protos) and pytest-asyncio are pip-installed once into
  ``--cache`` (no deps).
* ``sasl_cluster`` (always a trivup cluster with SASL PLAIN user ``sasl_user``) is
  replaced by a ByoFixture speaking SASL_PLAINTEXT PLAIN to the same broker as user
  ``sasl_user``/``sasl_user``, whom this script creates (appended to the copied
  ``tests/integration/conftest.py``; the later definition wins).
* Not run: ``schema_registry/`` (needs a Schema Registry: ``SR_URL``),
  ``share_consumer_oauth/`` (starts its own OAUTHBEARER Kafka from ``KAFKA_HOME``),
  ``integration_test.py`` (the old script-style suite, run with a testconf.json, not
  pytest; with confluent-kafka 2.16.1 it fails formatting ``confluent_kafka.version()``
  before any test), and, unless ``--share``, ``share_consumer*/`` (KIP-932 share groups, which
  smartbroker does not implement; ~150 tests that each wait for their timeout).
* The broker has the suite's Kafka settings that matter here
  (``group.initial.rebalance.delay.ms`` 0:
  ``SMARTBROKER_KAFKA_INITIAL_REBALANCE_DELAY_MS``).
* Per-test timeout (default 60 s) with pytest-timeout's signal method.
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

from smartbroker.launcher import BrokerProcess  # noqa: E402

MIRROR = Path("/work/.mirror/confluentinc+confluent-kafka-python/repo")
DEPS = ("pytest-asyncio==1.3.0", "authlib", "joserfc", "attrs", "cachetools", "avro",
        "fastavro", "jsonschema", "jsonschema-specifications", "referencing", "rpds-py",
        "protobuf", "googleapis-common-protos")
BROKER_ENV = {"SMARTBROKER_KAFKA_INITIAL_REBALANCE_DELAY_MS": "0"}
SASL_USER = "sasl_user"  # the suite's create_sasl_cluster: sasl_users 'sasl_user=sasl_user'
NOT_RUN = ("schema_registry", "share_consumer_oauth", "integration_test.py")
SHARE = ("share_consumer", "share_consumer_sasl")
CONFTEST_OVERRIDE = '''

# ---- appended by smartbroker's tests/client_suites/run_confluent_kafka_suite.py: the
# SASL cluster is the BROKERS broker with SASL PLAIN (replaces the trivup one above).
@pytest.fixture(scope="session")
def sasl_cluster(request):
    cluster = create_byo_cluster({
        "bootstrap.servers": os.environ["BROKERS"], "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanisms": "PLAIN", "sasl.username": "sasl_user",
        "sasl.password": "sasl_user"})
    yield cluster
    cluster.stop()
'''
TRIVUP_STUB = '''"""Stand-in for trivup (written by smartbroker's run_confluent_kafka_suite.py): only
BROKERS (ByoFixture) clusters here."""


class KafkaCluster:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("this run uses an external broker (BROKERS); trivup is not here")
'''


def tests_tree(source: Path, tag: str, into: Path) -> Path:
    """The suite's tests/ and pyproject.toml (pytest settings) of ``tag`` under ``into``."""
    src = into / f"confluent-kafka-python-{tag}"
    src.mkdir()
    if (source / "tests" / "integration").is_dir():
        shutil.copytree(source / "tests", src / "tests")
        shutil.copy(source / "pyproject.toml", src)
    else:
        archive = subprocess.run(["git", "--git-dir", str(source), "archive", tag, "tests",
                                  "pyproject.toml"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "x", "-C", str(src)], input=archive, check=True)
    conftest = src / "tests" / "integration" / "conftest.py"
    text = conftest.read_text()
    assert "def sasl_cluster(" in text, "the suite's conftest.py changed: update this script"
    conftest.write_text(text + CONFTEST_OVERRIDE)
    return src


def deps(cache: Path, work: Path) -> Path:
    """Its fixtures' imports, installed once into ``cache``, and the trivup stand-in."""
    target = cache / "confluent-deps"
    if not (target / "google" / "type").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade",
                        "--target", str(target), *DEPS], check=True)
    stub = work / "stub" / "trivup" / "clusters"
    stub.mkdir(parents=True)
    (stub.parent / "__init__.py").touch()
    (stub / "__init__.py").touch()
    (stub / "KafkaCluster.py").write_text(TRIVUP_STUB)
    return target


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Other arguments are passed to pytest.")
    ap.add_argument("--source", type=Path, default=MIRROR,
                    help="confluent-kafka-python git directory (with --tag) or source tree")
    ap.add_argument("--tag", default="v2.15.0")
    ap.add_argument("--bootstrap", help="host:port of a running broker (default: start one; "
                    "it must have user sasl_user/sasl_user for the SASL tests)")
    ap.add_argument("--share", action="store_true", help="also the KIP-932 share tests")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sb-suites")
    ap.add_argument("--timeout", type=int, default=60, help="seconds per test")
    ap.add_argument("--junit", type=Path, help="keep the JUnit XML report here")
    a, pytest_args = ap.parse_known_args()
    work = Path(tempfile.mkdtemp(prefix="confluent-kafka-suite-"))
    src = tests_tree(a.source, a.tag, work)
    target = deps(a.cache, work)
    broker = None
    if a.bootstrap is None:
        broker = BrokerProcess(work / "data", kafka=True, env=BROKER_ENV).start()
        a.bootstrap = broker.kafka_bootstrap
        add_user(management_api(broker), SASL_USER)
    junit = a.junit or work / "junit.xml"
    env = {**os.environ, "BROKERS": a.bootstrap, "PYTHONPATH": os.pathsep.join(
        p for p in (str(work / "stub"), str(target), os.environ.get("PYTHONPATH")) if p)}
    skip = NOT_RUN + (() if a.share else SHARE)
    where = [] if any(x.startswith("tests") for x in pytest_args) else ["tests/integration"]
    cmd = [sys.executable, "-m", "pytest", *where, "-p", "no:cacheprovider",
           *(f"--ignore=tests/integration/{p}" for p in skip),
           "-o", "asyncio_default_fixture_loop_scope=function", "--continue-on-collection-errors",
           f"--timeout={a.timeout}", "--timeout-method=signal", "-q", "-rfEs",
           f"--junitxml={junit}", *pytest_args]
    print(f"confluent-kafka {version('confluent-kafka')} with its {a.tag} suite from {src} "
          f"against {a.bootstrap}:\n  {' '.join(cmd)}", flush=True)
    return run_suite(f"confluent-kafka {a.tag} suite", cmd, src, env, broker, junit)


if __name__ == "__main__":
    sys.exit(main())
