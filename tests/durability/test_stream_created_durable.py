"""A new stream's files (``meta.json``: the topic id; ``partitioner``; ``name``) are fsynced
before the declare is answered, over AMQP (queue.declare-ok) and Kafka (CreateTopics), so
a client told "created" cannot lose the topic id or the partitioner choice to a power cut.

The disk is made slow on purpose: the broker runs in this process (``serve()`` on free
loopback ports, real pika and confluent-kafka clients over sockets) with the fsync of the
store's path rounds (store/pathsync.py) held at a gate. While a new stream's ``meta.json``
waits there, no answer may arrive; once it is through, the answer comes. Meanwhile the
broker keeps serving other clients: the wait is off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pika
import pytest

from smartbroker.config import Config
from smartbroker.launcher import free_port
from smartbroker.server.app import serve
from smartbroker.store import pathsync

STREAM = {"x-queue-type": "stream"}
NO_ANSWER = 1.0  # how long "no answer yet" is watched for (a negative needs a bound)


class SlowDisk:
    """Holds every fsync round that covers a ``meta.json`` until ``release()``."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.reached = threading.Event()  # a meta.json fsync is waiting at the gate
        self.synced: list[str] = []
        self.real = pathsync.fsync_paths

    def fsync_paths(self, paths: Any) -> None:
        paths = [str(p) for p in paths]
        if any(p.endswith("meta.json") for p in paths):
            self.reached.set()
            self.gate.wait(30)
        self.real(paths)
        self.synced += paths

    def release(self) -> None:
        self.gate.set()

    def hold(self) -> None:
        self.gate.clear()
        self.reached.clear()


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowDisk]:
    disk = SlowDisk()
    monkeypatch.setattr(pathsync, "fsync_paths", disk.fsync_paths)
    yield disk
    disk.release()


def run_broker(tmp_path: Path, scenario: Callable[[Config], Any]) -> None:
    """``scenario(config)`` in a thread while the broker serves in this thread's loop."""
    config = Config(data_dir=tmp_path, host="127.0.0.1", port=free_port(),
                    management_port=free_port(), prometheus_port=0, kafka_port=free_port())

    async def main() -> None:
        started = asyncio.Event()
        broker = asyncio.create_task(serve(config, started))
        waiting = asyncio.create_task(started.wait())
        await asyncio.wait({broker, waiting}, return_when=asyncio.FIRST_COMPLETED)
        if broker.done():
            broker.result()  # startup failed: raise it
        try:
            await asyncio.to_thread(scenario, config)
        finally:
            broker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await broker

    asyncio.run(main())


def meta_of(tmp_path: Path, name: str) -> str:
    for directory in (tmp_path / "streams").iterdir():
        if (directory / "name").read_text().splitlines()[1:2] == [name]:
            return str(directory / "meta.json")
    raise LookupError(name)


def in_thread(work: Callable[[], Any]) -> tuple[threading.Event, list[Any]]:
    done, out = threading.Event(), []

    def run() -> None:
        try:
            out.append(work())
        except Exception as exc:  # shown by the assertion that reads ``out``
            out.append(exc)
        finally:
            done.set()

    threading.Thread(target=run, daemon=True).start()
    return done, out


def test_queue_declare_ok_waits_for_the_new_streams_fsync(tmp_path: Path,
                                                          slow_disk: SlowDisk) -> None:
    def scenario(config: Config) -> None:
        params = pika.ConnectionParameters("127.0.0.1", config.port, blocked_connection_timeout=30)
        conn = pika.BlockingConnection(params)
        other = pika.BlockingConnection(params)
        try:
            ch = conn.channel()
            done, out = in_thread(lambda: ch.queue_declare(
                "durable-s", durable=True, arguments=STREAM))
            assert slow_disk.reached.wait(15), "the new stream's files were never fsynced"
            assert not done.wait(NO_ANSWER), "declare-ok came before meta.json was fsynced"
            # the loop is free meanwhile: another client declares a classic queue
            other.channel().queue_declare("classic-meanwhile", durable=True)
            slow_disk.release()
            assert done.wait(15) and not isinstance(out[0], Exception), out
            assert meta_of(tmp_path, "durable-s") in slow_disk.synced
            # the connection carries on: a publish and a redeclare on the same channel
            ch.basic_publish("", "durable-s", b"after")
            assert ch.queue_declare("durable-s", durable=True, arguments=STREAM,
                                    passive=True).method.message_count >= 0
        finally:
            other.close()
            conn.close()

    run_broker(tmp_path, scenario)


def test_create_topics_waits_for_the_new_streams_fsync(tmp_path: Path,
                                                       slow_disk: SlowDisk) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    def scenario(config: Config) -> None:
        admin = AdminClient({"bootstrap.servers": f"127.0.0.1:{config.kafka_port}"})
        futures = admin.create_topics([NewTopic("durable-t", 2)], request_timeout=30)
        assert slow_disk.reached.wait(15), "the new topic's files were never fsynced"
        assert not futures["durable-t"].done() and not _done_within(futures["durable-t"]), \
            "CreateTopics answered before meta.json was fsynced"
        # served meanwhile (another connection: one connection's answers come in order)
        other = AdminClient({"bootstrap.servers": f"127.0.0.1:{config.kafka_port}"})
        metadata = other.list_topics(timeout=10)
        assert "durable-t" in metadata.topics
        slow_disk.release()
        futures["durable-t"].result(timeout=15)
        assert meta_of(tmp_path, "durable-t") in slow_disk.synced

    run_broker(tmp_path, scenario)


def _done_within(future: Any) -> bool:
    with contextlib.suppress(Exception):
        future.result(timeout=NO_ANSWER)
        return True
    return future.done()


def test_a_produce_that_auto_creates_its_topic_waits_for_the_fsync(
        tmp_path: Path, slow_disk: SlowDisk) -> None:
    """Auto-creation (kafka_auto_create_topics): the first acks=all Produce to a new topic
    is acknowledged once the topic's files are durable, not only its records."""
    from confluent_kafka import Producer

    def scenario(config: Config) -> None:
        producer = Producer({"bootstrap.servers": f"127.0.0.1:{config.kafka_port}",
                             "acks": "all"})
        delivered: list[Any] = []
        producer.produce("auto-t", b"first", on_delivery=lambda err, msg: delivered.append(err))
        assert slow_disk.reached.wait(15), "the new topic's files were never fsynced"
        producer.poll(NO_ANSWER)
        assert delivered == [], "acknowledged before the new topic's meta.json was fsynced"
        slow_disk.release()
        assert producer.flush(15) == 0 and delivered == [None], delivered
        assert meta_of(tmp_path, "auto-t") in slow_disk.synced

    run_broker(tmp_path, scenario)
