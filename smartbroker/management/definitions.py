"""Definitions export/import in RabbitMQ's JSON format.

Export leaves out what RabbitMQ leaves out: exclusive queues, the default and ``amq.*``
exchanges, and default-exchange bindings. Import is idempotent: existing objects that
match are kept; an inequivalent redeclare is a 400 naming the object.
"""

from __future__ import annotations

from typing import Any

from smartbroker.broker.exchange import Exchange
from smartbroker.broker.permissions import Permission, TopicPermission
from smartbroker.errors import AMQPError
from smartbroker.management.errors import bad_request
from smartbroker.management.formatting import product_version
from smartbroker.management.models import UserBody, VhostBody
from smartbroker.management.names import check_numbers
from smartbroker.management.views import user_json

COMPAT_VERSION = "3.13.7"


def export(state: Any, only_vhost: str | None = None) -> dict[str, Any]:
    from smartbroker.management.formatting import jsonable

    broker = state.broker
    vhosts = [v for v in broker.vhosts.values() if only_vhost in (None, v.name)]
    queues, exchanges, bindings = [], [], []
    for vh in vhosts:
        for q in vh.queues.values():
            if q.exclusive_owner is None:
                queues.append({"name": q.name, "vhost": vh.name, "durable": q.durable,
                               "auto_delete": q.auto_delete, "arguments": jsonable(q.arguments)})
        for ex in vh.exchanges.values():
            if ex.name == "" or ex.name.startswith("amq."):
                continue
            exchanges.append({"name": ex.name, "vhost": vh.name, "type": ex.type_name,
                              "durable": ex.durable, "auto_delete": ex.auto_delete,
                              "internal": ex.internal, "arguments": jsonable(ex.arguments)})
        for ex in vh.exchanges.values():
            if ex.name == "":
                continue
            for b in ex.bindings.values():
                dest = b.destination
                if not isinstance(dest, Exchange) and dest.exclusive_owner is not None:
                    continue
                bindings.append({"source": ex.name, "vhost": vh.name, "destination": dest.name,
                                 "destination_type": "exchange" if isinstance(dest, Exchange)
                                 else "queue",
                                 "routing_key": b.routing_key, "arguments": jsonable(b.arguments)})
    doc: dict[str, Any] = {
        "rabbit_version": COMPAT_VERSION,
        "rabbitmq_version": COMPAT_VERSION,
        "product_name": "smartbroker",
        "product_version": product_version(),
    }
    if only_vhost is None:
        doc["users"] = [user_json(u) for u in broker.users.users.values()]
        doc["vhosts"] = [{"name": v.name, **_vhost_meta(state, v.name)} for v in vhosts]
        doc["permissions"] = [p.as_json() for p in state.broker.permissions.entries.values()]
        doc["topic_permissions"] = [p.as_json() for p in state.broker.permissions.topic.values()]
        doc["parameters"] = []
        doc["global_parameters"] = []
    doc["policies"] = [p.as_json() for vh in vhosts
                       for p in getattr(vh, "policies", {}).values()]
    doc["queues"] = queues
    doc["exchanges"] = exchanges
    doc["bindings"] = bindings
    return doc


def _vhost_meta(state: Any, name: str) -> dict[str, Any]:
    meta = state.vhost_meta.get(name)
    if not meta:
        return {}
    return {"description": meta.get("description", ""), "tags": meta.get("tags", []),
            "metadata": {"description": meta.get("description", ""),
                         "tags": meta.get("tags", [])}}


def set_policy(broker: Any, vhost: str, item: dict[str, Any]) -> None:
    """Hand a RabbitMQ policy document to the core's policies (400 if it refuses it)."""
    from smartbroker.broker.policies import Policy, PolicyError

    vh = broker.vhosts.get(vhost)
    if vh is None:
        raise bad_request(f"vhost '{vhost}' does not exist")
    try:
        priority = int(item.get("priority", 0))
        policy = Policy(item["name"], item["pattern"], dict(item["definition"] or {}),
                        priority=priority, apply_to=item.get("apply-to", "all"), vhost=vhost)
    except (PolicyError, TypeError, ValueError) as exc:
        raise bad_request(str(exc)) from None
    vh.set_policy(policy)


