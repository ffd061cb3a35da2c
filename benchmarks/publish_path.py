"""Count the smartbroker functions one publish crosses, on a real broker over a socket.

    .venv/bin/python benchmarks/publish_path.py [--repo DIR] [--confirm]

Starts ``smartbroker serve`` from ``--repo`` (default: this checkout; pass an older
``git worktree`` to compare) under a profiler that SIGUSR1 switches on and SIGUSR2 dumps,
publishes 50 warm-up messages to a queue with a waiting pika consumer, then traces exactly
one 100-byte publish and prints the call tree of the publisher's ``data_received``: calls,
distinct functions and depth. The numbers are the ones docs/architecture.md quotes.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _serve_traced() -> None:
    """The broker side (``--serve-traced``): a profiler over data_received call trees."""
    calls: list[tuple[int, str, str]] = []
    depth = [-1]

    def prof(frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        if event == "call":
            code = frame.f_code
            if depth[0] < 0:
                if code.co_name == "data_received" and "smartbroker" in code.co_filename:
                    depth[0] = 0
                    calls.append((0, code.co_qualname, code.co_filename))
                return
            depth[0] += 1
            if "smartbroker" in code.co_filename:
                calls.append((depth[0], code.co_qualname, code.co_filename))
        elif event == "return" and depth[0] >= 0:
            depth[0] -= 1

    def start(*_: object) -> None:
        calls.clear()
        sys.setprofile(prof)

    def dump(*_: object) -> None:
        sys.setprofile(None)
        Path(os.environ["TRACE_OUT"]).write_text(json.dumps(calls))

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, dump)
    sys.path.insert(0, os.getcwd())
    from smartbroker.cli import app

    sys.argv = ["smartbroker", *sys.argv[2:]]
    app()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pump(conn, got: list[bytes], n: int) -> None:  # noqa: ANN001 - pika connection
    deadline = time.monotonic() + 10
    while len(got) < n:
        if time.monotonic() > deadline:
            raise SystemExit("no delivery within 10 s")
        conn.process_data_events(0.01)


def main() -> None:
    import pika

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", default=str(Path(__file__).resolve().parent.parent))
    parser.add_argument("--confirm", action="store_true", help="publisher confirms on")
    args = parser.parse_args()
    port, mport = _free_port(), _free_port()
    data = tempfile.mkdtemp(prefix="publish-path-")
    out = os.path.join(data, "trace.json")
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve-traced", "serve", "--port", str(port),
         "--management-port", str(mport), "--prometheus-port", "0", "--data-dir", data],
        # Kafka off by env, not flag: an older --repo has no --kafka-port (and ignores it)
        cwd=args.repo, env={**os.environ, "TRACE_OUT": out, "SMARTBROKER_KAFKA_PORT": "0"},
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(data, "log"), "w"))  # noqa: SIM115
    try:
        params = pika.ConnectionParameters("127.0.0.1", port, connection_attempts=50,
                                           retry_delay=0.1)
        pub, sub = pika.BlockingConnection(params), pika.BlockingConnection(params)
        ch, sch = pub.channel(), sub.channel()
        ch.queue_declare("publish-path")
        if args.confirm:
            ch.confirm_delivery()
        got: list[bytes] = []
        sch.basic_consume("publish-path",
                          lambda c, m, p, b: (got.append(b), c.basic_ack(m.delivery_tag)))
        for i in range(50):
            ch.basic_publish("", "publish-path", b"x" * 100)
            _pump(sub, got, i + 1)
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)  # the signal handler runs on the broker's next bytecode
        ch.basic_publish("", "publish-path", b"y" * 100)
        _pump(sub, got, 51)
        proc.send_signal(signal.SIGUSR2)
        while not os.path.exists(out):
            time.sleep(0.05)
        time.sleep(0.2)  # the dump is written in one call
        pub.close()
        sub.close()
    finally:
        proc.terminate()
        proc.wait()
    tree: list[tuple[int, str, str]] = []
    for depth, name, path in json.loads(Path(out).read_text()):
        if depth == 0 and tree:
            break  # the publisher's data_received only, not the consumer's ack
        tree.append((depth, f"{path.split('smartbroker/')[-1]}:{name}", path))
    distinct = list(dict.fromkeys(name for _, name, _ in tree))
    print(f"calls={len(tree)} distinct={len(distinct)} "
          f"max_depth={max(d for d, _, _ in tree) + 1}")
    for depth, name, _ in tree:
        print("  " * depth + name)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-traced":
        _serve_traced()
    else:
        main()
