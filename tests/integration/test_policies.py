"""Policies set over the management HTTP API (PUT /api/policies/{vhost}/{name}), applied
live to matching queues and exchanges.

The API root is SMARTBROKER_TEST_API (e.g. http://guest:guest@localhost:15672 for RabbitMQ
with rabbitmq_management enabled) or the smartbroker fixture's management port. Policy
changes reach queues asynchronously, so each test waits for an observable effect.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import drain, eventually, ready_count
from .lifecycle_helpers import (
    api_base,
    api_request,
    collect_one,
    declare_dlq,
    dlx_args,
    policy_path,
    wait_for_listener,
)

VHOST = "/"

PolicySetter = Callable[..., tuple[int, Any]]


@pytest.fixture
def api(broker: Any) -> str:
    """The management API root, once its port accepts connections (it may come up after AMQP)."""
    try:
        base = api_base(broker)
    except RuntimeError:
        pytest.skip("no management API: set SMARTBROKER_TEST_API")
    u = urlparse(base)
    wait_for_listener(u.hostname or "localhost", u.port or 80)
    return base


@pytest.fixture
def policy(api: str, uid: str) -> Iterator[PolicySetter]:
    """``policy(suffix, pattern, definition, priority=0, apply_to="queues")`` PUTs a policy
    named ``test.<uid>.<suffix>``; every policy set is deleted afterwards."""
    names: list[str] = []

    def put(suffix: str, pattern: str, definition: dict[str, Any], priority: int = 0, apply_to: str = "queues") -> tuple[int, Any]:
        name = f"test.{uid}.{suffix}"
        names.append(name)
        body = {"pattern": pattern, "definition": definition, "priority": priority, "apply-to": apply_to}
        return api_request(api, "PUT", policy_path(VHOST, name), body)

    yield put
    for name in names:
        api_request(api, "DELETE", policy_path(VHOST, name))


def exactly(name: str) -> str:
    return f"^{re.escape(name)}$"


def dead_letters_within(ch: BlockingChannel, queue: str, dlq: str, timeout: float = 0.5) -> bool:
    """Publish a probe into ``queue``: True if it is dead-lettered into ``dlq`` within
    ``timeout``; otherwise purge ``queue`` and return False (for ``eventually``)."""
    ch.basic_publish("", queue, b"probe")
    try:
        collect_one(ch, dlq, timeout)
    except AssertionError:
        ch.queue_purge(queue)
        return False
    return True


def survives(ch: BlockingChannel, queue: str, dlq: str, timer: str, timer_dlq: str) -> bool:
    """Publish a probe into ``queue``; after ``timer`` (a 250 ms TTL queue) fired, is the probe
    still there and nothing dead-lettered? Cleans up for the next try."""
    ch.queue_purge(queue)
    ch.queue_purge(dlq)
    ch.basic_publish("", queue, b"probe")
    ch.basic_publish("", timer, b"tick")
    collect_one(ch, timer_dlq)
    return ready_count(ch, queue) == 1 and ready_count(ch, dlq) == 0


@pytest.fixture
def timer(ch: BlockingChannel, qname: str) -> tuple[str, str]:
    """A queue whose messages expire after 250 ms into ``timer_dlq``: a clock made of events."""
    timer_dlq = declare_dlq(ch, qname + ".timer.dlq")
    name = qname + ".timer"
    ch.queue_declare(name, exclusive=True, arguments=dlx_args(timer_dlq, **{"x-message-ttl": 250}))
    return name, timer_dlq


def test_policy_crud_status_codes(api: str, policy: PolicySetter, uid: str) -> None:
    """PUT creates (201) then updates (204); GET returns it; DELETE 204, then 404."""
    name = f"test.{uid}.crud"
    assert policy("crud", "^nothing$", {"message-ttl": 100})[0] == 201
    assert policy("crud", "^nothing$", {"message-ttl": 200}, priority=3)[0] == 204
    status, body = api_request(api, "GET", policy_path(VHOST, name))
    assert status == 200
    assert body == {
        "vhost": VHOST,
        "name": name,
        "pattern": "^nothing$",
        "apply-to": "queues",
        "definition": {"message-ttl": 200},
        "priority": 3,
    }
    assert api_request(api, "DELETE", policy_path(VHOST, name))[0] == 204
    assert api_request(api, "DELETE", policy_path(VHOST, name))[0] == 404
    assert api_request(api, "GET", policy_path(VHOST, name))[0] == 404


def test_policy_applies_dlx_and_ttl_live(ch: BlockingChannel, policy: PolicySetter, qname: str) -> None:
    """A policy gives an existing queue a dead-letter exchange and a message TTL, without
    redeclaring it."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    dlq = declare_dlq(ch, qname + ".dlq")
    status, _ = policy("ttl", exactly(qname), {"dead-letter-exchange": "", "dead-letter-routing-key": dlq, "message-ttl": 50})
    assert status == 201
    eventually(lambda: dead_letters_within(ch, qname, dlq))
    ch.basic_publish("", qname, b"after")
    got = collect_one(ch, dlq)
    assert got.body == b"after"
    (death,) = got.headers["x-death"]
    assert (death["reason"], death["queue"], death["routing-keys"]) == ("expired", qname, [qname])


