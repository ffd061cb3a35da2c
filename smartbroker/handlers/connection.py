"""AMQP class ``connection``: the handshake (start/tune/open) and close, on channel 0.

States advance strictly: AWAIT_START_OK -> AWAIT_TUNE_OK -> AWAIT_OPEN -> OPEN, and
CLOSING once either side has sent ``connection.close``. Any other method on channel 0 in a
state that does not expect it is a 503 COMMAND_INVALID (RabbitMQ's reply).
"""

from __future__ import annotations

import enum
import logging
import platform
import struct

from pamqp import commands

import smartbroker
from smartbroker.broker.limits import check_connection
from smartbroker.errors import command_invalid, not_allowed
from smartbroker.protocol import fields

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


class State(enum.Enum):
    AWAIT_HEADER = 0
    AWAIT_START_OK = 1
    AWAIT_TUNE_OK = 2
    AWAIT_OPEN = 3
    OPEN = 4
    CLOSING = 5
    CLOSED = 6


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


def is_loopback(peer: str) -> bool:
    host = peer.rsplit(":", 1)[0].strip("[]")
    return host.startswith("127.") or host in ("::1", "localhost") or host.startswith("::ffff:127.")


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
    if user is not None and user.name in conn.broker.config.loopback_users and not is_loopback(conn.peer):
        refuse_login(conn, m.mechanism, user.name, reason="may only log in via localhost")
        return
    if user is None:
        refuse_login(conn, m.mechanism, credentials[0] if credentials else "")
        return
    conn.user = user
    cfg = conn.broker.config
    conn.state = State.AWAIT_TUNE_OK
    conn.send_method(0, commands.Connection.Tune(
        channel_max=cfg.channel_max, frame_max=cfg.frame_max, heartbeat=cfg.heartbeat))


def _negotiated(field: str, value: int, minimum: int, maximum: int) -> None:
    """rabbit_reader:validate_negotiated_integer_value: 0 means "no limit" from the client,
    which a broker with a limit refuses, as RabbitMQ does (the failure is logged; the client
    sees the socket closed, see AMQPConnection.close_silently)."""
    if value and value < minimum:
        raise not_allowed(f"negotiated {field} = {value} is lower than the minimum allowed "
                          f"value ({minimum})")
    if value == 0 or value > maximum:
        detail = " (no limit)" if value == 0 and field == "channel_max" else ""
        raise not_allowed(f"negotiated {field} = {value}{detail} is higher than the maximum "
                          f"allowed value ({maximum})")


def tune_ok(conn, m: commands.Connection.TuneOk) -> None:
    cfg = conn.broker.config
    _negotiated("frame_max", m.frame_max, 4096, cfg.frame_max)
    _negotiated("channel_max", m.channel_max, 1, cfg.channel_max)
    conn.frame_max = m.frame_max
    conn.channel_max = m.channel_max
    conn.start_heartbeat(m.heartbeat)
    conn.state = State.AWAIT_OPEN


def open_(conn, m: commands.Connection.Open) -> None:
    vhost = conn.broker.vhosts.get(m.virtual_host)
    if vhost is None:
        raise not_allowed(f"vhost {m.virtual_host} not found")
    if not conn.broker.permissions.can_access(vhost.name, conn.user.name):
        raise not_allowed(f"access to vhost '{vhost.name}' refused for user '{conn.user.name}'")
    check_connection(conn.broker, conn, vhost)
    conn.vhost = vhost
    conn.state = State.OPEN
    conn.send_method(0, commands.Connection.OpenOk())


def close(conn, m: commands.Connection.Close) -> None:
    if conn.state is State.CLOSING:  # both sides closing at once: nothing left to wait for
        conn.send_method(0, commands.Connection.CloseOk())
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


EXPECTED = {
    State.AWAIT_START_OK: {commands.Connection.StartOk: start_ok},
    State.AWAIT_TUNE_OK: {commands.Connection.TuneOk: tune_ok},
    State.AWAIT_OPEN: {commands.Connection.Open: open_, commands.Connection.Close: close},
    State.OPEN: {commands.Connection.Close: close, commands.Connection.CloseOk: close_ok,
                 commands.Connection.UpdateSecret: update_secret,
                 commands.Connection.Blocked: blocked_ack, commands.Connection.Unblocked: blocked_ack},
    State.CLOSING: {commands.Connection.Close: close, commands.Connection.CloseOk: close_ok},
}


def handle(conn, method) -> None:
    handler = EXPECTED.get(conn.state, {}).get(type(method))
    if handler is None:
        if conn.state is State.CLOSING:
            return  # after connection.close only close/close-ok matter
        raise command_invalid(f"unexpected method {method.name} in state {conn.state.name.lower()}")
    handler(conn, method)
