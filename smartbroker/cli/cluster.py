"""``smartbroker cluster status|forget``: the cluster as etcd holds it.

These read etcd itself rather than a node's API, as ``rabbitmqctl cluster_status`` asks
the cluster's own store: they answer when every node is down, and ``forget`` must act on
a node that cannot answer. Up means the node's lease is alive (``nodes/<name>``); down, a
node seen before (``known/<name>``) whose lease is gone; leaders, the queues whose
placement names the node; followers, the replica sets (``replica/isr/``) it is in without
leading, and out of sync, those where it is a member not in the ISR (the ISR lag).
Forgetting a node deletes the queues it led (``_led_by``) and takes it out of the
replica sets of the others (``replica_change.drop_everywhere``).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Annotated, Any

import typer

from smartbroker.cli.common import CliError, JsonOpt, handle_errors, print_json, print_table

cluster_app = typer.Typer(help="Cluster mode (etcd): nodes up or down, forget a node, "
                               "rebalance leaders.",
                          no_args_is_help=True)

EtcdOpt = Annotated[str | None, typer.Option(
    "--etcd", envvar="SMARTBROKER_ETCD", help="etcd endpoints URL[,URL...] of the cluster")]
ClusterNameOpt = Annotated[str, typer.Option(
    "--cluster-name", envvar="SMARTBROKER_CLUSTER_NAME", help="The cluster's name")]


def register(app: typer.Typer) -> None:
    app.add_typer(cluster_app, name="cluster")


def connect_etcd(etcd: str | None, cluster_name: str) -> Any:
    """An EtcdClient (not yet connected) for ``--etcd``, or CliError."""
    from smartbroker.cluster.etcd_client import EtcdClient
    from smartbroker.config import etcd_endpoint

    if not etcd:
        raise CliError("no etcd endpoints: give --etcd URL[,URL...] or set SMARTBROKER_ETCD")
    try:
        endpoints = [etcd_endpoint(e) for e in etcd.split(",") if e.strip()]
        return EtcdClient(endpoints, cluster_name)
    except ValueError as exc:
        raise CliError(str(exc)) from None


def run_etcd(coro: Any) -> Any:
    """Run ``coro``; etcd unreachable is a CliError (one line)."""
    from smartbroker.cluster.etcd_client import EtcdUnavailable

    try:
        return asyncio.run(coro)
    except EtcdUnavailable as exc:
        raise CliError(str(exc)) from None


async def _status(etcd: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(every node, the replica sets with members out of sync: the ISR lag)."""
    from smartbroker.cli.replica_state import read
    from smartbroker.cluster.membership import KNOWN, NODES, Member, NodeRecord, describe
    from smartbroker.cluster.placement import PREFIX, Placement

    async with etcd:
        up, _ = await etcd.range(NODES)
        known, _ = await etcd.range(KNOWN)
        placements, _ = await etcd.range(PREFIX)
        replicas = await read(etcd)
    records: dict[str, NodeRecord | None] = {}
    for kv in known:
        records[kv.key[len(KNOWN):].decode(errors="replace")] = NodeRecord.from_json(kv.value)
    running = set()
    for kv in up:
        name = kv.key[len(NODES):].decode(errors="replace")
        running.add(name)
        records[name] = NodeRecord.from_json(kv.value) or records.get(name)
    leaders: dict[str, int] = {}
    partitions: dict[str, int] = {}  # stream partitions led, when spread over the nodes
    for kv in placements:
        placement = Placement.decode(kv.value)
        if placement is not None:
            leaders[placement.leader] = leaders.get(placement.leader, 0) + 1
            for node in placement.partitions:
                partitions[node] = partitions.get(node, 0) + 1
    followers: Counter[str] = Counter()  # replicas held of logs led by another node
    lagging: Counter[str] = Counter()  # of those, the ones not in the ISR
    behind = []
    for r in replicas.logs:
        if r.leader is not None:  # without a leader (an election due) no one follows
            followers.update(m for m in r.members if m != r.leader)
        late = [m for m in r.members if m not in r.isr]
        lagging.update(late)
        if late:
            behind.append({"vhost": r.vhost, "queue": r.queue, "partition": r.partition,
                           "leader": r.leader, "members": r.members, "isr": r.isr,
                           "out_of_sync": late})
    now = time.time()
    return [{**describe(Member(n, n in running, records[n]), now), "leaders": leaders.get(n, 0),
             "partition_leaders": partitions.get(n, 0), "followers": followers[n],
             "out_of_sync": lagging[n]} for n in sorted(records)], behind


