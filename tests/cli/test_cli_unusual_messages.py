"""``get`` and ``consume`` show any message the broker delivers (issue 12, class 1: the CLI
is one of the paths that decode other clients' properties). aio-pika alone fails on
these with InvalidFrameError. Passes against RabbitMQ 3.10.8 too (SMARTBROKER_TEST_URL)."""

from __future__ import annotations

import pika

from smartbroker.cli.common import deep_json
from tests.abuse.bytewire import RawClient, entry, headers_property, nested_table, table

MICROSECONDS = 1_764_000_000_000_000


def test_get_and_consume_show_unusual_properties(cli, broker, broker_url: str, qname: str) -> None:
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        ch.queue_declare(qname)
        ch.basic_publish("", qname, b"odd", pika.BasicProperties(
            timestamp=MICROSECONDS, content_type=b"\xff\xfe", headers={"x-death": 5}))
        raw = RawClient(broker.host, broker.port)
        raw.open()
        raw.confirm_select()
        raw.publish("", qname, headers_property(table(entry("deep", b"F", nested_table(2000)))),
                    b"deep")
        raw.wait_confirms(1)
        raw.close()
        result = cli("get", qname, "--count", "2", "--json", "--requeue")
        assert (result.exit_code, result.stderr) == (0, "")
        first, second = result.stdout.splitlines()
        odd, deep = deep_json(first), deep_json(second)  # json.loads with a deep stack
        assert odd["payload"] == "odd" and odd["properties"]["timestamp"] == MICROSECONDS
        assert odd["properties"]["headers"] == {"x-death": 5}
        level = deep["properties"]["headers"]["deep"]
        for _ in range(2000):
            level = level["a"]
        assert level == {"leaf": 1} and deep["payload"] == "deep"
        result = cli("consume", qname, "--count", "2")
        assert (result.exit_code, result.stderr, result.stdout) == (0, "", "odd\ndeep\n")
    finally:
        if conn.is_open:
            conn.channel().queue_delete(qname)
            conn.close()
