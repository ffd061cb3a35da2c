"""Helpers for the message-lifecycle, dead-letter and policy tests."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlparse

import pika
import pika.exceptions
from pika.adapters.blocking_connection import BlockingChannel

from .helpers import TIMEOUT, wait_until

# Headers RabbitMQ 3.13+ adds on dead-lettering (smartbroker writes them too); RabbitMQ
# 3.10 does not. Tests of the 3.10 header set ignore them; test_deadletter covers them
# as a smartbroker extension.
LAST_DEATH_KEYS = ("x-last-death-reason", "x-last-death-queue", "x-last-death-exchange")


@dataclass
class Delivery:
    method: Any
    props: pika.BasicProperties
    body: bytes

    @property
    def headers(self) -> dict[str, Any]:
        return dict(self.props.headers or {})


def collect(
    chan: BlockingChannel, queue: str, n: int, timeout: float = TIMEOUT, auto_ack: bool = True
) -> list[Delivery]:
    """Consume ``queue`` until ``n`` messages arrived (fail at the deadline), then cancel.

    With ``auto_ack=False`` the deliveries stay unacked on ``chan``.
    """
    got: list[Delivery] = []

    def on_message(_ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        got.append(Delivery(method, props, body))

    tag = chan.basic_consume(queue, on_message, auto_ack=auto_ack)
    try:
        wait_until(chan.connection, lambda: len(got) >= n, timeout)
    finally:
        if chan.is_open:
            chan.basic_cancel(tag)
    return got


def collect_one(chan: BlockingChannel, queue: str, timeout: float = TIMEOUT) -> Delivery:
    return collect(chan, queue, 1, timeout)[0]


def declare_dlq(chan: BlockingChannel, name: str) -> str:
    """An exclusive queue to receive dead letters through the default exchange."""
    chan.queue_declare(name, exclusive=True)
    return name


def dlx_args(dlq: str, **extra: Any) -> dict[str, Any]:
    """Queue arguments dead-lettering into ``dlq`` through the default exchange."""
    return {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq, **extra}


def death_headers(headers: dict[str, Any]) -> dict[str, Any]:
    """The headers without the x-last-death-* ones RabbitMQ 3.10 does not write."""
    return {k: v for k, v in headers.items() if k not in LAST_DEATH_KEYS}


def assert_recent(when: Any, slack: float = 30.0) -> None:
    """An x-death ``time``: a timestamp (pika decodes it as an aware UTC datetime) close to now."""
    assert isinstance(when, dt.datetime), when
    now = dt.datetime.now(dt.UTC)
    assert abs((now - when).total_seconds()) < slack, (when, now)


def strip_times(deaths: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """x-death entries with ``time`` checked and removed, for exact comparison of the rest."""
    out = []
    for entry in deaths:
        entry = dict(entry)
        assert_recent(entry.pop("time"))
        out.append(entry)
    return out


# -- management HTTP API (policies) ------------------------------------------------


def api_base(broker: Any) -> str:
    """Management API root: SMARTBROKER_TEST_API, else the broker fixture's ``api``."""
    base = os.environ.get("SMARTBROKER_TEST_API") or getattr(broker, "api", None)
    if not base:
        raise RuntimeError("no management API URL (set SMARTBROKER_TEST_API)")
    return base.rstrip("/")


def api_request(base: str, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One HTTP request with basic auth taken from the URL; returns (status, parsed JSON or None)."""
    u = urlparse(base)
    user, password = u.username or "guest", u.password or "guest"
    netloc = u.hostname or "localhost"
    if u.port:
        netloc += f":{u.port}"
    url = f"{u.scheme}://{netloc}{u.path}{path}"
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    try:
        parsed = json.loads(raw) if raw else None
    except ValueError:
        parsed = raw.decode(errors="replace")
    return status, parsed


def policy_path(vhost: str, name: str) -> str:
    return f"/api/policies/{quote(vhost, safe='')}/{quote(name, safe='')}"


def queue_routable(chan: BlockingChannel, queue: str) -> bool:
    """Does ``queue`` exist? Asked by a mandatory publish through the default exchange on a
    confirm-mode channel (a passive declare would renew an x-expires lease; a publish does not).

    The probe message (empty body) lands in the queue if it exists.
    """
    try:
        chan.basic_publish("", queue, b"", mandatory=True)
    except pika.exceptions.UnroutableError:
        return False
    return True


def wait_for_listener(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until ``host:port`` accepts TCP connections (fail at the deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"nothing listens on {host}:{port}") from None
            time.sleep(0.02)