def test_policy_applies_to_queue_declared_later(ch: BlockingChannel, policy: PolicySetter, qname: str) -> None:
    """A queue declared after the policy exists has it from the start."""
    dlq = declare_dlq(ch, qname + ".dlq")
    assert policy("later", exactly(qname), {"dead-letter-exchange": "", "dead-letter-routing-key": dlq, "message-ttl": 50})[0] == 201
    ch.queue_declare(qname, exclusive=True)
    ch.basic_publish("", qname, b"first")
    assert collect_one(ch, dlq).body == b"first"


def test_queue_arguments_win_over_policy(ch: BlockingChannel, policy: PolicySetter, qname: str) -> None:
    """The queue's x-dead-letter-exchange/-routing-key beat the policy's; the policy still
    supplies what the arguments lack (message-ttl here)."""
    ch.confirm_delivery()
    dlq_arg = declare_dlq(ch, qname + ".arg")
    dlq_policy = declare_dlq(ch, qname + ".pol")
    ch.queue_declare(qname, exclusive=True, arguments=dlx_args(dlq_arg))
    policy("args", exactly(qname), {"dead-letter-exchange": "", "dead-letter-routing-key": dlq_policy, "message-ttl": 50})
    eventually(lambda: dead_letters_within(ch, qname, dlq_arg))
    assert ready_count(ch, dlq_policy) == 0


@pytest.mark.parametrize("queue_ttl", [60000, 50])
def test_message_ttl_policy_and_argument_smaller_wins(
    ch: BlockingChannel, policy: PolicySetter, qname: str, queue_ttl: int
) -> None:
    """For message-ttl (as for expires, max-length, max-length-bytes) RabbitMQ takes the smaller of
    the argument and the policy, whichever sets it. The DLX comes from the policy, so a dead
    letter shows the policy is in force."""
    ch.confirm_delivery()
    dlq = declare_dlq(ch, qname + ".dlq")
    ch.queue_declare(qname, exclusive=True, arguments={"x-message-ttl": queue_ttl})
    policy_ttl = 60000 if queue_ttl == 50 else 50
    definition = {"message-ttl": policy_ttl, "dead-letter-exchange": "", "dead-letter-routing-key": dlq}
    policy("min", exactly(qname), definition)
    eventually(lambda: dead_letters_within(ch, qname, dlq))


