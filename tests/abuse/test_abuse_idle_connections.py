"""Scripted abuse, idle peers: half-open sockets and clients that stop heartbeating.

Each test: the abusive client gets RabbitMQ's answer (reply code, or the socket dropped),
the broker does not leak (open file descriptors and RSS of the broker process measured
before/after, with tolerant thresholds, once the broker has noticed the abusive client is
gone), and a normal pika client still works during and afterwards.

The broker runs with ``SMARTBROKER_HANDSHAKE_TIMEOUT=1`` so the half-open test is fast.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import abuse_helpers
import pytest
from abuse_helpers import (
    PROTOCOL_HEADER,
    Closed,
    Probe,
    check_pika_works,
    closing_all,
    peer_closed,
    poll,
    raw_client,
    read_frames_until,
)
from pamqp import commands, heartbeat

pytestmark = pytest.mark.extension

# the helper module's fixtures, made visible to pytest here (the autouse one gives the
# broker a 1 s handshake timeout)
_fast_handshake_timeout = abuse_helpers._fast_handshake_timeout
probe = abuse_helpers.probe


def test_half_open_connections_closed_after_handshake_timeout(own_broker: Any, probe: Probe) -> None:
    """Sockets that connect and send nothing (or half a protocol header) are closed by the
    broker after the handshake timeout (1 s here), not before; no fd stays behind."""
    check_pika_works(own_broker)
    base_fds = probe.fds()
    socks = []
    with closing_all(socks):
        start = time.monotonic()
        for i in range(40):
            s = socket.create_connection((own_broker.host, own_broker.port))
            if i % 4 == 0:
                s.sendall(PROTOCOL_HEADER[:3])  # a partial header is still a half-open peer
            socks.append(s)
        poll(lambda: probe.fds() > base_fds, 5.0, "broker accepted the sockets")
        # meanwhile a normal client is served at once
        check_pika_works(own_broker, max_latency=0.9)
        for s in socks:
            assert peer_closed(s, timeout=5.0), "broker kept a half-open connection"
        elapsed = time.monotonic() - start
        assert 0.9 <= elapsed < 5.0, f"half-open sockets closed after {elapsed:.2f}s"
    probe.wait_fds(base_fds)
    check_pika_works(own_broker)



def test_heartbeats_stopped_connection_dropped(own_broker: Any, probe: Probe) -> None:
    """Negotiate heartbeat=1 and go silent: the broker sends heartbeats, then drops the
    connection within ~2-3 s; a client that keeps talking stays connected."""
    base_fds = probe.fds()
    silent = raw_client(own_broker, heartbeat=1)
    chatty = raw_client(own_broker, heartbeat=1)
    stop = threading.Event()

    def keep_talking() -> None:
        while not stop.wait(0.25):
            chatty.send(heartbeat.Heartbeat().marshal())

    talker = threading.Thread(target=keep_talking, daemon=True)
    talker.start()
    with closing_all([silent, chatty]):
        start = time.monotonic()
        got_heartbeat = False
        while True:
            try:
                _, value = silent.read_frame(timeout=max(0.01, start + 6 - time.monotonic()))
            except Closed:
                break
            got_heartbeat |= isinstance(value, heartbeat.Heartbeat)
        elapsed = time.monotonic() - start
        assert got_heartbeat, "the broker sent no heartbeat on a heartbeat=1 connection"
        assert 1.5 <= elapsed <= 3.5, f"silent client dropped after {elapsed:.2f}s"
        # the one that kept sending heartbeats is still connected
        stop.set()
        talker.join()
        chatty.send_frame(commands.Channel.Open(), 1)
        chatty.send_frame(commands.Basic.Qos(prefetch_count=1), 1)
        read_frames_until(chatty, lambda ch, v: isinstance(v, commands.Basic.QosOk), 5)
    probe.wait_fds(base_fds)
    check_pika_works(own_broker)
