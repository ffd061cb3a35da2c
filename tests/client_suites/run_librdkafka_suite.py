#!/usr/bin/env python3
"""Run librdkafka's own integration tests (tests/0xxx-*.c, ``test-runner``) against smartbroker.

    .venv/bin/python tests/client_suites/run_librdkafka_suite.py --source /tmp/librdkafka
    .venv/bin/python tests/client_suites/run_librdkafka_suite.py --tests 0001-0050,0056
    LIBRDKAFKA_SRC=/tmp/librdkafka .venv/bin/python tests/client_suites/run_librdkafka_suite.py \
        --bootstrap 127.0.0.1:9092 --tests 0012

Not a pytest module of ours (the file name keeps it out of collection), nor part of
``make test``: it needs a librdkafka source tree and takes long. Get one and build it:

    git --git-dir=<librdkafka git dir> archive v2.x.y | tar -x -C /tmp/librdkafka
    cd /tmp/librdkafka && ./configure --disable-ssl --disable-gssapi --disable-zstd \
        --disable-curl && nice make -j2 libs && nice make -C tests -j2 test-runner

(``--build`` runs those two ``make`` steps when ``tests/test-runner`` is missing.)

What it does, with only the suite's own switches: starts a smartbroker (free ports,
temporary data dir, Kafka listener on, ``SMARTBROKER_KAFKA_INITIAL_REBALANCE_DELAY_MS``
low, as test clusters set ``group.initial.rebalance.delay.ms``, and
``SMARTBROKER_KAFKA_NUM_PARTITIONS=4``, the suite's clusters' ``num.partitions``) unless ``--bootstrap``
names one, writes a ``test.conf`` (``bootstrap.servers``, a timeout multiplier) given to
the runner by ``RDKAFKA_TEST_CONF``, and runs each selected test number as its own
``test-runner -L`` process (``TESTS=0nnn``; ``-L`` leaves out the broker-less mock
tests, which do not talk to us; not ``-Q``, the quick mode that skips most sub-tests) with
``TEST_KAFKA_VERSION`` (default 3.4.0, the suite Makefile's "latest") so that version-gated
tests are chosen as for a Kafka 3.x broker, and a wall-clock timeout per test. A broker
that died is restarted before the next test and reported. The summary lists every test
entry (one number may hold several, e.g. 0045) as passed, failed (with the first failure
line), skipped (with the suite's reason), timed out, or excluded (``EXCLUDED`` below).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from smartbroker.launcher import BrokerProcess  # noqa: E402

# Test numbers left out, and why: what a single smartbroker node cannot be, or tooling
# the tests shell out to. (Broker-less tests are left out by ``-L`` and share-group
# tests by TEST_KAFKA_VERSION < 4.2; they need no entry here.)
EXCLUDED: dict[str, str] = {
    "0038": "performance run (millions of messages), not a conformance test",
    "0047": "known issue in librdkafka's own list (TEST_F_KNOWN_ISSUE)",
    "0052": "creates topics with kafka-topics.sh (--config message.timestamp.type)",
    "0064": "sets security.protocol=ssl: needs a librdkafka built with OpenSSL",
    "0077": "creates compacted topics with kafka-topics.sh (--config cleanup.policy ...)",
    "0079": "fork() test of the client library, broker-independent",
    "0097": "SSL listener with the suite's certificates (ssl.* in test.conf)",
    "0101": "fetch from follower: needs racks and replicas on several brokers",
    "0103": "creates its topics with replication factor 3 (a 3-broker cluster)",
    "0107": "noautocreate scenario: creates its topics with replication factor 3",
    "0109": "denies access with kafka-acls.sh before auto-creating",
    "0111": "noautocreate scenario: creates its topics with replication factor 3",
    "0115": "ACLs set with kafka-acls.sh on a SASL cluster",
    "0119": "ACLs set with kafka-acls.sh on a SASL cluster",
    "0126": "OAUTHBEARER/OIDC token endpoint",
    "0135": "SASL credentials of the suite's SASL cluster",
    "0142": "SASL re-authentication (connections.max.reauth.ms) on the suite's SASL cluster",
}

DEFAULT_TESTS = "0001-0140"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
SUMMARY_ROW = re.compile(r"^\|\s*(\d{4}_\S+)\s*\|\s*(PASSED|FAILED|SKIPPED|RUNNING)\s*\|"
                         r"\s*([\d.]+)s\s*\|(.*)$")
LOCAL_ONLY = "Filtered due to negative test flags"
FAIL_HEAD = re.compile(r'^### Test "(\d{4}_[^"]+)" failed at (.*?): ###')


@dataclass
class Entry:
    """One test entry's outcome (``name`` as the runner's summary names it)."""

    name: str
    status: str  # PASSED, FAILED, SKIPPED, LOCAL, TIMEOUT, EXCLUDED, CRASHED
    seconds: float = 0.0
    reason: str = ""


@dataclass
class Run:
    entries: list[Entry] = field(default_factory=list)
    broker_restarts: list[str] = field(default_factory=list)
    log_errors: int = 0


def parse_numbers(spec: str) -> list[str]:
    """``0001-0050,0056`` -> ['0001', ..., '0050', '0056']."""
    out: list[str] = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        lo, _, hi = part.partition("-")
        out.extend(f"{n:04d}" for n in range(int(lo), int(hi or lo) + 1))
    return out


def known_numbers(tests_dir: Path) -> set[str]:
    """Test numbers that have a source file (the range may name numbers that do not)."""
    return {p.name[:4] for p in tests_dir.glob("0[0-9][0-9][0-9]-*.c*")}


def parse_output(number: str, text: str) -> list[Entry]:
    """The runner's summary rows for ``number``, with failure and skip reasons."""
    text = ANSI.sub("", text)
    lines = text.splitlines()
    reasons: dict[str, str] = {}
    for i, line in enumerate(lines):
        head = FAIL_HEAD.search(line)
        if head and head.group(1) not in reasons:
            detail = lines[i + 1].strip() if i + 1 < len(lines) else ""
            reasons[head.group(1)] = f"{detail} ({head.group(2)})"
    entries = []
    for line in lines:
        row = SUMMARY_ROW.match(line.strip())
        if row and row.group(1).startswith(number):
            name, status, secs, rest = row.groups()
            reason = reasons.get(name, "") if status == "FAILED" else rest.strip(" |")
            if status == "SKIPPED" and LOCAL_ONLY in reason:
                status, reason = "LOCAL", "broker-less test, left out by -L"
            elif status == "SKIPPED" and not reason:
                reason = "another scenario's test (--scenario)"
            entries.append(Entry(name, status, float(secs), reason))
    if not entries:  # a failed test aborts the runner before its summary
        entries = [Entry(name, "FAILED", 0.0, reason) for name, reason in reasons.items()]
    return entries


