"""Overview, auth, errors, vhosts, users, permissions, health."""

from __future__ import annotations

import time
from urllib.parse import urlsplit

import httpx
import pika
import pytest


def test_overview_has_rabbitmq_fields(api: httpx.Client) -> None:
    doc = api.get("/api/overview").json()
    for key in ("rabbitmq_version", "management_version", "node", "object_totals",
                "queue_totals", "listeners", "message_stats"):
        assert key in doc
    assert {"connections", "channels", "exchanges", "queues", "consumers"} <= set(doc["object_totals"])
    assert {"messages", "messages_ready", "messages_unacknowledged"} <= set(doc["queue_totals"])
    assert any(lst["protocol"] == "amqp" for lst in doc["listeners"])


def test_whoami(api: httpx.Client, api_auth: tuple[str, str]) -> None:
    doc = api.get("/api/whoami").json()
    assert doc["name"] == api_auth[0]
    assert "administrator" in doc["tags"]


def test_bad_password_is_401_with_challenge(api_base: str) -> None:
    resp = httpx.get(f"{api_base}/api/overview", auth=("guest", "wrong"))
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Basic ")
    assert resp.json()["error"] == "not_authorized"


def test_no_credentials_is_401(api_base: str) -> None:
    assert httpx.get(f"{api_base}/api/queues").status_code == 401


def test_unknown_object_is_rabbitmq_404(api: httpx.Client) -> None:
    resp = api.get("/api/queues/%2F/no-such-queue-here")
    assert resp.status_code == 404
    assert resp.json() == {"error": "Object Not Found", "reason": "Not Found"}
    assert api.get("/api/vhosts/no-such-vhost").status_code == 404


def test_nodes(api: httpx.Client) -> None:
    nodes = api.get("/api/nodes").json()
    assert len(nodes) >= 1 and nodes[0]["running"] is True and "name" in nodes[0]


def test_vhosts_list_and_one(api: httpx.Client) -> None:
    names = [v["name"] for v in api.get("/api/vhosts").json()]
    assert "/" in names
    doc = api.get("/api/vhosts/%2F").json()
    assert doc["name"] == "/"
    assert "messages" in doc


def test_vhost_create_and_delete(api: httpx.Client, uid: str) -> None:
    name = f"test-vh-{uid}"
    assert api.put(f"/api/vhosts/{name}").status_code == 201
    assert api.put(f"/api/vhosts/{name}").status_code == 204
    assert api.get(f"/api/vhosts/{name}").json()["name"] == name
    assert api.put(f"/api/queues/{name}/q1", json={}).status_code == 201
    assert api.delete(f"/api/vhosts/{name}").status_code == 204
    assert api.get(f"/api/vhosts/{name}").status_code == 404


def test_user_lifecycle_and_login(api: httpx.Client, api_base: str, uid: str) -> None:
    name = f"test-user-{uid}"
    assert api.put(f"/api/users/{name}", json={"password": "pw1", "tags": "management"}).status_code == 201
    user = api.get(f"/api/users/{name}").json()
    assert user["tags"] == ["management"]
    assert user["hashing_algorithm"] == "rabbit_password_hashing_sha256"
    assert httpx.get(f"{api_base}/api/whoami", auth=(name, "pw1")).json()["name"] == name
    assert api.put(f"/api/users/{name}", json={"password": "pw2", "tags": "management"}).status_code == 204
    assert httpx.get(f"{api_base}/api/whoami", auth=(name, "pw1")).status_code == 401
    assert httpx.get(f"{api_base}/api/whoami", auth=(name, "pw2")).status_code == 200
    assert name in [u["name"] for u in api.get("/api/users").json()]
    assert api.delete(f"/api/users/{name}").status_code == 204
    assert api.get(f"/api/users/{name}").status_code == 404


def test_user_without_management_tag_is_refused(api: httpx.Client, api_base: str, uid: str) -> None:
    name = f"test-plain-{uid}"
    api.put(f"/api/users/{name}", json={"password": "pw", "tags": ""})
    try:
        assert httpx.get(f"{api_base}/api/overview", auth=(name, "pw")).status_code == 401
    finally:
        api.delete(f"/api/users/{name}")


