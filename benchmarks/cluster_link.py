"""Messages per second, and CPU per message, through the cluster link on loopback.

Node b (a subprocess) accepts the link and counts what arrives on a publish-shaped channel
(sequence number, flags | exchange, routing key, property bytes, body); node a (this
process) sends for ``--seconds``, ``--per-pass`` items per loop pass (what one read of
client publishes would forward), honouring the link's credit. Both sides report their CPU
time, so the cost of forwarding per message is seen on each end.

    .venv/bin/python benchmarks/cluster_link.py                      # 5 s, 100-byte bodies
    .venv/bin/python benchmarks/cluster_link.py --seconds 2 --size 1000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from smartbroker.cluster.link import ClusterLink
from smartbroker.cluster.link_codec import ChannelSpec

PUBLISH = ChannelSpec(1, "publish", "QB", 4)
SECRET = b"benchmark-secret"
PROPERTIES = b"\x90\x00\x0atext/plain\x02"  # content-type and delivery-mode, as AMQP encodes

RECEIVER = """
import asyncio, json, sys, time
sys.path.insert(0, {here!r})
from cluster_link import PUBLISH, SECRET
from smartbroker.cluster.link import ClusterLink

async def main():
    try:
        import uvloop; uvloop.install()
    except ImportError:
        pass
    link = await ClusterLink("b", "c", SECRET).start()
    count = [0]
    link.on_messages(PUBLISH, lambda peer, items: count.__setitem__(0, count[0] + len(items)))
    link.on_call("stats", lambda peer, payload: json.dumps(
        {{"count": count[0], "cpu": time.process_time()}}).encode())
    print(link.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def send(port: int, seconds: float, size: int, per_pass: int) -> dict:
    link = await ClusterLink("a", "c", SECRET).start()
    link.add_peer("b", "127.0.0.1", port)
    await link.wait_connected("b")
    body = b"x" * size
    start_stats = json.loads(await link.call("b", "stats"))
    cpu0, t0, writes0 = time.process_time(), time.perf_counter(), link.writes
    seq = 0
    deadline = t0 + seconds
    while time.perf_counter() < deadline:
        for _ in range(per_pass):
            seq += 1
            if not link.send("b", PUBLISH, (seq, 0, "amq.direct", "rk", PROPERTIES, body)):
                await link.wait_writable("b", PUBLISH)
        await asyncio.sleep(0)
    while True:  # until b has everything (a call after the sends arrives after them)
        stats = json.loads(await link.call("b", "stats"))
        if stats["count"] - start_stats["count"] >= seq:
            break
    elapsed = time.perf_counter() - t0
    result = {
        "messages": seq, "seconds": round(elapsed, 3), "body_bytes": size,
        "msg_per_s": round(seq / elapsed),
        "sender_cpu_us_per_msg": round((time.process_time() - cpu0) / seq * 1e6, 2),
        "receiver_cpu_us_per_msg": round((stats["cpu"] - start_stats["cpu"]) / seq * 1e6, 2),
        "writes": link.writes - writes0,
    }
    await link.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=100, help="body bytes")
    parser.add_argument("--per-pass", type=int, default=500, help="sends per loop pass")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    here = str(Path(__file__).resolve().parent)
    proc = subprocess.Popen([sys.executable, "-c", RECEIVER.format(here=here)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        try:
            import uvloop
            uvloop.install()
        except ImportError:
            pass
        result = asyncio.run(send(port, args.seconds, args.size, args.per_pass))
    finally:
        proc.kill()
        proc.wait()
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['msg_per_s']:,} msg/s through the link ({result['body_bytes']}-byte "
              f"bodies, {result['messages']:,} in {result['seconds']} s, "
              f"{result['writes']:,} writes); CPU per message: sender "
              f"{result['sender_cpu_us_per_msg']} us, receiver "
              f"{result['receiver_cpu_us_per_msg']} us")


if __name__ == "__main__":
    main()