def first_failure(text: str) -> str:
    """A reason when the runner died before its summary (abort, assertion)."""
    text = ANSI.sub("", text)
    for pattern in (r"### Test .*?###\n(.*)", r"(Assertion .*)", r"(Segmentation fault.*)"):
        found = re.search(pattern, text)
        if found:
            return found.group(1).strip()
    return text.strip().splitlines()[-1] if text.strip() else "no output"


def run_one(runner: Path, number: str, conf: Path, args: argparse.Namespace,
            log_dir: Path) -> list[Entry]:
    env = {**os.environ, "TESTS": number, "RDKAFKA_TEST_CONF": str(conf),
           "TEST_KAFKA_VERSION": args.kafka_version,
           "LD_LIBRARY_PATH": f"{runner.parent.parent / 'src'}:{runner.parent.parent / 'src-cpp'}",
           "RDKAFKA_GITVER": "smartbroker-run"}
    env.pop("CI", None)
    cmd = ["nice", "-n", str(args.nice), str(runner), "-L", "-s", args.scenario,
           *args.runner_args.split()]
    started = time.monotonic()
    log = log_dir / f"{number}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=runner.parent, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
            code = None
    text = log.read_text(errors="replace")
    elapsed = time.monotonic() - started
    entries = parse_output(number, text)
    if code is None:
        done = {e.name for e in entries if e.status in ("PASSED", "SKIPPED")}
        return [e for e in entries if e.name in done] + [
            Entry(number, "TIMEOUT", elapsed, f"no result within {args.timeout}s (log {log})")]
    if not entries:
        return [Entry(number, "CRASHED", elapsed, f"exit {code}: {first_failure(text)}")]
    return entries


