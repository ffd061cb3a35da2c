"""The load scenarios run.py measures: A-F and the scale sweep, and the queue and
exchange names each one uses on the broker (so a failed run can clean them up)."""

from __future__ import annotations

from dataclasses import dataclass, field

PREFIX = "sbbench"


@dataclass
class Scenario:
    key: str
    title: str
    args: list[str]
    throughput: bool = True  # closed loop + consumer coalescing
    exchange: str | None = None  # exchange type when publishing through an exchange
    show_latency: bool = False  # latency is meaningful (not just backlog / rate)
    extra: dict = field(default_factory=dict)


def standard_scenarios() -> list[Scenario]:
    kib = ["-s", "1024", "--prefetch", "100"]
    return [
        Scenario("A", "1 pub -> 1 queue -> 1 con, 16 B, transient, auto-ack",
                 ["-p", "1", "-c", "1", "-s", "16", "--auto-ack"]),
        Scenario("B", "1 pub -> 1 queue -> 1 con, 1 KiB, manual ack, prefetch 100",
                 ["-p", "1", "-c", "1", *kib]),
        Scenario("C", "persistent, durable queue, confirms (window 100), 1 KiB, manual ack",
                 ["-p", "1", "-c", "1", *kib, "--durable", "--persistent", "--confirm", "100"],
                 show_latency=True),
        Scenario("D", "fanout -> 4 queues -> 4 cons, 256 B, manual ack, prefetch 100",
                 ["-p", "1", "-c", "4", "-s", "256", "--prefetch", "100", "--queues", "4"],
                 exchange="fanout"),
        Scenario("E", "latency: 1 KiB at a fixed 1000 msg/s, manual ack, prefetch 100",
                 ["-p", "1", "-c", "1", *kib, "-r", "1000"], throughput=False,
                 show_latency=True),
        Scenario("F", "4 pubs + 4 cons on 4 queues (pub i -> queue i -> con i), 1 KiB",
                 ["-p", "4", "-c", "4", *kib, "--queues", "4"]),
    ]


STREAM = ["--durable", "--queue-arg", "x-queue-type=stream",
          "--consumer-arg", "x-stream-offset=first"]


def stream_scenarios() -> list[Scenario]:
    """Issue 14's streams over AMQP (``run.py --streams``): a stream queue read from
    ``first`` with prefetch 1000 (credit), and B's shape on a stream for the
    classic-vs-stream cost per delivery. Every consumer of a stream gets every message,
    so S4 counts four deliveries per publish (the closed loop keeps all four readers live)."""
    s = [*STREAM, "--prefetch", "1000"]
    return [
        # S1 as the issue and ../shared/bench/README.md's stream command give it (no
        # --persistent: RabbitMQ's streams store and confirm every message the same way);
        # S1p with persistent messages, which smartbroker fsyncs before confirming
        Scenario("S1", "stream, 1 KiB, confirms (window 100), prefetch 1000",
                 ["-p", "1", "-c", "1", "-s", "1024", "--confirm", "100", *s],
                 show_latency=True),
        Scenario("S1p", "stream, 1 KiB, persistent, confirms (window 100), prefetch 1000",
                 ["-p", "1", "-c", "1", "-s", "1024", "--persistent", "--confirm", "100", *s],
                 show_latency=True),
        Scenario("S2", "stream, 128 B, no confirms, prefetch 1000",
                 ["-p", "1", "-c", "1", "-s", "128", *s]),
        Scenario("S4", "stream, four readers from first, 1 KiB, prefetch 1000",
                 ["-p", "1", "-c", "4", "-s", "1024", *s]),
        Scenario("SB", "B's shape on a stream: 1 KiB, manual ack, prefetch 100",
                 ["-p", "1", "-c", "1", "-s", "1024", "--prefetch", "100", *STREAM]),
    ]


def sweep_scenarios() -> list[Scenario]:
    out = []
    small = ["-s", "256", "--prefetch", "100"]
    for q in (1, 10, 100, 1000):
        out.append(Scenario(f"q{q}", f"{q} queue(s), 2 pubs + 2 cons spread over them, 256 B",
                            ["-p", "2", "-c", "2", "--queues", str(q), *small]))
    for k in (1, 10, 100):
        out.append(Scenario(f"conn{k}", f"{k} pub + {k} con connections on {k} queue(s), 256 B",
                            ["-p", str(k), "-c", str(k), "--queues", str(k), *small]))
    out.append(Scenario("topic10k", "topic exchange, 10,000 bindings over 100 queues, "
                        "each message matches one binding, 1 pub + 2 cons, 256 B",
                        ["-p", "1", "-c", "2", "--queues", "100", "--bindings", "10000", *small],
                        exchange="topic"))
    return out


def names_for(s: Scenario) -> list[str]:
    out = ["--queue", f"{PREFIX}-{s.key}"]
    if s.exchange:
        out += ["--exchange", f"{PREFIX}-{s.key}-x", "--exchange-type", s.exchange]
    return out
