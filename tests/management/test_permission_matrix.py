"""Who may do what through the management API: users with each tag, with and without a
permission entry in a vhost, against every endpoint family, asserting RabbitMQ's status
codes (issue 12: a ``management`` or ``monitoring`` user without permissions must not read
another vhost's messages, publish, declare, purge, set policies or close connections).

The matrix passes against a real RabbitMQ 3.10.8 too::

    SMARTBROKER_TEST_URL=amqp://guest:guest@localhost:5672/ \\
    SMARTBROKER_TEST_API=http://guest:guest@localhost:15672 \\
    .venv/bin/python -m pytest tests/management/test_permission_matrix.py

(``test_every_route_has_a_rule`` is smartbroker's own and skipped there.)
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import quote

import httpx
import pika
import pytest

from tests.management.scenarios import poll

TAGS = ("management", "policymaker", "monitoring", "administrator")
PASSWORD = "matrix-pw"
PUBLISH = {"properties": {}, "routing_key": "k", "payload": "x", "payload_encoding": "string"}
GET = {"count": 1, "ackmode": "ack_requeue_true", "encoding": "auto"}


@dataclass
class World:
    """A vhost with a queue, an exchange and a binding, made by the admin (guest)."""

    vhost: str
    queue: str
    exchange: str
    uid: str

    @property
    def v(self) -> str:
        return quote(self.vhost, safe="")


@pytest.fixture(scope="module")
def admin(api_base: str, api_auth: tuple[str, str]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_base, auth=api_auth, timeout=15) as client:
        yield client


@pytest.fixture(scope="module")
def world(admin: httpx.Client, api_auth: tuple[str, str]) -> Iterator[World]:
    import uuid

    uid = uuid.uuid4().hex[:8]
    w = World(f"matrix-{uid}", f"mq-{uid}", f"mx-{uid}", uid)
    assert admin.put(f"/api/vhosts/{w.v}").status_code == 201
    # 204: as RabbitMQ, creating a vhost already gave its creator full permissions there
    assert admin.put(f"/api/permissions/{w.v}/{api_auth[0]}",
                     json={"configure": ".*", "write": ".*", "read": ".*"}).status_code == 204
    assert admin.put(f"/api/queues/{w.v}/{w.queue}", json={}).status_code == 201
    assert admin.put(f"/api/exchanges/{w.v}/{w.exchange}",
                     json={"type": "direct"}).status_code == 201
    assert admin.post(f"/api/bindings/{w.v}/e/{w.exchange}/q/{w.queue}",
                      json={"routing_key": "k"}).status_code == 201
    yield w
    admin.delete(f"/api/vhosts/{w.v}")


@pytest.fixture(scope="module")
def user_factory(admin: httpx.Client, world: World) -> Iterator[Callable[[str, bool], str]]:
    made: list[str] = []

    def make(tag: str, permitted: bool) -> str:
        name = f"matrix-{tag}-{'p' if permitted else 'n'}-{world.uid}"
        if name in made:  # made by an earlier test of this module
            return name
        assert admin.put(f"/api/users/{name}",
                         json={"password": PASSWORD, "tags": tag}).status_code == 201
        if permitted:
            assert admin.put(f"/api/permissions/{world.v}/{name}",
                             json={"configure": ".*", "write": ".*",
                                   "read": ".*"}).status_code == 201
        made.append(name)
        return name

    yield make
    for name in made:
        admin.delete(f"/api/users/{name}")


@pytest.fixture
def guest_connection(broker, admin: httpx.Client, world: World) -> Iterator[str]:
    """An AMQP connection of the admin user in the vhost; yields its API name."""
    params = pika.URLParameters(broker.url)
    params.virtual_host = world.vhost
    params.client_properties = {"connection_name": f"matrix-{world.uid}"}
    conn = pika.BlockingConnection(params)

    def find() -> str | None:
        for c in admin.get(f"/api/vhosts/{world.v}/connections").json():
            if c.get("client_properties", {}).get("connection_name") == f"matrix-{world.uid}":
                return c["name"]
        return None

    name = poll(find, timeout=20.0, what="the admin's connection")  # RabbitMQ: seconds
    yield str(name)
    if conn.is_open:
        with contextlib.suppress(Exception):  # closed by the test through the API
            conn.close()


def user_client(api_base: str, name: str) -> httpx.Client:
    """A fresh connection per request: RabbitMQ closes the socket after some refusals."""
    return httpx.Client(base_url=api_base, auth=(name, PASSWORD), timeout=15,
                        limits=httpx.Limits(max_keepalive_connections=0))


def expected(tag: str, permitted: bool) -> dict[str, int | tuple[int, ...]]:
    """RabbitMQ 3.10's answers (checked against a real one) for one kind of user."""
    admin = tag == "administrator"
    policymaker = tag in ("policymaker", "administrator")
    monitor = tag in ("monitoring", "administrator")
    vhost_ok = 200 if (permitted or admin) else 401
    op = (200, 201, 204) if permitted else 401
    return {
        "GET queue": vhost_ok,
        "GET exchange": vhost_ok,
        "GET vhost bindings": vhost_ok,
        "GET vhost policies": vhost_ok,
        "GET queue bindings": vhost_ok,
        "PUT queue": op,
        "DELETE own queue": (404, 401) if admin and not permitted else op,
        "PUT exchange": op,
        "DELETE own exchange": (404, 401) if admin and not permitted else op,
        "POST publish": op,
        "POST get": op,
        "DELETE contents": op,
        "POST binding": op,
        "GET aliveness": op,
        "PUT policy": (201, 204) if admin or (policymaker and permitted) else 401,
        "GET vhost": 200 if admin else 401,
        "GET users": 200 if admin else 401,
        "PUT permissions": (201, 204) if admin else 401,
        "GET definitions": 200 if admin else 401,
        "GET nodes": 200 if monitor else 401,
        "GET overview": 200,
        "GET queues": 200,
    }


