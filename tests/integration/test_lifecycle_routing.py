"""Alternate exchanges (exchange argument alternate-exchange) and sender-selected
distribution (CC / BCC headers)."""

from __future__ import annotations

import pika
import pika.exceptions
import pytest
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import channel_error, drain, ready_count
from .lifecycle_helpers import declare_dlq


@pytest.fixture
def ae_setup(ch: BlockingChannel, xname: str, qname: str) -> tuple[str, str, str, str]:
    """X (direct, bound "known" -> qname) with alternate-exchange AE (fanout -> aeq)."""
    x, ae = xname, xname + ".1"
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae})
    ch.queue_declare(qname, exclusive=True)
    ch.queue_bind(qname, x, "known")
    aeq = declare_dlq(ch, qname + ".ae")
    ch.queue_bind(aeq, ae)
    ch.confirm_delivery()
    return x, ae, qname, aeq


def test_unroutable_goes_to_alternate_exchange(ch: BlockingChannel, ae_setup: tuple[str, str, str, str]) -> None:
    """Unroutable messages go to the AE; the delivery still names the original exchange and
    routing key. Routable ones do not."""
    x, _, q, aeq = ae_setup
    ch.basic_publish(x, "unknown", b"lost?")
    ch.basic_publish(x, "known", b"routed")
    method, _, body = ch.basic_get(aeq, auto_ack=True)
    assert (body, method.exchange, method.routing_key) == (b"lost?", x, "unknown")
    assert drain(ch, aeq) == []
    assert drain(ch, q) == [b"routed"]


def test_mandatory_with_routing_ae_is_not_returned(ch: BlockingChannel, ae_setup: tuple[str, str, str, str]) -> None:
    """mandatory=True and the AE routes the message: no basic.return, the publish is acked."""
    x, _, _, aeq = ae_setup
    ch.basic_publish(x, "unknown", b"saved", mandatory=True)  # pika raises UnroutableError on a return
    assert drain(ch, aeq) == [b"saved"]


def test_mandatory_with_ae_routing_nowhere_is_returned(ch: BlockingChannel, xname: str) -> None:
    """The AE exists but routes nowhere: mandatory -> basic.return (then ack)."""
    ae = xname + ".1"
    ch.exchange_declare(ae, "fanout")
    ch.exchange_declare(xname, "direct", arguments={"alternate-exchange": ae})
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError) as info:
        ch.basic_publish(xname, "nowhere", b"bounced", mandatory=True)
    (returned,) = info.value.messages
    assert returned.body == b"bounced"
    assert (returned.method.exchange, returned.method.routing_key) == (xname, "nowhere")
    assert returned.method.reply_code == 312


def test_missing_alternate_exchange_is_unroutable(ch: BlockingChannel, xname: str) -> None:
    """An alternate-exchange naming no exchange is ignored: mandatory -> returned."""
    ch.exchange_declare(xname, "direct", arguments={"alternate-exchange": xname + ".2"})
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(xname, "nowhere", b"bounced", mandatory=True)


def test_alternate_exchange_chain(ch: BlockingChannel, xname: str, qname: str) -> None:
    """The AE's own alternate exchange is followed too."""
    x, ae1, ae2 = xname, xname + ".1", xname + ".2"
    ch.exchange_declare(ae2, "fanout")
    ch.exchange_declare(ae1, "direct", arguments={"alternate-exchange": ae2})
    ch.exchange_declare(x, "direct", arguments={"alternate-exchange": ae1})
    ch.queue_declare(qname, exclusive=True)
    ch.queue_bind(qname, ae2)
    ch.confirm_delivery()
    ch.basic_publish(x, "nowhere", b"chained", mandatory=True)
    assert drain(ch, qname) == [b"chained"]


def test_alternate_exchange_cycle_is_returned(ch: BlockingChannel, xname: str) -> None:
    """An exchange that is its own alternate: no loop, the message is unroutable."""
    ch.exchange_declare(xname, "direct", arguments={"alternate-exchange": xname})
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish(xname, "k", b"loop", mandatory=True)


@pytest.mark.parametrize("second", [{"alternate-exchange": "other"}, {}], ids=["changed", "dropped"])
def test_redeclare_with_other_alternate_exchange_406(conn: pika.BlockingConnection, xname: str, second: dict) -> None:
    ch = conn.channel()
    ch.exchange_declare(xname, "direct", arguments={"alternate-exchange": xname + ".1"})
    with channel_error(406):
        conn.channel().exchange_declare(xname, "direct", arguments=second)


# -- CC / BCC ------------------------------------------------------------------------


