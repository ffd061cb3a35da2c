"""Client commands (publish, get, consume) as a new user meets them (issue 12, section 6):
consume --count ends cleanly, unroutable publishes fail, every broker refusal is RabbitMQ's
``<code> <TEXT>`` on one line with a non-zero exit. They pass against RabbitMQ 3.10.8 too
(SMARTBROKER_TEST_URL and SMARTBROKER_TEST_API)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pika
import pytest

from tests.management.scenarios import poll


@contextmanager
def channel(broker_url: str) -> Iterator[pika.adapters.blocking_connection.BlockingChannel]:
    conn = pika.BlockingConnection(pika.URLParameters(broker_url))
    try:
        ch = conn.channel()
        ch.confirm_delivery()
        yield ch
    finally:
        if conn.is_open:
            conn.close()


def fill(ch, queue: str, n: int, stream: bool = False) -> None:
    args = {"x-queue-type": "stream"} if stream else None
    ch.queue_declare(queue, durable=stream, arguments=args)
    for i in range(n):
        ch.basic_publish("", queue, f"m{i}".encode())


def ready(ch, queue: str) -> list[tuple[str, bool]]:
    """Every ready message as (body, redelivered), taken off the queue."""
    out = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return out
        out.append((body.decode(), method.redelivered))


@pytest.mark.parametrize("prefetch", ["100", "2"])
def test_consume_count_on_a_stream_ends_cleanly(cli, broker_url: str, qname: str,
                                                prefetch: str) -> None:
    with channel(broker_url) as ch:
        fill(ch, qname, 20, stream=True)
        try:
            result = cli("consume", qname, "--offset", "first", "--count", "5",
                         "--prefetch", prefetch)
            assert (result.exit_code, result.stderr) == (0, "")
            assert result.stdout.splitlines() == ["m0", "m1", "m2", "m3", "m4"]
        finally:
            ch.queue_delete(qname)


@pytest.mark.parametrize("prefetch", ["100", "2"])
def test_consume_count_on_a_classic_queue_acks_what_it_printed(cli, broker_url: str,
                                                               qname: str, prefetch: str) -> None:
    """The rest stays in the queue, in order and never delivered: nothing was nacked."""
    with channel(broker_url) as ch:
        fill(ch, qname, 10)
        try:
            result = cli("consume", qname, "--count", "5", "--prefetch", prefetch)
            assert (result.exit_code, result.stderr) == (0, "")
            assert result.stdout.splitlines() == ["m0", "m1", "m2", "m3", "m4"]
            expected = [(f"m{i}", False) for i in range(5, 10)]
            assert ready(ch, qname) == expected  # the CLI's acks precede its close-ok
        finally:
            ch.queue_delete(qname)


def test_publish_unroutable_is_returned_and_fails(cli, uid: str) -> None:
    result = cli("publish", "amq.direct", f"nowhere.{uid}", "hello")
    assert result.exit_code == 1
    assert result.stderr == (f"error: 1 message returned as unroutable: 312 NO_ROUTE "
                             f"(exchange 'amq.direct' with routing key 'nowhere.{uid}')\n")
    result = cli("publish", "", f"no.queue.{uid}", "hello", "--count", "3")
    assert result.exit_code == 1
    assert result.stderr == (f"error: 3 messages returned as unroutable: 312 NO_ROUTE "
                             f"(exchange '' with routing key 'no.queue.{uid}')\n")


def test_publish_routable_still_says_published(cli, broker_url: str, qname: str) -> None:
    with channel(broker_url) as ch:
        ch.queue_declare(qname)
        try:
            result = cli("publish", "", qname, "hello")
            assert (result.exit_code, result.stdout) == (0, "")
            assert result.stderr == (f"published 1 message to exchange '' with routing key "
                                     f"'{qname}'\n")
            assert ready(ch, qname) == [("hello", False)]
        finally:
            ch.queue_delete(qname)


@pytest.mark.parametrize("command", [
    ["publish", "", "k", "body"], ["get", "q"], ["consume", "q", "--count", "1"]])
def test_missing_vhost_is_rabbitmqs_530(cli, uid: str, command: list[str]) -> None:
    result = cli(*command, "--vhost", f"nope.{uid}")
    assert result.exit_code == 1
    assert result.stderr == f"error: 530 NOT_ALLOWED - vhost nope.{uid} not found\n"


def test_refusals_are_rabbitmqs_reply(cli, broker_url: str, qname: str, uid: str) -> None:
    result = cli("consume", f"nope.{uid}", "--count", "1")
    assert result.exit_code == 1
    assert result.stderr == f"error: 404 NOT_FOUND - no queue 'nope.{uid}' in vhost '/'\n"
    bad = broker_url.replace("guest:guest@", "guest:wrong@")
    result = cli("get", "q", "--url", bad)
    assert result.exit_code == 1
    assert result.stderr.startswith("error: 403 ACCESS_REFUSED - Login was refused")
    assert result.stderr.count("\n") == 1


def test_basic_get_on_a_stream_is_540(cli, broker_url: str, qname: str) -> None:
    with channel(broker_url) as ch:
        fill(ch, qname, 1, stream=True)
        try:
            result = cli("get", qname)
            assert result.exit_code == 1
            assert result.stderr == (f"error: 540 NOT_IMPLEMENTED - basic.get not supported by "
                                     f"stream queues queue '{qname}' in vhost '/'\n")
        finally:
            ch.queue_delete(qname)


def _consuming(api_url: str, broker_url: str, queue: str) -> subprocess.Popen[str]:
    """``smartbroker consume QUEUE`` as a process, once the broker lists its consumer."""
    env = {**os.environ, "SMARTBROKER_URL": broker_url}
    proc = subprocess.Popen([sys.executable, "-m", "smartbroker", "consume", queue],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def consumers() -> int:
        resp = httpx.get(f"{api_url}/api/queues/%2F/{queue}")
        return resp.json().get("consumers", 0) if resp.status_code == 200 else 0

    poll(lambda: consumers() == 1 or proc.poll() is not None, timeout=20, what="a consumer")
    assert proc.poll() is None, proc.communicate()
    return proc


def test_consumer_cancelled_by_queue_deletion_ends_consume(api_url: str, broker_url: str,
                                                           qname: str) -> None:
    with channel(broker_url) as ch:
        ch.queue_declare(qname)
        proc = _consuming(api_url, broker_url, qname)
        ch.queue_delete(qname)
        _out, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert err == f"error: the broker cancelled the consumer of queue '{qname}' (queue deleted?)\n"


def test_connection_closed_by_admin_ends_consume(cli, api_url: str, broker_url: str,
                                                 qname: str) -> None:
    with channel(broker_url) as ch:
        ch.queue_declare(qname)
        try:
            proc = _consuming(api_url, broker_url, qname)
            [conn] = [c["channel_details"]["connection_name"]
                      for c in httpx.get(f"{api_url}/api/consumers").json()
                      if c["queue"]["name"] == qname]
            assert cli("connections", "close", conn, "--reason", "maintenance").exit_code == 0
            _out, err = proc.communicate(timeout=20)
        finally:
            ch.queue_delete(qname)
    assert proc.returncode == 1
    assert err == "error: 320 CONNECTION_FORCED - maintenance\n"
