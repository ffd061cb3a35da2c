"""cluster/handoff.py on real sockets in one process: a TCP connection's socket goes over
the Unix socket to a worker's listener, which serves it as an open AMQP connection; a
refused handover leaves the socket fully with the source (the target's copy is closed
without a FIN: the connection still carries bytes both ways).

The state is written here as ``server/handoff.capture`` writes it: the wire format is
what is under test."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
from pathlib import Path

import pytest
from pamqp import commands, frame

from smartbroker.broker.core import Broker
from smartbroker.cluster.handoff import HandoffListener, send_connection
from smartbroker.config import Config
from smartbroker.server.flush import Flusher
from smartbroker.server.handoff import Handoff, HandoffRefused


def state(user: str = "guest") -> bytes:
    props = b"\x00\x00\x00\x00"  # an empty AMQP table
    return json.dumps({
        "version": 1, "user": user, "vhost": "/", "frame_max": 131072, "channel_max": 2047,
        "heartbeat": 0, "client_properties": base64.b64encode(props).decode(),
        "connected_at": 1.0, "has_published": False, "bytes_in": 0, "bytes_out": 0,
        "channels": [{"number": 1, "prefetch": 0, "global_prefetch": 0, "flow": True,
                      "confirm": True, "publish_seq": 5, "delivery_tag": 7,
                      "last_queue": None, "tx": False}],
    }).encode()


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """(the client's end, the broker's end) of a loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        accepted, _ = server.accept()
    return client, accepted


async def run(tmp_path: Path, user: str) -> tuple[Broker, Handoff, socket.socket,
                                                  socket.socket, list[int], Exception | None]:
    broker = Broker(Config(data_dir=tmp_path))
    handoff = Handoff(broker, Flusher(), lambda node: None, send_connection)
    listener = HandoffListener(str(tmp_path / "handoff.sock"), handoff)
    await listener.start()
    client, ours = tcp_pair()
    client.setblocking(False)
    released: list[int] = []
    qos = frame.marshal(commands.Basic.Qos(prefetch_count=3), 1)
    refused = None
    try:
        await send_connection(listener.address, state(user), qos, ours.fileno(),
                              lambda: released.append(1))
        ours.close()  # the source's copy: a plain close
    except HandoffRefused as exc:
        refused = exc
    await asyncio.sleep(0)
    if refused is None:  # the target answers the carried basic.qos on the client's socket
        loop = asyncio.get_running_loop()
        data = await asyncio.wait_for(loop.sock_recv(client, 4096), 5)
        _, channel, answer = frame.unmarshal(data)
        assert (channel, type(answer)) == (1, commands.Basic.QosOk)
    await listener.close()
    return broker, handoff, client, ours, released, refused


def test_the_listener_serves_the_handed_socket(tmp_path: Path) -> None:
    broker, handoff, client, _, released, refused = asyncio.run(run(tmp_path, "guest"))
    assert refused is None and released == [1] and handoff.received == 1
    (conn,) = broker.connections
    ch = conn.channels[1]
    assert (ch.confirm, ch.publish_seq, ch.delivery_tag, ch.consumer_prefetch) == (True, 5, 7, 3)
    assert conn.user.name == "guest" and conn.vhost.name == "/"
    client.close()


def test_a_refused_handover_leaves_the_socket_with_the_source(tmp_path: Path) -> None:
    broker, handoff, client, ours, released, refused = asyncio.run(run(tmp_path, "nobody"))
    assert isinstance(refused, HandoffRefused) and "unknown" in str(refused)
    assert released == [] and handoff.received == 0 and not broker.connections
    client.setblocking(True)
    client.settimeout(5)
    ours.settimeout(5)
    client.sendall(b"ping")  # no FIN, no RST: the connection still works both ways
    assert ours.recv(4) == b"ping"
    ours.sendall(b"pong")
    assert client.recv(4) == b"pong"
    client.close()
    ours.close()


@pytest.mark.parametrize("junk", [b"", b"GET / HTTP/1.1\r\n\r\n"])
def test_junk_on_the_unix_socket_is_refused_quietly(tmp_path: Path, junk: bytes,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    async def go() -> None:
        broker = Broker(Config(data_dir=tmp_path))
        listener = HandoffListener(str(tmp_path / "handoff.sock"),
                                   Handoff(broker, Flusher(), lambda node: None, send_connection))
        await listener.start()
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        await loop.sock_connect(sock, listener.address)
        await loop.sock_sendall(sock, junk)
        if not junk:
            sock.shutdown(socket.SHUT_WR)
        assert await asyncio.wait_for(loop.sock_recv(sock, 16), 5) == b""  # hung up on
        sock.close()
        await listener.close()
        assert not broker.connections

    asyncio.run(go())
    assert "Traceback" not in caplog.text
