"""VirtualHost cleanup on delete: auto-delete exchanges and queues, and the bindings removed
with a deleted queue or exchange."""

from __future__ import annotations

from vhost_helpers import queue, route

from smartbroker.broker.exchange import Exchange
from smartbroker.message import Message

# --------------------------------------------------------------------------- auto-delete and cleanup


def test_auto_delete_exchange_removed_with_its_last_binding(vh):
    vh.declare_exchange("ad", "direct", auto_delete=True)
    q1, q2 = queue(vh, "q1"), queue(vh, "q2")
    vh.bind("ad", q1, "k", {})
    vh.bind("ad", q2, "k", {})
    vh.unbind("ad", q1, "k", {})
    assert "ad" in vh.exchanges
    vh.unbind("ad", q2, "k", {})
    assert "ad" not in vh.exchanges
    assert q1.bindings == set() and q2.bindings == set()


def test_auto_delete_exchange_without_bindings_survives_declare(vh):
    vh.declare_exchange("ad", "direct", auto_delete=True)
    assert "ad" in vh.exchanges


def test_auto_delete_exchange_removed_when_its_queue_is_deleted(vh):
    vh.declare_exchange("ad", "fanout", auto_delete=True)
    vh.bind("ad", queue(vh, "q"), "", {})
    assert vh.delete_queue("q") == 0
    assert "ad" not in vh.exchanges


def test_auto_delete_cascades_through_exchange_bindings(vh):
    up = vh.declare_exchange("up", "fanout", auto_delete=True)
    vh.declare_exchange("down", "fanout")
    vh.bind("up", vh.exchange("down"), "", {})
    vh.delete_exchange("down")
    assert "up" not in vh.exchanges
    assert up.bindings == {}


def test_deleted_queue_bindings_are_removed(vh):
    vh.declare_exchange("t", "topic")
    vh.declare_exchange("f", "fanout")
    q, other = queue(vh, "q"), queue(vh, "other")
    vh.bind("t", q, "a.#", {})
    vh.bind("f", q, "", {})
    vh.bind("f", other, "", {})
    vh.delete_queue("q")
    assert route(vh, "t", "a.b") == set()
    assert route(vh, "f", "") == {"other"}
    assert all(b.destination is not q for ex in vh.exchanges.values()
               for b in ex.bindings.values())
    assert vh.exchange("t").router._root.is_empty()


def test_delete_queue_reports_ready_count_and_runs_hooks(vh):
    deleted = []
    vh.on_queue_deleted.append(deleted.append)
    q = queue(vh, "q")
    q.publish(Message.build("", "q", b"x"))
    assert vh.delete_queue("q") == 1
    assert deleted == [q]
    assert "q" not in vh.queues
    assert vh.delete_queue("q") == 0


def test_deleted_exchange_bindings_are_removed_both_ways(vh):
    vh.declare_exchange("src", "fanout")
    mid = vh.declare_exchange("mid", "fanout")
    q = queue(vh, "q")
    vh.bind("src", mid, "", {})
    vh.bind("mid", q, "", {})
    vh.delete_exchange("mid")
    assert route(vh, "src", "") == set()
    assert vh.exchange("src").bindings == {}
    assert q.bindings == set()
    assert isinstance(vh.exchanges.get("src"), Exchange)


def test_auto_delete_queue_dropped_when_last_consumer_leaves(vh):
    class Consumer:
        tag, no_ack, exclusive, priority = "c", False, False, 0

        def can_take(self):
            return True

        def deliver(self, queue, entry):
            pass

        def cancelled_by_broker(self):
            pass

    q = queue(vh, "ad", auto_delete=True)
    vh.declare_exchange("f", "fanout")
    vh.bind("f", q, "", {})
    c = Consumer()
    q.add_consumer(c)
    q.remove_consumer(c)
    assert "ad" not in vh.queues
    assert route(vh, "f", "") == set()
    assert route(vh, "", "ad") == set()
