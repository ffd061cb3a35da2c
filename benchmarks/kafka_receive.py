"""The Kafka listener's receive path alone: CPU seconds to read and decode N MiB of Produce
requests from a socket (issue 14, "a cheaper Kafka receive path").

    .venv/bin/python benchmarks/kafka_receive.py                    # this checkout
    .venv/bin/python benchmarks/kafka_receive.py --tree /tmp/old    # another checkout

A server process (uvloop, as the broker runs) holds one ``KafkaConnection`` of the chosen
checkout behind the same adapter its listener uses (``asyncio.BufferedProtocol`` when the
connection has ``get_buffer``, else ``data_received``; glibc's thresholds as
``kafka/allocator.py`` sets them, where the checkout has it), decodes every request and
answers none; a client sends the same Produce frame (random records, so nothing compresses) over
loopback. The server's process CPU time from its first read to its last request is the
number: the full broker's produce CPU moves with storage and with the neighbours on a
shared machine, this does much less. Prints each run and the median.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
from pathlib import Path

SERVER = r"""
import asyncio, sys, time
import uvloop
from smartbroker.kafka.handlers import SUPPORTED
from smartbroker.kafka.protocol import NEED_DATA, KafkaConnection

try:  # what the listener sets when it starts, where the checkout has it
    from smartbroker.kafka import allocator
    allocator.tune()
except ImportError:
    pass
expected = int(sys.argv[1])

class Base:
    def __init__(self, done):
        self.conn, self.done, self.count, self.t0 = KafkaConnection(SUPPORTED), done, 0, None
    def connection_made(self, transport):
        self.transport = transport
    def connection_lost(self, exc):
        pass
    def serve(self):
        if self.t0 is None:
            self.t0 = time.process_time()
        conn = self.conn
        while (request := conn.next_request()) is not NEED_DATA:
            conn.no_response(request)
            self.count += 1
        if self.count == expected and not self.done.done():
            self.done.set_result(time.process_time() - self.t0)

class Buffered(Base, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint):
        return self.conn.get_buffer(sizehint)
    def buffer_updated(self, n):
        self.conn.buffer_updated(n)
        self.serve()

class Plain(Base, asyncio.Protocol):
    def data_received(self, data):
        self.conn.receive_data(data)
        self.serve()

async def main():
    done = asyncio.get_running_loop().create_future()
    cls = Buffered if hasattr(KafkaConnection, "get_buffer") else Plain
    server = await asyncio.get_running_loop().create_server(lambda: cls(done), "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], cls.__name__, flush=True)
    print(f"{await done:.4f}", flush=True)

uvloop.run(main())
"""


def produce_frame(size: int) -> bytes:
    from kafka.protocol import producer

    P = producer.ProduceRequest
    body = P(version=9, transactional_id=None, acks=-1, timeout_ms=1000, topic_data=[
        P.TopicProduceData(name="t", partition_data=[
            P.TopicProduceData.PartitionProduceData(index=0, records=os.urandom(size))])])
    body.with_header(correlation_id=1, client_id="bench")
    return bytes(body.encode(header=True, framed=True))


def run(tree: Path, frame: bytes, count: int) -> tuple[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(count)], env=env, cwd=tree,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    port, kind = proc.stdout.readline().split()
    with socket.create_connection(("127.0.0.1", int(port))) as sock:
        for _ in range(count):
            sock.sendall(frame)
        cpu = float(proc.stdout.readline())
    proc.wait(timeout=30)
    return kind, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tree", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--mib", type=int, default=200)
    ap.add_argument("--frame-kib", type=int, default=1000, help="librdkafka's batches: ~1 MB")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    frame = produce_frame(args.frame_kib * 1024)
    count = max(1, (args.mib << 20) // len(frame))
    cpus = []
    for rep in range(args.reps):
        kind, cpu = run(args.tree, frame, count)
        cpus.append(cpu)
        print(f"run {rep + 1}: {count} requests of {len(frame) >> 10} KiB ({kind}): "
              f"{cpu:.3f} CPU-s", flush=True)
    print(f"median {statistics.median(cpus):.3f} CPU-s for {count * len(frame) >> 20} MiB")


if __name__ == "__main__":
    main()