def _need(item: Any, *keys: str) -> None:
    if not isinstance(item, dict):
        raise bad_request(f"expected an object, got {item!r}")
    for key in keys:
        if key not in item:
            raise bad_request(f"definition {item!r} has no '{key}'")
        if not isinstance(item[key], str):
            raise bad_request(f"definition {item!r}: '{key}' must be a string")


def _permissions(doc: dict[str, Any]) -> tuple[list[Permission], list[TopicPermission]]:
    """The document's permissions, every regex compiled (``InvalidRegex`` is a 400 with
    RabbitMQ's reason) before anything of the document is applied."""
    perms = []
    for item in _items(doc, "permissions"):
        _need(item, "user", "vhost")
        perms.append(Permission(item["user"], item["vhost"], item.get("configure", ".*"),
                                item.get("write", ".*"), item.get("read", ".*")))
    topics = []
    for item in _items(doc, "topic_permissions"):
        _need(item, "user", "vhost", "exchange")
        topics.append(TopicPermission(item["user"], item["vhost"], item["exchange"],
                                      item.get("write", ".*"), item.get("read", ".*")))
    return perms, topics


def _items(doc: dict[str, Any], key: str) -> list[Any]:
    items = doc.get(key) or []
    if not isinstance(items, list):
        raise bad_request(f"'{key}' must be a list")
    return items


def import_(state: Any, doc: Any, only_vhost: str | None = None) -> None:
    """Apply a definitions document (vhosts, users, permissions, policies, exchanges,
    queues, bindings, in that order)."""
    from smartbroker.management.routers.users import put_user_record
    from smartbroker.management.routers.vhosts import create_vhost

    if not isinstance(doc, dict):
        raise bad_request("definitions must be a JSON object")
    check_numbers(doc, "definitions")
    broker = state.broker
    permissions, topic_permissions = _permissions(doc)  # all valid, or nothing is applied

    def vhost_of(item: dict[str, Any]) -> str:
        return only_vhost if only_vhost is not None else item.get("vhost", "/")

    for item in _items(doc, "vhosts"):
        _need(item, "name")
        meta = item.get("metadata") or {}
        create_vhost(state, item["name"], VhostBody(
            description=item.get("description", meta.get("description", "")),
            tags=item.get("tags", meta.get("tags", "")) or ""))
    for item in _items(doc, "users"):
        _need(item, "name")
        put_user_record(state, item["name"], UserBody.model_validate(item))
    for perm in permissions:
        state.broker.permissions.set(perm)
    for topic in topic_permissions:
        state.broker.permissions.set_topic(topic)
    for item in _items(doc, "policies"):
        _need(item, "name", "pattern")
        if not isinstance(item.get("definition"), dict):  # an object, as RabbitMQ exports it
            raise bad_request(f"definition {item!r}: 'definition' must be an object")
        set_policy(broker, vhost_of(item), item)

    def vhost(item: dict[str, Any]) -> Any:
        name = vhost_of(item)
        if name not in broker.vhosts:
            raise bad_request(f"vhost '{name}' does not exist")
        return broker.vhosts[name]

    try:
        for item in _items(doc, "exchanges"):
            _need(item, "name")
            vh = vhost(item)
            vh.declare_exchange(item["name"], item.get("type", "direct"),
                                durable=bool(item.get("durable", True)),
                                auto_delete=bool(item.get("auto_delete", False)),
                                internal=bool(item.get("internal", False)),
                                arguments=item.get("arguments") or {})
        for item in _items(doc, "queues"):
            _need(item, "name")
            if str(item["name"]).startswith("amq."):
                continue  # as RabbitMQ: server-named (amq.gen-*) queues are not recreated
            vh = vhost(item)
            vh.declare_queue(item["name"], durable=bool(item.get("durable", True)),
                             auto_delete=bool(item.get("auto_delete", False)),
                             arguments=item.get("arguments") or {})
        for item in _items(doc, "bindings"):
            _need(item, "source", "destination")
            vh = vhost(item)
            kind = item.get("destination_type", "queue")
            dest = (vh.queues.get(item["destination"]) if kind == "queue"
                    else vh.exchanges.get(item["destination"]))
            if dest is None:
                raise bad_request(f"no {kind} '{item['destination']}' in vhost '{vh.name}'")
            vh.bind(item["source"], dest, item.get("routing_key", ""), item.get("arguments") or {})
    except AMQPError as err:
        raise bad_request(err.text) from None
