"""Connection handshake as clients see it: server properties, auth, vhosts, tuning."""

from __future__ import annotations

import aio_pika
import aiormq.exceptions
import pika
import pika.exceptions
import pytest
from pamqp import commands, heartbeat

from .helpers import Broker, connect, pika_params, run
from .rawamqp import PROTOCOL_HEADER, Closed, RawAMQP

CAPABILITIES = [
    "publisher_confirms",
    "exchange_exchange_bindings",
    "basic.nack",
    "consumer_cancel_notify",
    "connection.blocked",
    "authentication_failure_close",
    "per_consumer_qos",
]


def with_userinfo(url: str, user: str, password: str, vhost: str | None = None) -> str:
    from urllib.parse import quote, urlparse

    u = urlparse(url)
    path = u.path if vhost is None else "/" + quote(vhost, safe="")
    return f"amqp://{user}:{password}@{u.hostname}:{u.port or 5672}{path}"


def test_server_capabilities_pika(conn: pika.BlockingConnection) -> None:
    """connection.start server_properties carry a capabilities table with the RabbitMQ extensions."""
    props = conn._impl.server_properties
    caps = props["capabilities"]
    for cap in CAPABILITIES:
        assert caps.get(cap) is True, cap
    assert isinstance(props["product"], bytes | str)
    assert isinstance(props["version"], bytes | str)


def test_server_capabilities_aio_pika(broker_url: str) -> None:
    """The same capabilities as seen by aiormq."""

    async def body() -> None:
        connection = await aio_pika.connect(broker_url)
        try:
            caps = connection.transport.connection.server_properties["capabilities"]
            for cap in CAPABILITIES:
                assert caps.get(cap) is True, cap
        finally:
            await connection.close()

    run(body)


def test_connection_tune_defaults(broker: Broker) -> None:
    """connection.tune proposes RabbitMQ's defaults: channel_max 2047, frame_max 131072, 60 s."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.send(PROTOCOL_HEADER)
        raw.expect(commands.Connection.Start)
        raw.send_frame(commands.Connection.StartOk(client_properties={}, mechanism="PLAIN", response="\0guest\0guest"))
        tune = raw.expect(commands.Connection.Tune)
        assert (tune.channel_max, tune.frame_max, tune.heartbeat) == (2047, 131072, 60)


def test_plain_auth_guest(broker_url: str) -> None:
    """PLAIN with guest/guest opens the connection and a channel."""
    with connect(broker_url) as c:
        assert c.is_open
        assert c.channel().is_open


def test_wrong_password_pika(broker_url: str) -> None:
    """Wrong password: 403 ACCESS_REFUSED (pika advertises authentication_failure_close)."""
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        connect(with_userinfo(broker_url, "guest", "not-the-password"))
    assert "403" in str(info.value) and "ACCESS_REFUSED" in str(info.value)


def test_unknown_user_pika(broker_url: str) -> None:
    """Unknown user is refused the same way as a wrong password."""
    with pytest.raises(pika.exceptions.ProbableAuthenticationError) as info:
        connect(with_userinfo(broker_url, "no-such-user-smartbroker", "x"))
    assert "ACCESS_REFUSED" in str(info.value)


def test_wrong_password_aio_pika(broker_url: str) -> None:
    """aiormq maps the 403 to ProbableAuthenticationError."""

    async def body() -> None:
        with pytest.raises(aiormq.exceptions.ProbableAuthenticationError):
            await aio_pika.connect(with_userinfo(broker_url, "guest", "nope"), timeout=5)

    run(body)


def test_unknown_vhost_pika(broker_url: str) -> None:
    """connection.open on a missing vhost: 530 NOT_ALLOWED."""
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        connect(with_userinfo(broker_url, "guest", "guest", vhost="no-such-vhost-smartbroker"))
    assert "530" in str(info.value) and "NOT_ALLOWED" in str(info.value)


def test_heartbeat_and_frame_max_negotiation(broker_url: str) -> None:
    """Client-requested heartbeat/frame_max/channel_max below the server's are accepted."""
    with connect(broker_url, heartbeat=7, frame_max=8192, channel_max=10) as c:
        params = c._impl.params
        assert (params.heartbeat, params.frame_max, params.channel_max) == (7, 8192, 10)
        chan = c.channel()
        q = chan.queue_declare("", exclusive=True).method.queue
        payload = bytes(range(256)) * 100  # 25.6 KB: split into several 8 KiB frames both ways
        chan.basic_publish("", q, payload)
        _, _, got = chan.basic_get(q, auto_ack=True)
        assert got == payload


