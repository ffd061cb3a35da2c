#!/usr/bin/env python3
"""Run the AMQP client libraries' own suites (pika, py-amqp, kombu, aiormq, aio-pika)
against smartbroker, one suite at a time.

    .venv/bin/python tests/client_suites/run_amqp_suites.py                  # all five
    .venv/bin/python tests/client_suites/run_amqp_suites.py pika aio-pika --workers 2
    .venv/bin/python tests/client_suites/run_amqp_suites.py py-amqp --url amqp://guest:guest@127.0.0.1:5672/
    .venv/bin/python tests/client_suites/run_amqp_suites.py aio-pika -k test_memory_leak

Other arguments go to pytest after the suite's own paths (so select with ``-k``; for
aiormq a ``-k`` replaces the default ``-k "not amqps"``).

Not a pytest module of ours (the file name keeps it out of collection). Each suite runs
in a virtualenv of its own (``--cache``/venv, made once: the clients at the versions of
docs/client-suites.md and their test dependencies) against a smartbroker this script
starts for that suite (free ports, its own data dir; ``--workers N``: ``serve --workers
N``), or against ``--url`` (RabbitMQ, say). Why each suite needs a patch, all using the
suite's own switches where it has them:

* pika 1.3.2: PyPI's sdists have no tests; the tree is ``git archive 1.3.2`` of a pika
  clone (``--pika-git``, default the mirror) or an unpacked Debian
  ``python-pika_1.3.2.orig.tar.gz`` (``--pika-src``). Its acceptance tests hard-code
  port 5672: they read ``PIKA_TEST_PORT`` instead. Run with ``-p no:aiomisc`` (see
  ``suite``), and with tornado, gevent and twisted installed (else 85 adapter tests fail).
* py-amqp 5.4.2 and kombu 5.7.0: ``RABBITMQ_HOST``/``RABBITMQ_5672_TCP``. kombu's durable
  ``priority_requeue_test`` queue fails the next run on any broker: a fresh broker each run.
* aiormq 7.2.4, aio-pika 10.2.1 (building their sdists needs ``uv_build`` on PATH): the
  conftests start RabbitMQ in docker; appended fixtures of the same names
  (``rabbitmq_container``, ``amqp_direct_url``) read ``AMQP_URL`` instead. TLS tests are
  left out (``-k "not amqps"``, ``--ignore=tests/test_amqps.py``); so is aio-pika's
  ``test_robust_recovery.py`` (it restarts the docker container).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from suite_runs import run_suite  # noqa: E402

from smartbroker.launcher import BrokerProcess  # noqa: E402

SDISTS = {"py-amqp": "amqp==5.4.2", "kombu": "kombu==5.7.0", "aiormq": "aiormq==7.2.4",
          "aio-pika": "aio-pika==10.2.1"}
VENV_PACKAGES = ("pika==1.3.2", *SDISTS.values(), "pytest", "pytest-timeout",
                 "aiomisc-pytest>=2,<3", "aiomisc", "markdown-pytest>=0.6.6,<0.7",
                 "pytest-rst", "shortuuid", "timeout-decorator", "pytest-freezer",
                 "pytest-rerunfailures", "hypothesis", "Pyro4", "tornado", "gevent", "twisted")
PIKA_MIRROR = Path("/work/.mirror/pika+pika/repo")
# appended to aiormq's and aio-pika's tests/conftest.py: later definitions win
URL_FIXTURES = '''

# --- appended by smartbroker's tests/client_suites/run_amqp_suites.py: AMQP_URL, no docker
import os as _os
import types as _types
from yarl import URL as _URL


def pytest_configure(config):
    """No docker check: the broker is AMQP_URL."""


@pytest.fixture(scope="session")
def rabbitmq_container():
    url = _URL(_os.environ["AMQP_URL"])
    return _types.SimpleNamespace(host=url.host, ports={"5672/tcp": url.port,
                                                        "5671/tcp": 5671})


@pytest.fixture(scope="session")
def amqp_direct_url():
    return _URL(_os.environ["AMQP_URL"])
'''


def venv(cache: Path) -> Path:
    """The suites' own virtualenv (not the project's), made once; also holds uv_build,
    which the aiormq and aio-pika sdists need on PATH to be downloaded."""
    py = cache / "venv" / "bin" / "python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(cache / "venv")], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", *VENV_PACKAGES], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--only-binary", ":all:",
                        "uv_build"], check=True)
    return py


def sdist_tree(py: Path, spec: str, cache: Path, work: Path) -> Path:
    """The unpacked sdist of ``spec`` (downloaded once into ``cache``)."""
    name, ver = spec.split("==")
    stem = f"{name.replace('-', '_')}-{ver}"
    archive = cache / f"{stem}.tar.gz"
    if not archive.exists():
        env = {**os.environ, "PATH": f"{py.parent}{os.pathsep}{os.environ['PATH']}"}
        subprocess.run([str(py), "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", "--no-build-isolation", "-d", str(cache), spec],
                       check=True, env=env)
    with tarfile.open(archive) as tar:
        tar.extractall(work, filter="data")
    return work / stem


def pika_tree(a: argparse.Namespace, work: Path) -> Path:
    """pika 1.3.2's source tree with its tests, the port read from PIKA_TEST_PORT."""
    if a.pika_src:
        src = a.pika_src
    else:
        src = work / "pika-1.3.2"
        archive = subprocess.run(["git", "-C", str(a.pika_git), "archive",
                                  "--prefix=pika-1.3.2/", "1.3.2"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "x", "-C", str(work)], input=archive, check=True)
    port = "int(__import__('os').environ.get('PIKA_TEST_PORT', 5672))"
    for rel, old in (("tests/acceptance/blocking_adapter_test.py", "{'port': 5672}"),
                     ("tests/base/async_test_base.py", "port=5672")):
        path = src / rel
        text = path.read_text()
        new = old.replace("5672", port)
        if old in text:
            path.write_text(text.replace(old, new))
    return src