def observe(client: httpx.Client, w: World, name: str) -> dict[str, int]:
    own_q, own_x = f"own-q-{name}", f"own-x-{name}"
    v = w.v
    calls: dict[str, tuple[str, str, object]] = {
        "GET queue": ("GET", f"/api/queues/{v}/{w.queue}", None),
        "GET exchange": ("GET", f"/api/exchanges/{v}/{w.exchange}", None),
        "GET vhost bindings": ("GET", f"/api/bindings/{v}", None),
        "GET vhost policies": ("GET", f"/api/policies/{v}", None),
        "GET queue bindings": ("GET", f"/api/queues/{v}/{w.queue}/bindings", None),
        "PUT queue": ("PUT", f"/api/queues/{v}/{own_q}", {}),
        "DELETE own queue": ("DELETE", f"/api/queues/{v}/{own_q}", None),
        "PUT exchange": ("PUT", f"/api/exchanges/{v}/{own_x}", {"type": "fanout"}),
        "DELETE own exchange": ("DELETE", f"/api/exchanges/{v}/{own_x}", None),
        "POST publish": ("POST", f"/api/exchanges/{v}/{w.exchange}/publish", PUBLISH),
        "POST get": ("POST", f"/api/queues/{v}/{w.queue}/get", GET),
        "DELETE contents": ("DELETE", f"/api/queues/{v}/{w.queue}/contents", None),
        "POST binding": ("POST", f"/api/bindings/{v}/e/{w.exchange}/q/{w.queue}",
                         {"routing_key": f"k-{name}"}),
        "GET aliveness": ("GET", f"/api/aliveness-test/{v}", None),
        "PUT policy": ("PUT", f"/api/policies/{v}/pol-{name}",
                       {"pattern": "^nothing-matches$", "definition": {"max-length": 5}}),
        "GET vhost": ("GET", f"/api/vhosts/{v}", None),
        "GET users": ("GET", "/api/users", None),
        "PUT permissions": ("PUT", f"/api/permissions/{v}/{name}",
                            {"configure": ".*", "write": ".*", "read": ".*"}),
        "GET definitions": ("GET", "/api/definitions", None),
        "GET nodes": ("GET", "/api/nodes", None),
        "GET overview": ("GET", "/api/overview", None),
        "GET queues": ("GET", f"/api/queues?page=1&page_size=10&name={w.queue}", None),
    }
    seen = {}
    for key, (method, path, body) in calls.items():
        resp = client.request(method, path, json=body)
        seen[key] = resp.status_code
        if resp.status_code >= 400:
            doc = resp.json()
            assert set(doc) == {"error", "reason"}, (key, doc)
    return seen


def matches(got: int, want: int | tuple[int, ...]) -> bool:
    return got in want if isinstance(want, tuple) else got == want


@pytest.mark.parametrize("permitted", [False, True], ids=["no-perms", "perms"])
@pytest.mark.parametrize("tag", TAGS)
def test_matrix(tag: str, permitted: bool, api_base: str, world: World,
                user_factory: Callable[[str, bool], str], admin: httpx.Client) -> None:
    name = user_factory(tag, permitted)
    with user_client(api_base, name) as client:
        seen = observe(client, world, name)
        page = client.get("/api/queues", params={"page": 1, "page_size": 100,
                                                 "name": world.queue}).json()
        queues = [(q["vhost"], q["name"]) for q in page["items"]]
        vhosts = [v["name"] for v in client.get("/api/vhosts").json()]
    want = expected(tag, permitted)
    wrong = {k: (seen[k], want[k]) for k in want if not matches(seen[k], want[k])}
    assert not wrong, f"{tag} {'with' if permitted else 'without'} permissions: {wrong}"
    # lists hold only what the user may see
    assert ((world.vhost, world.queue) in queues) == (permitted or tag == "administrator")
    assert (world.vhost in vhosts) == (permitted or tag in ("monitoring", "administrator"))
    admin.delete(f"/api/policies/{world.v}/pol-{name}")


@pytest.mark.parametrize("tag", TAGS)
def test_connections_of_others(tag: str, api_base: str, world: World, guest_connection: str,
                               user_factory: Callable[[str, bool], str]) -> None:
    """Others' connections: listed and readable for monitoring users, closable only by
    administrators (monitoring is not enough)."""
    name = user_factory(tag, True)
    monitor = tag in ("monitoring", "administrator")
    path = f"/api/connections/{quote(guest_connection, safe='')}"
    with user_client(api_base, name) as client:
        listed = [c["name"] for c in client.get("/api/connections").json()]
        assert (guest_connection in listed) == monitor
        assert client.get(path).status_code == (200 if monitor else 401)
        closed = client.delete(path)
        assert closed.status_code == (204 if tag == "administrator" else 401), closed.text


@pytest.mark.extension
def test_every_route_has_a_rule() -> None:
    """A route without an ENDPOINT_RULES entry would fall back to administrator-only;
    this keeps every rule a decision rather than a default."""
    from smartbroker.management.authz import ENDPOINT_RULES
    from smartbroker.management.routers import ROUTERS

    missing = []
    for router in ROUTERS:
        for route in router.routes:
            path = getattr(route, "path", "")
            for method in getattr(route, "methods", None) or ():
                if path.startswith("/api") and method != "HEAD" \
                        and (method, path) not in ENDPOINT_RULES:
                    missing.append(f"{method} {path}")
    assert not missing