def test_max_length_policy_trims_existing_queue(ch: BlockingChannel, policy: PolicySetter, qname: str) -> None:
    """max-length by policy applies to messages already queued: the oldest are dropped."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    for i in range(5):
        ch.basic_publish("", qname, str(i).encode())
    policy("maxlen", exactly(qname), {"max-length": 2})
    eventually(lambda: ready_count(ch, qname) == 2)
    assert drain(ch, qname) == [b"3", b"4"]


def test_deleting_policy_stops_it(
    ch: BlockingChannel, api: str, policy: PolicySetter, qname: str, uid: str, timer: tuple[str, str]
) -> None:
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    dlq = declare_dlq(ch, qname + ".dlq")
    policy("del", exactly(qname), {"dead-letter-exchange": "", "dead-letter-routing-key": dlq, "message-ttl": 50})
    eventually(lambda: dead_letters_within(ch, qname, dlq))
    assert api_request(api, "DELETE", policy_path(VHOST, f"test.{uid}.del"))[0] == 204
    eventually(lambda: survives(ch, qname, dlq, *timer))


def test_higher_priority_policy_wins(
    ch: BlockingChannel, policy: PolicySetter, qname: str, timer: tuple[str, str]
) -> None:
    """Of two matching policies only the one with the higher priority applies (no merging):
    the low one's message-ttl does not apply, dead letters go to the high one's DLX."""
    ch.confirm_delivery()
    ch.queue_declare(qname, exclusive=True)
    dlq_low, dlq_high = declare_dlq(ch, qname + ".low"), declare_dlq(ch, qname + ".high")
    policy("low", exactly(qname), {"dead-letter-exchange": "", "dead-letter-routing-key": dlq_low, "message-ttl": 50}, priority=0)
    policy("high", "^" + re.escape(qname), {"dead-letter-exchange": "", "dead-letter-routing-key": dlq_high}, priority=5)

    def rejected_to_high() -> bool:
        ch.basic_publish("", qname, b"r")
        method, _, _ = ch.basic_get(qname, auto_ack=False)
        if method is None:  # expired under the low-priority policy
            return False
        ch.basic_reject(method.delivery_tag, requeue=False)
        try:
            collect_one(ch, dlq_high, 0.5)
        except AssertionError:
            return False
        return True

    eventually(rejected_to_high)
    ch.queue_purge(dlq_low)
    assert survives(ch, qname, dlq_low, *timer)
    assert ready_count(ch, dlq_high) == 0


def test_alternate_exchange_by_policy(ch: BlockingChannel, policy: PolicySetter, xname: str, qname: str) -> None:
    """apply-to exchanges: alternate-exchange set by policy on an existing exchange."""
    ae = xname + ".1"
    ch.exchange_declare(xname, "direct")
    ch.exchange_declare(ae, "fanout")
    aeq = declare_dlq(ch, qname + ".ae")
    ch.queue_bind(aeq, ae)
    ch.confirm_delivery()
    policy("ae", exactly(xname), {"alternate-exchange": ae}, apply_to="exchanges")

    def routed_to_ae() -> bool:
        try:
            ch.basic_publish(xname, "nowhere", b"u", mandatory=True)
        except pika.exceptions.UnroutableError:
            return False
        return True

    eventually(routed_to_ae)
    assert drain(ch, aeq) == [b"u"]


def test_max_priority_in_policy_refused(api: str, policy: PolicySetter, uid: str) -> None:
    """max-priority is not a policy setting: 400 ("not recognised policy settings"), not stored."""
    status, body = policy("prio", "^nothing$", {"max-priority": 5})
    assert status == 400
    assert body["error"] == "bad_request"
    assert api_request(api, "GET", policy_path(VHOST, f"test.{uid}.prio"))[0] == 404


@pytest.mark.parametrize(
    "body",
    [
        {"pattern": "^x$", "definition": {"message-ttl": -1}},
        {"pattern": "^x$", "definition": {"message-ttl": "100"}},
        {"pattern": "^x$", "definition": {"x-message-ttl": 100}},
        {"pattern": "^x$", "definition": {}},
        {"pattern": "^x$", "definition": {"overflow": "bogus"}},
        {"pattern": "^x$", "definition": {"message-ttl": 100}, "apply-to": "bogus"},
        {"pattern": "([", "definition": {"message-ttl": 100}},
        {"pattern": "^x$", "definition": {"message-ttl": 100}, "priority": "x"},
        {"definition": {"message-ttl": 100}},
    ],
    ids=["negative-ttl", "string-ttl", "x-prefixed-key", "empty", "bad-overflow", "bad-apply-to", "bad-regex", "bad-priority", "no-pattern"],
)
def test_invalid_policy_400(api: str, uid: str, body: dict) -> None:
    name = f"test.{uid}.bad"
    try:
        assert api_request(api, "PUT", policy_path(VHOST, name), body)[0] == 400
        assert api_request(api, "GET", policy_path(VHOST, name))[0] == 404
    finally:
        api_request(api, "DELETE", policy_path(VHOST, name))