def suite(name: str, a: argparse.Namespace, py: Path, work: Path, url: str,
          junit: Path) -> tuple[list[str], Path, dict[str, str]]:
    """The command, directory and environment of one suite's run against ``url``."""
    parts = urlsplit(url)
    env = {**os.environ, "AMQP_URL": url, "PIKA_TEST_PORT": str(parts.port),
           "RABBITMQ_HOST": parts.hostname or "127.0.0.1",
           "RABBITMQ_5672_TCP": str(parts.port)}
    env.pop("PYTHONPATH", None)
    common = [str(py), "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rfE",
              f"--junitxml={junit}"]
    if name == "pika":
        src = pika_tree(a, work)
        # aiomisc-pytest (the aio suites' plugin, in the same venv) installs a SIGTERM
        # handler that pika's forked ForwardServer inherits: it then outlives stop()
        return [*common, "-p", "no:aiomisc", "--timeout=60",
                "tests/acceptance/blocking_adapter_test.py",
                "tests/acceptance/async_adapter_tests.py",
                "tests/acceptance/enforce_one_basicget_test.py"], src, env
    src = sdist_tree(py, SDISTS[name], a.cache, work)
    if name == "py-amqp":
        return [*common, "--timeout=60", "t/integration"], src, env
    if name == "kombu":
        return [*common, "--timeout=60", "t/integration/test_py_amqp.py"], src, env
    with open(src / "tests" / "conftest.py", "a") as f:
        f.write(URL_FIXTURES)
    if name == "aiormq":
        return [*common, "--timeout=60", "tests", "README.md", "-k", "not amqps"], src, env
    return [*common, "--timeout=90", "tests", "--ignore=tests/test_robust_recovery.py",
            "--ignore=tests/test_amqps.py"], src, env


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 epilog="Other arguments are passed to pytest.")
    ap.add_argument("suites", nargs="*", default=["pika", "py-amqp", "kombu", "aiormq",
                                                  "aio-pika"])
    ap.add_argument("--url", help="amqp URL of a running broker (default: start one)")
    ap.add_argument("--workers", type=int, help="start `serve --workers N` instead")
    ap.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "sb-suites")
    ap.add_argument("--pika-git", type=Path, default=PIKA_MIRROR)
    ap.add_argument("--pika-src", type=Path, help="an unpacked pika 1.3.2 source tree")
    a, pytest_args = ap.parse_known_args()
    a.cache.mkdir(parents=True, exist_ok=True)
    py = venv(a.cache)
    worst = 0
    for name in a.suites:
        work = Path(tempfile.mkdtemp(prefix=f"{name}-suite-"))
        broker, url = None, a.url
        if url is None:
            extra = ["--workers", str(a.workers)] if a.workers else []
            broker = BrokerProcess(work / "data", extra_args=extra).start()
            url = broker.url
        junit = work / "junit.xml"
        cmd, src, env = suite(name, a, py, work, url, junit)
        cmd += pytest_args
        print(f"{name} from {src} against {url}:\n  {' '.join(cmd)}", flush=True)
        worst = max(worst, run_suite(name, cmd, src, env, broker, junit))
    return worst


if __name__ == "__main__":
    sys.exit(main())
