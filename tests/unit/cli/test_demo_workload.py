"""The demo's workload without a broker: events, the poison message, sizes, its own broker."""

from __future__ import annotations

import json

from smartbroker.cli.demo.workload import Broker, order_event, size


def test_events_cycle_through_an_orders_lifecycle_and_one_is_poison() -> None:
    events = [order_event(i, poison_at=5) for i in range(8)]
    assert [key for key, _ in events] == ["order-0"] * 4 + ["order-1"] * 4
    docs = [json.loads(body) for _, body in events]
    assert [d["event"] for d in docs[:4]] == ["created", "paid", "packed", "shipped"]
    assert [d["seq"] for d in docs] == list(range(8))
    assert [i for i, d in enumerate(docs) if d["amount"] == "NaN"] == [5]


def test_size_reads_as_the_table_shows_it() -> None:
    assert size(None) == "n/a (external broker)"
    assert size(512) == "512 B"
    assert size(1536) == "1.5 KiB"
    assert size(3 * 2**20) == "3.0 MiB"
    assert size(5 * 2**40) == "5120.0 GiB"


def test_a_given_url_is_not_measured() -> None:
    broker = Broker("amqp://guest:guest@example.invalid:5672/", "http://guest:guest@x:15672")
    assert broker.rss() is None and broker.disk("messages") is None
    broker.stop()  # nothing of ours to stop


def test_its_own_broker_is_measurable_and_leaves_nothing_behind() -> None:
    broker = Broker.start()
    assert broker.process is not None
    tmp = broker.process.data_dir.parent
    try:
        assert (broker.rss() or 0) > 0
        assert broker.disk("messages") is not None
        assert broker.api_call("GET", "/api/overview").status_code == 200
    finally:
        broker.stop()
    assert not tmp.exists()
