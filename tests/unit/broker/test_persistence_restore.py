"""A broker built with persistence restores itself in its constructor: what was declared
before a restart is back, and reading it back writes nothing to the definitions store."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from pamqp import commands

from smartbroker.broker.core import Broker
from smartbroker.broker.idempotence import ProducerRegistry
from smartbroker.broker.permissions import Permission, TopicPermission
from smartbroker.broker.persistence import Persistence
from smartbroker.broker.policies import Policy
from smartbroker.config import Config
from smartbroker.message import Message


def changes(persistence: Persistence) -> int:
    """Rows written (inserted, replaced, deleted) through the definitions store's connection."""
    return persistence.definitions._db.total_changes


def run_broker(data_dir: Path, work=None) -> tuple[int, int]:
    """Build a broker on ``data_dir``, run ``work(broker)``, close it. Returns the rows the
    constructor (restore) wrote and those ``work`` wrote."""

    async def lifecycle() -> tuple[int, int]:
        persistence = Persistence(data_dir, "never")
        before = changes(persistence)
        broker = Broker(Config(data_dir=data_dir), persistence)
        restored = changes(persistence) - before
        if work is not None:
            await work(broker)
        written = changes(persistence) - before - restored
        await persistence.aclose(broker)
        return restored, written

    return asyncio.run(lifecycle())


async def declare_everything(broker: Broker) -> None:
    broker.add_vhost("other")
    broker.set_limit("vhost", "other", "max-queues", 5)
    broker.users.add("alice", "secret", ["monitoring"])
    broker.set_limit("user", "alice", "max-connections", 3)
    broker.permissions.set(Permission("alice", "other", "^a", "^b", "^c"))
    broker.permissions.set_topic(TopicPermission("alice", "other", "amq.topic", "^w", "^r"))
    vhost = broker.vhosts["other"]
    vhost.set_policy(Policy("ttl", "^q", {"message-ttl": 60000}, vhost="other"))
    vhost.declare_exchange("ex", "topic", durable=True)
    q, _ = vhost.declare_queue("q1", durable=True)
    vhost.declare_queue("transient", durable=False)
    vhost.bind("ex", q, "k.#", {})
    persistent = commands.Basic.Properties(delivery_mode=2)
    vhost.publish(Message.build("ex", "k.1", b"kept", persistent))
    broker.producers.accepted("other", "p1", 7)


def test_first_start_records_the_defaults(tmp_path: Path):
    restored, _ = run_broker(tmp_path)
    # default vhost, user (and its SCRAM-SHA-256/512 credentials) and permission, recorded once
    assert restored == 5
    assert run_broker(tmp_path) == (0, 0)  # the second start reads them back, writes nothing


def test_what_was_declared_is_back_and_restoring_writes_nothing(tmp_path: Path):
    run_broker(tmp_path, declare_everything)
    seen: dict[str, object] = {}

    async def inspect(broker: Broker) -> None:
        vhost = broker.vhosts["other"]
        seen["vhosts"] = sorted(broker.vhosts)
        seen["vhost limits"] = vhost.limits
        seen["users"] = sorted(broker.users.users)
        seen["user limits"] = broker.users.users["alice"].limits
        perm = broker.permissions.get("other", "alice")
        seen["perm"] = (perm.configure, perm.write, perm.read) if perm else None
        seen["topic"] = broker.permissions.topic[("other", "alice", "amq.topic")].as_json()
        seen["policy"] = vhost.policies["ttl"].definition
        seen["exchange"] = vhost.exchanges["ex"].type_name
        seen["queues"] = sorted(vhost.queues)
        seen["bound"] = [b.routing_key for b in vhost.exchanges["ex"].bindings.values()]
        seen["messages"] = vhost.queues["q1"].message_count
        seen["duplicate"] = broker.producers.is_duplicate("other", "p1", 7)
        seen["listeners"] = {vhost.listener, broker.users.listener, broker.permissions.listener}
        seen["recorder"] = broker.recorder
        seen["producers"] = broker.producers

    restored, _ = run_broker(tmp_path, inspect)
    assert restored == 0
    assert seen["vhosts"] == ["/", "other"]
    assert seen["vhost limits"] == {"max-queues": 5}
    assert seen["users"] == ["alice", "guest"]
    assert seen["user limits"] == {"max-connections": 3}
    assert seen["perm"] == ("^a", "^b", "^c")
    assert seen["topic"]["write"] == "^w" and seen["topic"]["read"] == "^r"
    assert seen["policy"] == {"message-ttl": 60000}
    assert seen["exchange"] == "topic"
    assert seen["queues"] == ["q1"]
    assert seen["bound"] == ["k.#"]
    assert seen["messages"] == 1
    assert seen["duplicate"] is True
    assert seen["listeners"] == {seen["recorder"]}  # given in constructors, one recorder
    assert isinstance(seen["producers"], ProducerRegistry)


def test_after_restoring_changes_are_recorded_again(tmp_path: Path):
    run_broker(tmp_path)

    async def declare(broker: Broker) -> None:
        broker.vhosts["/"].declare_queue("later", durable=True)

    _, written = run_broker(tmp_path, declare)
    assert written == 1
    seen: list[str] = []

    async def inspect(broker: Broker) -> None:
        seen.extend(broker.vhosts["/"].queues)

    run_broker(tmp_path, inspect)
    assert seen == ["later"]


def test_stored_bad_regexes_are_skipped_or_deny_all(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture):
    persistence = Persistence(tmp_path, "never")
    persistence.definitions._run("INSERT INTO permissions VALUES (?, ?, ?, ?, ?)",
                                 "guest", "/", "(", ".*", ".*")
    persistence.definitions.save_topic_permission({"user": "guest", "vhost": "/",
                                                   "exchange": "amq.topic", "write": "(",
                                                   "read": ".*"})
    asyncio.run(persistence.aclose())
    seen: dict[str, object] = {}

    async def inspect(broker: Broker) -> None:
        seen["perm"] = broker.permissions.get("/", "guest")
        topic = broker.permissions.topic[("/", "guest", "amq.topic")]
        seen["topic"] = (topic.write, topic.read)

    with caplog.at_level(logging.ERROR, "smartbroker.persistence"):
        restored, _ = run_broker(tmp_path, inspect)
    assert seen["perm"] is None  # skipped, and no default put in its place
    assert seen["topic"] == ("", "")  # denies all
    # the defaults of the vhost and user (with its 2 SCRAM credentials) only: nothing re-saved
    assert restored == 4
    assert "skipping stored permission" in caplog.text
    assert "denies all" in caplog.text


def test_producer_registry_files_count_under_the_brokers_handle_bound(tmp_path: Path):
    async def check() -> None:
        persistence = Persistence(tmp_path, "never")
        broker = Broker(Config(data_dir=tmp_path), persistence)
        assert broker.producers is persistence.producers
        assert broker.producers.log._handles is persistence.executors.handles
        await persistence.aclose(broker)

    asyncio.run(check())
