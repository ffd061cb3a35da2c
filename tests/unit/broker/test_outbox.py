"""broker/outbox.py's protocols are what the server's connection (and the test fake)
really provide: a member renamed on either side fails here, not at the first publish."""

from __future__ import annotations

import typing

import pytest
from broker_fakes import FakeConnection, new_broker

from smartbroker.broker.outbox import ClientConnection, Outbox
from smartbroker.server.connection import AMQPConnection


def members(proto: type) -> tuple[set[str], set[str]]:
    """(attributes, methods) a protocol declares, its bases included."""
    attributes: set[str] = set()
    methods: set[str] = set()
    for cls in proto.__mro__:
        if cls in (object, typing.Protocol, typing.Generic):
            continue
        attributes |= set(vars(cls).get("__annotations__", {}))
        methods |= {name for name, value in vars(cls).items()
                    if not name.startswith("_") and callable(value)}
    return attributes, methods


def test_outbox_is_the_smaller_surface() -> None:
    outbox = members(Outbox)
    client = members(ClientConnection)
    assert outbox[0] < client[0] and outbox[1] < client[1]
    assert {"write", "write_many", "send_method", "confirms_pending", "fail_channel"} <= outbox[1]


@pytest.mark.parametrize("make", [
    lambda broker: AMQPConnection(broker, None),
    lambda broker: FakeConnection(broker),
], ids=["server", "fake"])
def test_connections_provide_every_member(make) -> None:
    conn = make(new_broker())
    if getattr(conn, "vhost", None) is None:  # set at connection.open
        conn.vhost = conn.broker.vhosts["/"]
    attributes, methods = members(ClientConnection)
    assert [name for name in attributes if not hasattr(conn, name)] == []
    assert [name for name in methods if not callable(getattr(conn, name, None))] == []
