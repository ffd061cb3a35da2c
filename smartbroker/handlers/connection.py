"""AMQP class ``connection`` on channel 0: authentication, vhost access and limits.

The protocol (``protocol/states.py``) decides which method may come when and moves the
state; these handlers only react to the methods it lets through and ask it to send the
replies (tune, open-ok, close-ok), which is what moves it on.
"""

from __future__ import annotations

import logging
import platform
import struct

from pamqp import commands

import smartbroker
from smartbroker.broker.access import may_connect_from
from smartbroker.broker.limits import check_connection
from smartbroker.errors import not_allowed
from smartbroker.protocol import fields
from smartbroker.protocol.states import State

__all__ = ["CAPABILITIES", "HANDLERS", "MECHANISMS", "State", "handle", "start_method"]

log = logging.getLogger("smartbroker.connection")
CAPABILITIES = {
    "publisher_confirms": True,
    "exchange_exchange_bindings": True,
    "basic.nack": True,
    "consumer_cancel_notify": True,
    "connection.blocked": True,
    "consumer_priorities": True,
    "authentication_failure_close": True,
    "per_consumer_qos": True,
    "direct_reply_to": True,
}
MECHANISMS = "PLAIN AMQPLAIN"


def start_method(external: bool = False) -> commands.Connection.Start:
    return commands.Connection.Start(
        version_major=0, version_minor=9,
        server_properties={
            "product": "smartbroker",
            "version": smartbroker.__version__,
            "platform": f"Python {platform.python_version()}",
            "cluster_name": f"smartbroker@{platform.node()}",
            "copyright": "smartbroker contributors",
            "information": "Licensed under the Apache License 2.0",
            "capabilities": dict(CAPABILITIES),
        },
        mechanisms=("EXTERNAL " if external else "") + MECHANISMS, locales="en_US")


def parse_credentials(mechanism: str, response: str | bytes) -> tuple[str, str] | None:
    raw = response.encode("latin-1") if isinstance(response, str) else bytes(response)
    if mechanism == "PLAIN":
        parts = raw.split(b"\x00")
        if len(parts) != 3:
            return None
        return parts[1].decode(errors="replace"), parts[2].decode(errors="replace")
    if mechanism == "AMQPLAIN":
        try:  # the iterative decoder: any depth, linear time, never a traceback
            table, _ = fields.decode_table(struct.pack(">I", len(raw)) + raw)
        except ValueError:
            return None
        login, password = table.get("LOGIN"), table.get("PASSWORD")
        if login is None or password is None:
            return None

        def as_text(v: object) -> str:
            return v.decode(errors="replace") if isinstance(v, bytes | bytearray) else str(v)
        return as_text(login), as_text(password)
    return None


def refuse_login(conn, mechanism: str, username: str, reason: str = "bad credentials",
                 send_close: bool = True) -> None:
    """RabbitMQ's answer to a failed login (rabbit_reader:auth_fail): a client announcing
    ``authentication_failure_close`` gets ``connection.close`` 403 and the socket stays open
    until its close-ok (or a timeout), so it reads the refusal instead of a reset; any other
    client sees the socket closed after a delay, without a frame."""
    log.warning("login refused for user '%s' on %s: %s", username, conn.name, reason)
    if send_close and conn.client_capability("authentication_failure_close"):
        conn.refuse(403, f"ACCESS_REFUSED - Login was refused using authentication mechanism "
                         f"{mechanism}. For details see the broker logfile.")
    else:
        conn.close_silently()


def start_ok(conn, m: commands.Connection.StartOk) -> None:
    conn.client_properties = m.client_properties if isinstance(m.client_properties, dict) else {}
    if m.mechanism == "EXTERNAL" and conn.peer_cert_name is not None:
        user = conn.broker.users.users.get(conn.peer_cert_name)
        if user is None:
            refuse_login(conn, m.mechanism, conn.peer_cert_name, reason="no user for certificate")
            return
        credentials = (user.name, "")
    elif m.mechanism not in MECHANISMS.split():
        refuse_login(conn, m.mechanism, "", send_close=False)  # RabbitMQ: just the socket
        return
    else:
        credentials = parse_credentials(m.mechanism, m.response)
        user = conn.broker.users.authenticate(*credentials) if credentials else None
    if user is not None and not may_connect_from(conn.broker.config, user.name, conn.peer):
        refuse_login(conn, m.mechanism, user.name, reason="may only log in via localhost")
        return
    if user is None:
        refuse_login(conn, m.mechanism, credentials[0] if credentials else "")
        return
    conn.user = user
    conn.write(conn.proto.send_tune())


def tune_ok(conn, m: commands.Connection.TuneOk) -> None:
    """The protocol checked and took the client's limits (RabbitMQ's
    validate_negotiated_integer_value); the connection starts heartbeats."""
    conn.tuned()


def open_(conn, m: commands.Connection.Open) -> None:
    vhost = conn.broker.vhosts.get(m.virtual_host)
    if vhost is None:
        raise not_allowed(f"vhost {m.virtual_host} not found")
    if not conn.broker.permissions.can_access(vhost.name, conn.user.name):
        raise not_allowed(f"access to vhost '{vhost.name}' refused for user '{conn.user.name}'")
    check_connection(conn.broker, conn, vhost)
    conn.vhost = vhost
    conn.write(conn.proto.send_open_ok())


def close(conn, m: commands.Connection.Close) -> None:
    if conn.proto.close_sent:  # both sides closing at once: nothing left to wait for
        conn.write(conn.proto.send_close_ok())
        conn.close_transport()
        return
    conn.closed_by_client()


def close_ok(conn, m: commands.Connection.CloseOk) -> None:
    conn.close_transport()


def update_secret(conn, m: commands.Connection.UpdateSecret) -> None:
    """RabbitMQ's extension for rotating credentials (OAuth tokens) on a live connection.
    With password users, RabbitMQ's internal backend accepts it without a check: so do we."""
    conn.send_method(0, commands.Connection.UpdateSecretOk())


def blocked_ack(conn, m: object) -> None:
    return None


HANDLERS = {
    commands.Connection.StartOk: start_ok,
    commands.Connection.TuneOk: tune_ok,
    commands.Connection.Open: open_,
    commands.Connection.Close: close,
    commands.Connection.CloseOk: close_ok,
    commands.Connection.UpdateSecret: update_secret,
    commands.Connection.Blocked: blocked_ack,
    commands.Connection.Unblocked: blocked_ack,
}


def handle(conn, method) -> None:
    """A connection method the protocol's table allowed in the current state."""
    HANDLERS[type(method)](conn, method)