def test_permissions(api: httpx.Client, api_auth: tuple[str, str], uid: str) -> None:
    doc = api.get(f"/api/permissions/%2F/{api_auth[0]}").json()
    assert doc == {"user": api_auth[0], "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"}
    name = f"test-perm-{uid}"
    api.put(f"/api/users/{name}", json={"password": "pw", "tags": ""})
    try:
        assert api.get(f"/api/permissions/%2F/{name}").status_code == 404
        body = {"configure": "^q", "write": ".*", "read": ""}
        assert api.put(f"/api/permissions/%2F/{name}", json=body).status_code == 201
        assert api.get(f"/api/permissions/%2F/{name}").json()["configure"] == "^q"
        assert api.delete(f"/api/permissions/%2F/{name}").status_code == 204
    finally:
        api.delete(f"/api/users/{name}")


def test_health_alarms_and_aliveness(api: httpx.Client) -> None:
    assert api.get("/api/health/checks/alarms").json() == {"status": "ok"}
    assert api.get("/api/aliveness-test/%2F").json() == {"status": "ok"}


def test_bad_json_is_400(api: httpx.Client, queue: str) -> None:
    resp = api.post(f"/api/queues/%2F/{queue}/get", content=b"not json")
    assert resp.status_code == 400
    assert resp.json()["error"] == "bad_request"


@pytest.mark.extension
def test_metrics_prometheus(api: httpx.Client, api_base: str, queue: str, pub) -> None:
    pub("", queue, "m1")
    text = httpx.get(f"{api_base}/metrics").text
    line = f'rabbitmq_queue_messages_ready{{queue="{queue}",vhost="/"}} 1.0'
    assert line in text
    for name in ("rabbitmq_queue_messages_unacked", "rabbitmq_queue_consumers",
                 "rabbitmq_queue_messages_published_total", "rabbitmq_connections",
                 "rabbitmq_channels", "rabbitmq_connection_incoming_bytes_total",
                 "rabbitmq_connection_outgoing_bytes_total",
                 "rabbitmq_process_resident_memory_bytes",
                 "rabbitmq_global_messages_received_total"):
        assert f"\n{name}" in text, name


def test_health_endpoints_that_monitoring_tools_poll(api: httpx.Client, broker) -> None:
    """The older /api/healthchecks/node, port and protocol listener checks, quorum checks."""
    assert api.get("/api/healthchecks/node").json()["status"] == "ok"
    amqp_port = urlsplit(broker.url).port or 5672
    assert api.get(f"/api/health/checks/port-listener/{amqp_port}").json() == {
        "status": "ok", "port": amqp_port}
    missing = api.get("/api/health/checks/port-listener/1")
    assert missing.status_code == 503 and missing.json()["status"] == "failed"
    assert api.get("/api/health/checks/protocol-listener/amqp").json()["status"] == "ok"
    assert api.get("/api/health/checks/node-is-quorum-critical").json()["status"] == "ok"


def test_queue_details_list_its_consumers(api: httpx.Client, broker, qname: str) -> None:
    with pika.BlockingConnection(pika.URLParameters(broker.url)) as conn:
        ch = conn.channel()
        ch.queue_declare(qname, exclusive=True)
        ch.basic_qos(prefetch_count=7)
        ch.basic_consume(qname, lambda *a: None, consumer_tag="seen-by-api")
        deadline = time.monotonic() + 15  # RabbitMQ's statistics arrive every 5 s
        while not (consumers := api.get(f"/api/queues/%2F/{qname}").json()["consumer_details"]):
            assert time.monotonic() < deadline, "the consumer never showed up"
            conn.sleep(0.2)
    assert [(c["consumer_tag"], c["prefetch_count"], c["ack_required"]) for c in consumers] == [
        ("seen-by-api", 7, True)]
    assert consumers[0]["queue"] == {"name": qname, "vhost": "/"}


def test_cluster_name_and_node_limits(api: httpx.Client) -> None:
    assert api.get("/api/cluster-name").json()["name"]
    node = api.get("/api/nodes").json()[0]
    assert node["mem_limit"] > 0 and node["disk_free"] > 0 and node["fd_total"] > 0
    # on by default in both (RabbitMQ: 50000000 bytes; smartbroker: 50 MiB)
    assert isinstance(node["disk_free_limit"], int) and node["disk_free_limit"] > 0


def test_auth_settings_need_no_login_and_say_no_oauth(api_base: str) -> None:
    settings = httpx.get(f"{api_base}/api/auth", timeout=10)  # no credentials
    assert settings.status_code == 200 and settings.json()["enable_uaa"] is False
