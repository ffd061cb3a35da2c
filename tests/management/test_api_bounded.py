"""One API caller cannot stall the broker for the others (issue 12, class 3)."""

from __future__ import annotations

import threading

import httpx
import pika
import pytest


@pytest.mark.extension
def test_catastrophic_name_regex_completes(api: httpx.Client, uid: str) -> None:
    """``^(a+)+$`` against ``aaaa...b`` backtracks for hours in a backtracking engine; the
    list filter is linear-time (RE2), so the request completes (within the client's 10 s
    timeout) and finds nothing."""
    name = "a" * 40 + f"b{uid}"
    assert api.put(f"/api/queues/%2F/{name}", json={}).status_code == 201
    try:
        reply = api.get("/api/queues", params={"page": 1, "page_size": 100, "name": "^(a+)+$",
                                               "use_regex": "true"})
        assert reply.status_code == 200
        assert reply.json()["filtered_count"] == 0
        reply = api.get("/api/queues", params={"page": 1, "name": "^a+b", "use_regex": "true"})
        assert name in [q["name"] for q in reply.json()["items"]]
    finally:
        api.delete(f"/api/queues/%2F/{name}")


@pytest.mark.extension
def test_listing_thousands_of_queues_interleaves_with_amqp(own_broker) -> None:
    """``GET /api/queues`` over 5,000 queues is rendered in slices with the event loop in
    between: AMQP round trips made while the listings run are answered, and each listing
    is complete."""
    conn = pika.BlockingConnection(pika.URLParameters(own_broker.url))
    ch = conn.channel()
    for i in range(5000):
        ch.queue_declare(f"bulk.{i:05d}")
    api = f"http://127.0.0.1:{own_broker.management_port}"
    sizes: list[int] = []

    def list_all() -> None:
        with httpx.Client(auth=("guest", "guest"), timeout=60) as client:
            for _ in range(3):
                sizes.append(len(client.get(f"{api}/api/queues").json()))

    lister = threading.Thread(target=list_all)
    lister.start()
    round_trips = 0
    while lister.is_alive():  # each declare-ok is one round trip through the event loop
        ch.queue_declare("bulk.00000", passive=True)
        round_trips += 1
    lister.join()
    conn.close()
    assert sizes == [5000, 5000, 5000]
    assert round_trips > 3  # answered while the listings ran, not only between them
