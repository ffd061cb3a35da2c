"""Broker objects rendered with RabbitMQ's management field names."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from smartbroker.broker.exchange import Exchange
from smartbroker.management.formatting import jsonable, properties_key
from smartbroker.management.replicas import (
    describe_partitions,
    leader_of,
    quorum_counts,
    replica_fields,
)

if TYPE_CHECKING:
    from smartbroker.broker.vhost import VirtualHost
    from smartbroker.management.state import ManagementState


def _rate(rate: float = 0.0) -> dict[str, Any]:
    return {"rate": rate}


def message_stats(stats: dict[str, int], rates: tuple[float, ...] | None = None) -> dict[str, Any]:
    """RabbitMQ's message_stats; ``rates`` are the counters' last sampled rates, in
    ``state.STAT_KEYS`` order (``MessageRates.of``), None for none yet."""
    out: dict[str, Any] = {}
    for i, (src, names) in enumerate((("publish", ("publish",)),
                                      ("deliver", ("deliver_get", "deliver")),
                                      ("ack", ("ack",)), ("redeliver", ("redeliver",)))):
        rate = rates[i] if rates is not None else 0.0
        for name in names:
            out[name] = stats.get(src, 0)
            out[f"{name}_details"] = _rate(rate)
    return out


def queue_type(q: Any) -> str:
    return q.type_name


def queue_json(q: Any, state: ManagementState) -> dict[str, Any]:
    ready, unacked = q.message_count, q.unacked_count
    owner = q.exclusive_owner
    consumers = list(q.consumers)
    return {
        "name": q.name,
        "vhost": q.vhost,
        "durable": q.durable,
        "auto_delete": q.auto_delete,
        "exclusive": owner is not None,
        "owner_pid_details": _conn_ref(owner) if owner is not None else None,
        "arguments": jsonable(q.arguments),
        "type": queue_type(q),
        "state": getattr(q, "state", "running"),  # cluster: "down" with its leader
        # cluster: the leader's node (a stream spread over the nodes: its stream leader's)
        "node": leader_of(q, state),
        "policy": None,
        "messages": ready + unacked,
        "messages_details": _rate(0),
        "messages_ready": ready,
        "messages_ready_details": _rate(0),
        "messages_unacknowledged": unacked,
        "messages_unacknowledged_details": _rate(0),
        "message_bytes_ready": q.message_bytes_ready,
        "consumers": q.consumer_count,
        "exclusive_consumer_tag": consumers[0].tag if consumers and consumers[0].exclusive else None,
        "consumer_utilisation": None,
        "message_stats": message_stats(q.stats, state.rates.of(id(q))),
        # a stream led by another node (cluster/remote_queue.py) has no partitions here
        **(_stream_fields(q, state) if q.capabilities.offset_log and hasattr(q, "partitions")
           else {}),
        # RabbitMQ's quorum and stream fields: leader, members, online (replicas.py)
        **(replica_fields(q, state) if q.type_name in ("quorum", "stream") else {}),
        **(quorum_counts(q, ready + unacked) if q.type_name == "quorum" else {}),
    }


def _stream_fields(q: Any, state: ManagementState) -> dict[str, Any]:
    """A stream's messages are the records in its log (nothing is consumed away); its
    partitions' offsets and its consumer groups as /api/streams shows them."""
    from smartbroker.management.routers.streams import group_names, partition_json

    partitions = [partition_json(part) for part in q.partitions]
    spread = getattr(q, "spread", None)  # cluster: partitions led by several nodes
    if spread is not None:
        spread.describe(partitions)  # each one's leader (cluster/partition_spread.py)
        describe_partitions(q, state, partitions)  # and replicas, when replicated
    return {"messages": sum(p["messages"] for p in partitions),
            "message_bytes": sum(p["size_bytes"] for p in partitions),
            "stream": {"partition_count": len(partitions), "partitions": partitions},
            "groups": group_names(q)}


def exchange_json(ex: Exchange, vhost: VirtualHost) -> dict[str, Any]:
    return {
        "name": ex.name,
        "vhost": vhost.name,
        "type": ex.type_name,
        "durable": ex.durable,
        "auto_delete": ex.auto_delete,
        "internal": ex.internal,
        "arguments": jsonable(ex.arguments),
        "user_who_performed_action": "rmq-internal" if ex.name.startswith("amq.") or not ex.name
        else "",
        "policy": None,
    }


def bindings_of(vhost: VirtualHost) -> list[dict[str, Any]]:
    """Every binding in the vhost, default-exchange ones first, as RabbitMQ lists them."""
    return [binding_json(*row) for row in binding_rows(vhost)]


BindingRow = tuple[str, str, str, str, str, Any]  # binding_json's arguments


def binding_rows(vhost: VirtualHost) -> list[BindingRow]:
    """``bindings_of`` before rendering: cheap tuples, so a long list can be paged and
    rendered in slices (``listing.list_response``)."""
    out: list[BindingRow] = [(vhost.name, "", q.name, "queue", q.name, {})
                             for q in list(vhost.queues.values())]
    for ex in list(vhost.exchanges.values()):
        if ex.name == "":
            continue
        for b in list(ex.bindings.values()):
            dest = b.destination
            kind = "exchange" if isinstance(dest, Exchange) else "queue"
            out.append((vhost.name, ex.name, dest.name, kind, b.routing_key, b.arguments))
    return out


