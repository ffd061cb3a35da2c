#!/usr/bin/env python3
"""Run kafka-python's own integration suite (from its PyPI sdist) against smartbroker.

    .venv/bin/python tests/client_suites/run_kafka_python_suite.py            # whole suite
    .venv/bin/python tests/client_suites/run_kafka_python_suite.py -k producer
    .venv/bin/python tests/client_suites/run_kafka_python_suite.py --bootstrap 127.0.0.1:9092

Not a pytest module of ours (the file name keeps it out of collection): it downloads
the sdist of the kafka-python version installed in this interpreter (cached in
``--cache``), unpacks it into a temporary directory and runs ``test/integration`` with
the interpreter's pytest against a smartbroker it starts itself (free ports, temporary
data dir, Kafka listener on), or against ``--bootstrap``.

How the suite is pointed at an existing broker, using only its own switches:

* ``KAFKA_URI=PLAINTEXT://host:port`` makes its ``kafka_broker`` fixture an external
  broker (no JVM is started); ``KAFKA_VERSION`` (default 4.2.0, the sdist's own default)
  sets the ``api_version`` its clients are built with and which version-gated tests run
  (>= 4.0 also means no ZooKeeper); ``KAFKA_ROOT`` must name an existing directory (the
  fixture checks it even when external), so an empty one is given.
* The sdist lacks ``test/service.py`` and ``test/__init__.py``, which the fixtures
  import (``test`` would otherwise resolve to the standard library's package): this
  script writes an ``__init__.py`` and a minimal ``service.py`` of its own whose
  ``ExternalService`` does nothing and whose ``SpawnedService`` refuses to spawn.
* python-snappy, lz4 and zstandard are pip-installed into ``--cache`` and put on the
  suite's PYTHONPATH (``--no-codecs`` skips it, and kafka-python then skips 6 tests).
* The broker it starts has the group settings the suite's own Kafka config has
  (``group.initial.rebalance.delay.ms=0``: ``SMARTBROKER_KAFKA_INITIAL_REBALANCE_DELAY_MS``;
  ``group.min.session.timeout.ms=1000``, which its 3000 ms sessions need:
  ``SMARTBROKER_KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS``) and its partition count for
  auto-created topics (``num.partitions=4``: ``SMARTBROKER_KAFKA_NUM_PARTITIONS``).
* The sdist's pytest options (``--timeout=300 --timeout-method=thread``, DEBUG logging)
  are replaced by ``--timeout`` (default 60 s per test) with the signal method (the
  thread method ends the whole run at the first hung test) and warnings-level logging.

Tests that need what an external broker cannot give (SASL/SSL fixtures that start their
own JVM broker) skip themselves (``KAFKA_URI`` set) or fail at fixture setup; the summary
lists every failure with its first error line. ``--junit`` keeps the full report.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_runs import run_suite  # noqa: E402

from smartbroker.launcher import BrokerProcess  # noqa: E402

CODEC_PACKAGES = ("python-snappy", "lz4", "zstandard")
BROKER_ENV = {"SMARTBROKER_KAFKA_INITIAL_REBALANCE_DELAY_MS": "0",
              "SMARTBROKER_KAFKA_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
              "SMARTBROKER_KAFKA_NUM_PARTITIONS": "4"}
SERVICE_STUB = '''"""Stand-in for kafka-python's test/service.py, absent from its sdist (written by
smartbroker's tests/client_suites/run_kafka_python_suite.py): only external brokers."""


class ExternalService:
    def __init__(self, host, port):
        self.host, self.port = host, port

    def open(self):
        pass

    def close(self):
        pass

    def stop(self):
        pass


class SpawnedService:
    def __init__(self, *args, **kwargs):
        raise RuntimeError("this run uses an external broker (KAFKA_URI); nothing is spawned")
'''


def sdist(cache: Path, ver: str) -> Path:
    """The kafka-python sdist of ``ver``, downloaded once with pip into ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"kafka_python-{ver}.tar.gz"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                        "--no-deps", "-d", str(cache), f"kafka-python=={ver}"], check=True)
        found = sorted(cache.glob(f"kafka_python-{ver}.tar.gz"))
    return found[0]


def codecs(cache: Path) -> Path:
    """python-snappy, lz4 and zstandard, installed once with pip into ``cache/codecs`` and
    put on the suite's PYTHONPATH only: without them kafka-python skips its snappy, lz4
    and zstd tests (the project's own environment does not need them)."""
    target = cache / "codecs"
    if not (target / "zstandard").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(target),
                        *CODEC_PACKAGES], check=True)
    return target


def unpack(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    src = next(into.glob("kafka_python-*"))
    (src / "test" / "__init__.py").touch()
    (src / "test" / "service.py").write_text(SERVICE_STUB)
    return src


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Other arguments are passed to pytest.")
    ap.add_argument("--bootstrap", help="host:port of a running broker (default: start one)")
    ap.add_argument("--kafka-version", default="4.2.0", help="KAFKA_VERSION for the suite")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sb-suites")
    ap.add_argument("--timeout", type=int, default=60, help="seconds per test")
    ap.add_argument("--no-codecs", action="store_true",
                    help="do not install python-snappy/lz4/zstandard for the suite")
    ap.add_argument("--junit", type=Path, help="keep the JUnit XML report here")
    a, pytest_args = ap.parse_known_args()  # the rest goes to pytest (e.g. -k producer)
    ver = version("kafka-python")
    work = Path(tempfile.mkdtemp(prefix="kafka-python-suite-"))
    src = unpack(sdist(a.cache, ver), work)
    (work / "kafka-root").mkdir()
    broker = None
    if a.bootstrap is None:
        # the suite's own broker config (servers/resources/*/kafka.properties) sets
        # group.initial.rebalance.delay.ms=0; its group tests wait 15 s for 4 members
        broker = BrokerProcess(work / "data", kafka=True, env=BROKER_ENV).start()
        a.bootstrap = broker.kafka_bootstrap
    junit = a.junit or work / "junit.xml"
    env = {**os.environ, "KAFKA_URI": f"PLAINTEXT://{a.bootstrap}",
           "KAFKA_VERSION": a.kafka_version, "KAFKA_ROOT": str(work / "kafka-root")}
    if not a.no_codecs:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(codecs(a.cache)), env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "pytest", "test/integration", "-p", "no:cacheprovider",
           "-o", "addopts=", "-o", "log_level=WARNING", f"--timeout={a.timeout}",
           "--timeout-method=signal", "-q", "-rfEs", f"--junitxml={junit}", *pytest_args]
    print(f"kafka-python {ver} suite from {src} against {a.bootstrap}:\n  {' '.join(cmd)}",
          flush=True)
    return run_suite(f"kafka-python {ver}", cmd, src, env, broker, junit)


if __name__ == "__main__":
    sys.exit(main())
