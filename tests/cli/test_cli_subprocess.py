"""The CLI as a real process: `python -m smartbroker ...`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smartbroker", *args], capture_output=True,
                          text=True, env=env, timeout=60)


def test_subprocess_declare_publish_list(api_url: str, broker_url: str, qname: str) -> None:
    env = {**os.environ, "SMARTBROKER_API": api_url, "SMARTBROKER_URL": broker_url}
    assert run("queues", "declare", qname, "--transient", env=env).returncode == 0
    try:
        proc = run("publish", "", qname, "x", "--count", "20", env=env)
        assert proc.returncode == 0, proc.stderr
        def depth() -> list[int | None]:  # RabbitMQ's API reports stats a few seconds late
            rows = json.loads(run("queues", "list", "--json", env=env).stdout)
            return [r.get("messages") for r in rows if r["name"] == qname]

        deadline = time.monotonic() + 15
        while depth() != [20] and time.monotonic() < deadline:
            time.sleep(0.5)
        assert depth() == [20]
    finally:
        run("queues", "delete", qname, env=env)


def test_subprocess_error_is_one_line_no_traceback() -> None:
    env = {**os.environ, "SMARTBROKER_API": "http://guest:guest@127.0.0.1:1"}
    proc = run("status", env=env)
    assert proc.returncode == 1
    assert proc.stderr == "error: cannot reach broker at http://127.0.0.1:1\n"
    assert proc.stdout == ""


def test_version_still_works() -> None:
    proc = run("version", env=dict(os.environ))
    assert proc.returncode == 0 and proc.stdout.strip()