@pytest.fixture
def cc_queues(ch: BlockingChannel, qname: str, uid: str) -> dict[str, str]:
    """Queues bound to amq.direct with keys a.<uid>, b.<uid>, c.<uid>; plus one bound to both a and b."""
    out = {}
    for k in ("a", "b", "c"):
        out[k] = declare_dlq(ch, f"{qname}.{k}")
        ch.queue_bind(out[k], "amq.direct", f"{k}.{uid}")
    out["ab"] = declare_dlq(ch, f"{qname}.ab")
    ch.queue_bind(out["ab"], "amq.direct", f"a.{uid}")
    ch.queue_bind(out["ab"], "amq.direct", f"b.{uid}")
    ch.confirm_delivery()
    return out


def test_cc_bcc_routing_and_header_stripping(ch: BlockingChannel, cc_queues: dict[str, str], uid: str) -> None:
    """The routing key, the CC keys and the BCC keys all route; one copy per queue; the CC
    header is delivered, the BCC header never."""
    headers = {"CC": [f"b.{uid}"], "BCC": [f"c.{uid}"], "keep": "me"}
    ch.basic_publish("amq.direct", f"a.{uid}", b"m", pika.BasicProperties(headers=headers), mandatory=True)
    for k in ("a", "b", "c", "ab"):
        q = cc_queues[k]
        method, props, body = ch.basic_get(q, auto_ack=True)
        assert body == b"m", k
        assert method.routing_key == f"a.{uid}", k
        assert props.headers == {"CC": [f"b.{uid}"], "keep": "me"}, k
        assert ch.basic_get(q, auto_ack=True) == (None, None, None), k


def test_cc_only_routable_is_not_returned(ch: BlockingChannel, cc_queues: dict[str, str], uid: str) -> None:
    """The routing key matches nothing but a CC key does: routed, no basic.return."""
    props = pika.BasicProperties(headers={"CC": [f"nothing.{uid}", f"b.{uid}"]})
    ch.basic_publish("amq.direct", f"none.{uid}", b"via-cc", props, mandatory=True)
    assert drain(ch, cc_queues["b"]) == [b"via-cc"]
    assert drain(ch, cc_queues["ab"]) == [b"via-cc"]
    assert ready_count(ch, cc_queues["a"]) == 0


def test_bcc_only_routable(ch: BlockingChannel, cc_queues: dict[str, str], uid: str) -> None:
    props = pika.BasicProperties(headers={"BCC": [f"c.{uid}"]})
    ch.basic_publish("amq.direct", f"none.{uid}", b"blind", props, mandatory=True)
    method, props, body = ch.basic_get(cc_queues["c"], auto_ack=True)
    assert (body, method.routing_key, props.headers) == (b"blind", f"none.{uid}", {})


def test_cc_with_topic_exchange(ch: BlockingChannel, qname: str, uid: str) -> None:
    """CC keys are matched by the exchange's own rules (topic patterns here)."""
    q = declare_dlq(ch, qname + ".t")
    ch.queue_bind(q, "amq.topic", f"logs.{uid}.*")
    ch.confirm_delivery()
    props = pika.BasicProperties(headers={"CC": [f"logs.{uid}.error"]})
    ch.basic_publish("amq.topic", f"other.{uid}", b"topic-cc", props, mandatory=True)
    assert drain(ch, q) == [b"topic-cc"]


@pytest.mark.parametrize("header", ["CC", "BCC"])
def test_cc_header_must_be_an_array(conn: pika.BlockingConnection, qname: str, header: str) -> None:
    """A CC/BCC header that is a string, not an array: 406 PRECONDITION_FAILED
    (unacceptable_type_in_header)."""
    ch = conn.channel()
    ch.queue_declare(qname, exclusive=True)
    ch.confirm_delivery()
    with channel_error(406):
        ch.basic_publish("", "nowhere", b"x", pika.BasicProperties(headers={header: qname}))
    assert ready_count(conn.channel(), qname) == 0


@pytest.mark.parametrize(
    "headers", [{"CC": [5]}, {"CC": []}, {"cc": ["KEY"]}], ids=["non-string-entry", "empty", "lowercase-name"]
)
def test_cc_ignored_forms(ch: BlockingChannel, qname: str, headers: dict) -> None:
    """Non-string CC entries, an empty CC, and a header named ``cc`` (names are case sensitive)
    route nothing: mandatory -> returned."""
    ch.queue_declare(qname, exclusive=True)
    ch.queue_bind(qname, "amq.direct", qname)
    headers = {k: [qname if v == "KEY" else v for v in vs] for k, vs in headers.items()}
    ch.confirm_delivery()
    with pytest.raises(pika.exceptions.UnroutableError):
        ch.basic_publish("amq.direct", "nowhere." + qname, b"x", pika.BasicProperties(headers=headers), mandatory=True)