def binding_json(vhost: str, source: str, destination: str, kind: str, routing_key: str,
                 arguments: Any) -> dict[str, Any]:
    return {
        "source": source,
        "vhost": vhost,
        "destination": destination,
        "destination_type": kind,
        "routing_key": routing_key,
        "arguments": jsonable(arguments),
        "properties_key": properties_key(routing_key, arguments),
    }


def _split_peer(peer: str) -> tuple[str, int | None]:
    host, _, port = peer.rpartition(":")
    try:
        return host, int(port)
    except ValueError:
        return peer, None


def _conn_ref(conn: Any) -> dict[str, Any]:
    host, port = _split_peer(getattr(conn, "peer", "?"))
    return {"name": getattr(conn, "name", "?"), "peer_host": host, "peer_port": port}


def connection_json(conn: Any, state: ManagementState) -> dict[str, Any]:
    peer_host, peer_port = _split_peer(conn.peer)
    local = conn.name.split(" -> ", 1)[-1]
    host, port = _split_peer(local)
    user = getattr(conn.user, "name", None)
    return {
        "name": conn.name,
        "node": state.node,
        "vhost": conn.vhost.name if conn.vhost is not None else None,
        "user": user,
        "user_who_performed_action": user,
        "peer_host": peer_host,
        "peer_port": peer_port,
        "host": host,
        "port": port,
        "state": ("blocked" if conn.blocked else "running") if conn.vhost is not None else "starting",
        "type": "network",
        # a Kafka connection (kafka/connections.py) says its own; AMQP's are the defaults
        "protocol": getattr(conn, "protocol", "AMQP 0-9-1"),
        "auth_mechanism": getattr(conn, "auth_mechanism", "PLAIN"),
        "ssl": getattr(conn, "ssl", False),
        "channels": len(conn.channels),
        "channel_max": conn.channel_max,
        "frame_max": conn.frame_max,
        "timeout": conn.heartbeat,
        "client_properties": jsonable(conn.client_properties),
        "connected_at": int(conn.connected_at * 1000),
        "recv_oct": conn.bytes_in,
        "recv_oct_details": _rate(0),
        "send_oct": conn.bytes_out,
        "send_oct_details": _rate(0),
    }


def channel_name(conn: Any, number: int) -> str:
    return f"{conn.name} ({number})"


def channel_json(conn: Any, ch: Any, state: ManagementState) -> dict[str, Any]:
    return {
        "name": channel_name(conn, ch.number),
        "number": ch.number,
        "node": state.node,
        "vhost": conn.vhost.name if conn.vhost is not None else None,
        "user": getattr(conn.user, "name", None),
        "connection_details": _conn_ref(conn),
        "state": "closing" if ch.closing else ("flow" if not ch.flow_active else "running"),
        "consumer_count": len(ch.consumers),
        "messages_unacknowledged": len(ch.unacked),
        "messages_unconfirmed": max(ch.publish_seq - ch.confirm_sent, 0) if ch.confirm else 0,
        "prefetch_count": ch.consumer_prefetch,
        "global_prefetch_count": ch.global_prefetch,
        "confirm": ch.confirm,
        "transactional": ch.tx is not None,
    }


def consumer_json(conn: Any, ch: Any, consumer: Any) -> dict[str, Any]:
    q = consumer.queue
    return {
        "consumer_tag": consumer.tag,
        "channel_details": {"name": channel_name(conn, ch.number), "number": ch.number,
                            "connection_name": conn.name, **_conn_ref(conn)},
        "queue": {"name": q.name, "vhost": q.vhost},
        "ack_required": not consumer.no_ack,
        "exclusive": consumer.exclusive,
        "prefetch_count": getattr(consumer, "shown_prefetch", consumer.prefetch),
        "arguments": jsonable(consumer.arguments),
        "active": True,
        "activity_status": "up",
        "consumer_timeout": None,
    }


def open_connections(state: ManagementState) -> list[Any]:
    conns = [c for c in state.broker.connections if c.vhost is not None]
    return sorted(conns, key=lambda c: c.connected_at)


def vhost_json(vhost: VirtualHost, state: ManagementState) -> dict[str, Any]:
    ready = unacked = 0
    for q in vhost.queues.values():
        ready += q.message_count
        unacked += q.unacked_count
    meta = state.vhost_meta.get(vhost.name, {})
    description = meta.get("description", "Default virtual host"
                           if vhost.name == state.broker.config.default_vhost else "")
    tags = meta.get("tags", [])
    conns = [c for c in state.broker.connections if c.vhost is vhost]
    return {
        "name": vhost.name,
        "description": description,
        "tags": tags,
        "metadata": {"description": description, "tags": tags},
        "default_queue_type": meta.get("default_queue_type", "classic"),
        "tracing": False,
        "cluster_state": {state.node: "running"},
        "messages": ready + unacked,
        "messages_ready": ready,
        "messages_unacknowledged": unacked,
        "recv_oct": sum(c.bytes_in for c in conns),
        "send_oct": sum(c.bytes_out for c in conns),
    }


def user_json(user: Any) -> dict[str, Any]:
    return {"name": user.name, "password_hash": user.password_hash,
            "hashing_algorithm": "rabbit_password_hashing_sha256", "tags": list(user.tags),
            "limits": {}}