@cluster_app.command("status")
@handle_errors
def status(etcd: EtcdOpt = None, cluster_name: ClusterNameOpt = "smartbroker",
           as_json: JsonOpt = False) -> None:
    """Every node of the cluster: up or down, where it listens, how many queues it leads
    and follows (replicas), how many of its replicas are out of sync (the ISR lag)."""
    nodes, behind = run_etcd(_status(connect_etcd(etcd, cluster_name)))
    if as_json:
        print_json({"cluster_name": cluster_name, "nodes": nodes, "out_of_sync": behind})
        return
    if not nodes:
        typer.echo(f"cluster {cluster_name}: no nodes")
        return
    print_table(["node", "status", "host", "amqp", "http", "cluster", "leaders", "partitions",
                 "followers", "out of sync", "uptime", "version"],
                [[n["name"], "up" if n["running"] else "down", n.get("host", "-"),
                  n.get("amqp_port", "-"), n.get("http_port", "-"),
                  n.get("cluster_port", "-"), n["leaders"], n["partition_leaders"],
                  n["followers"], n["out_of_sync"],
                  _uptime(n["uptime"]) if n["running"] else "-",
                  n.get("product_version", "-")] for n in nodes],
                title=f"cluster {cluster_name}: {sum(n['running'] for n in nodes)} of "
                      f"{len(nodes)} node(s) up")
    for b in behind:
        part = "" if b["partition"] is None else f" partition {b['partition']}"
        typer.echo(f"out of sync: queue '{b['queue']}'{part} in vhost '{b['vhost']}': "
                   f"{', '.join(b['out_of_sync'])} (leader {b['leader'] or 'none'})")


def _uptime(ms: int) -> str:
    """``1d2h``, ``3h4m``, ``5m6s``, ``7s``: the two largest units."""
    seconds = ms // 1000
    spans = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))
    for i, (unit, span) in enumerate(spans[:-1]):
        if seconds >= span:
            small, small_span = spans[i + 1]
            return f"{seconds // span}{unit}{(seconds % span) // small_span}{small}"
    return f"{seconds}s"


FORGET_OPS = 100  # deletions per etcd transaction (etcd takes at most 128 operations)


async def _forget(etcd: Any, node: str) -> tuple[str | None, int]:
    """(None when forgotten, else why not; how many queues went with it)."""
    from smartbroker.cli.replica_change import drop_everywhere
    from smartbroker.cluster.etcd_client import Delete
    from smartbroker.cluster.membership import KNOWN, NODES

    async with etcd:
        if await etcd.get(NODES + node) is not None:
            return (f"node {node!r} is running: stop it first (only a node that is down "
                    "can be forgotten)"), 0
        if await etcd.get(KNOWN + node) is None:
            return f"no node {node!r} in cluster {etcd.cluster_name!r}", 0
        keys, queues = await _led_by(etcd, node)
        # each transaction carries the check: a node starting meanwhile is not forgotten
        # (what was deleted before it started stays deleted, as RabbitMQ's forget is not
        # undone either); the node's own record goes last
        batches = [keys[i:i + FORGET_OPS] for i in range(0, len(keys), FORGET_OPS)]
        for batch in [*batches, [KNOWN.encode() + node.encode()]]:
            done = await etcd.commit([Delete(k) for k in batch], absent=[NODES + node])
            if done is None:
                return f"node {node!r} has just started: not forgotten", 0
        await drop_everywhere(etcd, node)  # the replicas it held of the others' queues
        return None, queues


async def _led_by(etcd: Any, node: str) -> tuple[list[bytes], int]:
    """The keys to delete with ``node``, as RabbitMQ's forget_cluster_node deletes the
    durable classic queues whose home node it was (rabbit_amqqueue:forget_all_durable:
    no replica to recover them from; a replicated queue it still leads had no member in
    sync to take over): each queue's placement, definition, replica records and bindings
    to it, its Kafka topic description, and the Kafka groups it coordinated. The other nodes see the deletions through their watches
    and drop their proxies. Returns (keys, number of queues)."""
    from smartbroker.cluster import definitions_keys as dk
    from smartbroker.cluster.placement import PREFIX, Placement, parse_key

    placements, _ = await etcd.range(PREFIX)
    gone: set[tuple[str, str]] = set()
    keys: list[bytes] = []
    for kv in placements:
        placement, names = Placement.decode(kv.value), parse_key(kv.key)
        if placement is not None and names is not None and placement.leader == node:
            gone.add(names)
            keys += [kv.key, dk.key("queues", *names),
                     b"kafka/topics/" + dk.seg(names[0]) + b"/" + dk.seg(names[1])]
    if gone:
        replicas, _ = await etcd.range(b"replica/isr/")  # their replica sets go too
        keys += [kv.key for kv in replicas if _log_queue(kv.key) in gone]
        bindings, _ = await etcd.range(dk.ROOT + b"bindings/")
        for kv in bindings:
            _table, names = dk.split(kv.key)
            if len(names) > 3 and names[2] == "queue" and (names[0], names[3]) in gone:
                keys.append(kv.key)
    groups, _ = await etcd.range(b"kafka/groups/")
    keys += [kv.key for kv in groups if kv.value == node.encode()]
    return keys, len(gone)


def _log_queue(key: bytes) -> tuple[str, str] | None:
    """(vhost, queue) of a ``replica/isr/<log id>`` key."""
    from smartbroker.cluster.definitions_keys import unseg

    parts = key[len(b"replica/isr/"):].split(b"/")
    return (unseg(parts[0]), unseg(parts[1])) if len(parts) in (2, 3) else None


@cluster_app.command("forget")
@handle_errors
def forget(node: Annotated[str, typer.Argument(help="The node's name")],
           etcd: EtcdOpt = None, cluster_name: ClusterNameOpt = "smartbroker") -> None:
    """Remove a node that is down from the cluster (RabbitMQ's forget_cluster_node)."""
    why, queues = run_etcd(_forget(connect_etcd(etcd, cluster_name), node))
    if why is not None:
        raise CliError(why)
    typer.echo(f"node {node} forgotten" + (f", with the {queues} queue(s) it led"
                                          if queues else ""))