@contextlib.contextmanager
def broker(args: argparse.Namespace, tmp: Path) -> Iterator[BrokerProcess | None]:
    if args.bootstrap:
        yield None
        return
    env = {"SMARTBROKER_KAFKA_INITIAL_REBALANCE_DELAY_MS": str(args.rebalance_delay_ms),
           "SMARTBROKER_KAFKA_NUM_PARTITIONS": str(args.num_partitions),
           "SMARTBROKER_KAFKA_AUTO_CREATE_TOPICS": str(args.scenario != "noautocreate").lower()}
    proc = BrokerProcess(tmp / "data", kafka=True, env=env, log_path=tmp / "broker.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def ensure_built(source: Path, build: bool) -> Path:
    runner = source / "tests" / "test-runner"
    if runner.exists():
        return runner
    if not build:
        sys.exit(f"{runner} is missing: build it (see --help) or pass --build")
    for target in (["-C", str(source), "libs"], ["-C", str(source / "tests"), "test-runner"]):
        subprocess.run(["nice", "-n", "10", "make", "-j2", *target], check=True)
    return runner


def write_conf(path: Path, bootstrap: str, multiplier: float) -> None:
    path.write_text(f"bootstrap.servers={bootstrap}\n"
                    f"test.timeout.multiplier={multiplier}\n"
                    "test.topic.random=true\n")


def report(run: Run, out: Path | None) -> int:
    counts: dict[str, int] = {}
    for e in run.entries:
        counts[e.status] = counts.get(e.status, 0) + 1
    width = max((len(e.name) for e in run.entries), default=10)
    for e in run.entries:
        print(f"{e.name:<{width}}  {e.status:<8} {e.seconds:7.1f}s  {e.reason}")
    print("\n" + ", ".join(f"{n} {s.lower()}" for s, n in sorted(counts.items())))
    if run.log_errors:
        print(f"broker log: {run.log_errors} ERROR/Traceback line(s)")
    for note in run.broker_restarts:
        print(f"broker restarted: {note}")
    if out:
        out.write_text(json.dumps({"counts": counts, "restarts": run.broker_restarts,
                                   "log_errors": run.log_errors,
                                   "entries": [e.__dict__ for e in run.entries]}, indent=1))
    bad = sum(counts.get(s, 0) for s in ("FAILED", "TIMEOUT", "CRASHED"))
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--source", type=Path, default=os.environ.get("LIBRDKAFKA_SRC"),
                    help="librdkafka source tree (default $LIBRDKAFKA_SRC)")
    ap.add_argument("--tests", default=DEFAULT_TESTS, help="numbers and ranges: 0001-0050,0056")
    ap.add_argument("--timeout", type=float, default=900.0,
                    help="seconds per test number (0113 takes about 9 minutes here)")
    ap.add_argument("--bootstrap", help="an already running broker's Kafka host:port")
    ap.add_argument("--kafka-version", default="3.4.0", help="TEST_KAFKA_VERSION")
    ap.add_argument("--runner-args", default="",
                    help="extra test-runner flags (-Q: quick mode, which skips most sub-tests)")
    ap.add_argument("--timeout-multiplier", type=float, default=2.0,
                    help="test.timeout.multiplier in test.conf (a shared, slow machine)")
    ap.add_argument("--scenario", default="default", choices=("default", "noautocreate"),
                    help="the suite's scenario; noautocreate starts the broker with "
                         "auto-creation off and runs the tests made for it")
    ap.add_argument("--rebalance-delay-ms", type=int, default=100)
    ap.add_argument("--num-partitions", type=int, default=4,
                    help="num.partitions of auto-created topics (the suite's clusters: 4)")
    ap.add_argument("--no-exclude", action="store_true", help="run the EXCLUDED tests too")
    ap.add_argument("--build", action="store_true", help="make libs and test-runner if missing")
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--keep", action="store_true", help="keep the logs and data directory")
    args = ap.parse_args()
    if args.source is None:
        ap.error("--source or LIBRDKAFKA_SRC is required")
    runner = ensure_built(args.source.resolve(), args.build)
    numbers = [n for n in parse_numbers(args.tests) if n in known_numbers(runner.parent)]
    tmp = Path(tempfile.mkdtemp(prefix="librdkafka-suite-"))
    run = Run()
    with broker(args, tmp) as proc:
        bootstrap = args.bootstrap or (proc.kafka_bootstrap if proc else "")
        conf = tmp / "test.conf"
        write_conf(conf, bootstrap, args.timeout_multiplier)
        print(f"librdkafka tests {args.tests} against {bootstrap}; logs in {tmp}", flush=True)
        for number in numbers:
            if number in EXCLUDED and not args.no_exclude:
                run.entries.append(Entry(number, "EXCLUDED", 0.0, EXCLUDED[number]))
                continue
            entries = run_one(runner, number, conf, args, tmp)
            run.entries.extend(entries)
            for e in entries:
                print(f"{e.name}: {e.status} {e.seconds:.1f}s {e.reason}", flush=True)
            if proc is not None and not proc.alive():
                run.broker_restarts.append(f"after {number}")
                proc.start()
                write_conf(conf, proc.kafka_bootstrap, args.timeout_multiplier)
    broker_log = tmp / "broker.log"
    if broker_log.exists():
        run.log_errors = sum(1 for line in broker_log.read_text(errors="replace").splitlines()
                             if " ERROR " in line or line.startswith("Traceback"))
    code = report(run, args.json)
    if args.keep or code:
        print(f"logs kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
