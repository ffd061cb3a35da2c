"""What the client-suite runners (``run_*_suite.py``) share: users made through the
management API, and one run of a suite's pytest against a broker, reported the same way
(outcome counts and each failure's first line from the JUnit report, and the broker log's
tracebacks). Not a pytest module (the file name keeps it out of collection)."""

from __future__ import annotations

import collections
import json
import ssl
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from base64 import b64encode
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any


def management_api(broker: Any) -> str:
    """The base URL of a ``BrokerProcess``'s management API (https when it has TLS)."""
    scheme = "https" if broker._https else "http"
    return f"{scheme}://127.0.0.1:{broker.management_port}/api"


def add_user(api: str, name: str) -> None:
    """``name`` with password ``name`` and every permission on "/" (as guest, the only
    user a fresh broker has): a suite's SASL and SCRAM user."""
    auth = "Basic " + b64encode(b"guest:guest").decode()
    for path, body in ((f"/users/{name}", {"password": name, "tags": ""}),
                       (f"/permissions/%2F/{name}",
                        {"configure": ".*", "write": ".*", "read": ".*"})):
        req = urllib.request.Request(api + path, method="PUT", data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json",
                                              "authorization": auth})
        urllib.request.urlopen(req, timeout=10, context=ssl._create_unverified_context()).read()


def summarize(junit: Path) -> tuple[collections.Counter, list[tuple[str, str]]]:
    """Outcome counts and (test, first message line) of every failure or error. A test
    run again by pytest-rerunfailures has an empty entry per rerun: its last one counts."""
    outcomes: dict[str, tuple[str, str | None]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}"
        bad = case.find("failure")
        if bad is None:
            bad = case.find("error")
        if bad is not None:
            msg = (bad.get("message") or bad.text or "").strip().splitlines()
            outcomes[name] = (bad.tag, msg[0][:200] if msg else "")
        elif case.find("skipped") is not None:
            outcomes[name] = ("skipped", None)
        else:
            outcomes[name] = ("passed", None)
    counts = collections.Counter(tag for tag, _ in outcomes.values())
    failures = [(name, msg) for name, (_, msg) in outcomes.items() if msg is not None]
    return counts, failures


def run_suite(label: str, cmd: Sequence[str], cwd: Path, env: Mapping[str, str],
              broker: Any, junit: Path, setup: Callable[[], None] | None = None) -> int:
    """Run ``cmd`` (the suite's pytest, writing ``junit``) in ``cwd``; stop ``broker``
    (None: an external one, left alone) even when ``setup`` or the run fails, and say
    whether its log has tracebacks; then print the outcome counts and every failure under
    ``label``. Returns pytest's exit code."""
    try:
        if setup is not None:
            setup()
        rc = subprocess.run(list(cmd), cwd=cwd, env=dict(env)).returncode
    finally:
        if broker is not None:
            broker.stop()
            tracebacks = broker.tracebacks()
            if tracebacks:
                print(f"\nbroker log has {len(tracebacks)} traceback(s): {broker.log_path}")
    if junit.exists():
        counts, failures = summarize(junit)
        print(f"\n{label}: " + ", ".join(f"{n} {k}" for k, n in counts.items()))
        for name, msg in failures:
            print(f"  FAIL {name}: {msg}")
    return rc