def test_server_sends_heartbeats(broker: Broker) -> None:
    """With heartbeat=1 negotiated and no traffic, the broker sends heartbeat frames."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake(heartbeat=1)
        _, value = raw.read_frame(timeout=5)
        assert isinstance(value, heartbeat.Heartbeat)


def test_client_close_releases_exclusive_queues_before_close_ok(broker: Broker,
                                                               broker_url: str) -> None:
    """After the client's connection.close the broker has dropped the connection's exclusive
    queues by the time close-ok arrives, and leaves closing the socket to the client (as
    RabbitMQ: a client reading close-ok never sees a lost connection first)."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.open_channel(1)
        raw.send_frame(commands.Queue.Declare(queue="", exclusive=True), 1)
        name = raw.expect(commands.Queue.DeclareOk).queue
        raw.send_frame(commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        raw.expect(commands.Connection.CloseOk)
        with connect(broker_url) as other:  # round trips the broker answers after close-ok
            with pytest.raises(pika.exceptions.ChannelClosedByBroker) as info:
                other.channel().queue_declare(name, passive=True)
            assert info.value.reply_code == 404
        assert not raw.peer_closed(), "socket closed under the client after close-ok"


def test_socket_left_open_after_close_ok_is_closed_after_the_heartbeat_timeout(
        broker: Broker) -> None:
    """A client that never closes its socket after close-ok: the broker closes it after the
    negotiated heartbeat interval (RabbitMQ: heartbeat, or 30 s without heartbeats)."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake(heartbeat=1)
        raw.send_frame(commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0))
        raw.expect(commands.Connection.CloseOk)
        assert raw.wait_closed(timeout=10)


def test_aio_pika_heartbeat_negotiated(broker_url: str) -> None:
    """aio-pika asking heartbeat=5 gets 5."""

    async def body() -> None:
        connection = await aio_pika.connect(broker_url + "?heartbeat=5")
        try:
            assert connection.transport.connection.heartbeat_timeout == 5
            channel = await connection.channel()
            await channel.declare_queue("", exclusive=True)
        finally:
            await connection.close()

    run(body)


def test_client_properties_accepted(broker_url: str) -> None:
    """Arbitrary client_properties (nested table) do not disturb the handshake."""
    params = pika_params(broker_url, client_properties={"connection_name": "smartbroker-test", "x": {"y": 1}})
    with pika.BlockingConnection(params) as c:
        assert c.channel().is_open


def test_connection_close_by_client_closes_channels(broker_url: str) -> None:
    """After a clean client close, the channels are closed too."""
    c = connect(broker_url)
    chan = c.channel()
    c.close()
    assert c.is_closed and chan.is_closed


def test_silent_client_disconnected_after_missed_heartbeats(broker: Broker) -> None:
    """heartbeat=1 negotiated and the client never sends anything: the broker drops the
    TCP connection (RabbitMQ: after ~2 missed intervals, without a connection.close)."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake(heartbeat=1)
        frames = []
        try:
            while True:
                frames.append(raw.read_frame(timeout=8)[1])
        except Closed:
            pass
        assert frames and all(isinstance(f, heartbeat.Heartbeat) for f in frames)


def test_update_secret(broker: Broker) -> None:
    """connection.update-secret (RabbitMQ extension, for OAuth token refresh): with password
    users RabbitMQ answers update-secret-ok and the connection keeps working."""
    with RawAMQP(broker.host, broker.port) as raw:
        raw.handshake()
        raw.send_frame(commands.Connection.UpdateSecret(new_secret="guest", reason="rotation"))
        raw.expect(commands.Connection.UpdateSecretOk)
        raw.open_channel(1)
