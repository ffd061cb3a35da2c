"""``smartbroker streams add-replica|delete-replica``: RabbitMQ's ``rabbitmq-streams
add_replica|delete_replica``, for each partition of a stream (all by default,
``--partition N`` for one), on the records in etcd (``cluster/stream_members.py``), so
they work whichever nodes are up. A stream declared without replicas gains its first ones
this way (partition 0 first: the default order).

The new replica catches up and joins the ISR on its own (the partition's leader ships
its log); a replica that leads is asked to hand over to one in sync first. Each
partition's result is one line; a refusal is one line on stderr and exit code 1.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from smartbroker.cli.cluster import ClusterNameOpt, EtcdOpt, connect_etcd, run_etcd
from smartbroker.cli.common import CliError, handle_errors

VhostArg = Annotated[str, typer.Argument(help="The stream's vhost")]
StreamArg = Annotated[str, typer.Argument(help="The stream")]
NodeArg = Annotated[str, typer.Argument(help="The node's name")]
PartitionOpt = Annotated[int | None, typer.Option(
    "--partition", min=0, help="Only this partition (default: every partition)")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", min=0.1, help="Seconds to wait for a leader to hand over")]


def register(streams_app: typer.Typer) -> None:
    streams_app.command("add-replica")(add_replica)
    streams_app.command("delete-replica")(delete_replica)


@handle_errors
def add_replica(vhost: VhostArg, stream: StreamArg, node: NodeArg,
                partition: PartitionOpt = None, etcd: EtcdOpt = None,
                cluster_name: ClusterNameOpt = "smartbroker") -> None:
    """Add a replica of a stream on NODE (rabbitmq-streams add_replica)."""
    _run(vhost, stream, node, partition, etcd, cluster_name, add=True, timeout=30.0)


@handle_errors
def delete_replica(vhost: VhostArg, stream: StreamArg, node: NodeArg,
                   partition: PartitionOpt = None, etcd: EtcdOpt = None,
                   cluster_name: ClusterNameOpt = "smartbroker",
                   timeout: TimeoutOpt = 30.0) -> None:
    """Remove NODE's replica of a stream (rabbitmq-streams delete_replica).

    A replica that leads hands its leadership to one in sync first; the last replica of
    a partition is never removed."""
    _run(vhost, stream, node, partition, etcd, cluster_name, add=False, timeout=timeout)


def _run(vhost: str, stream: str, node: str, partition: int | None, etcd: str | None,
         cluster_name: str, *, add: bool, timeout: float) -> None:
    lines, failure = run_etcd(_change(connect_etcd(etcd, cluster_name), vhost, stream, node,
                                      partition, add, timeout))
    for line in lines:
        typer.echo(line)
    if failure is not None:
        raise CliError(failure)


async def _change(etcd: Any, vhost: str, stream: str, node: str, partition: int | None,
                  add: bool, timeout: float) -> tuple[list[str], str | None]:
    """One line per partition changed; the refusal that stopped it (None: none)."""
    from smartbroker.cluster.stream_members import ReplicaError, adding, change, read_stream
    from smartbroker.cluster.stream_members import removing as removing_plan

    lines: list[str] = []
    async with etcd:
        try:
            state = await read_stream(etcd, vhost, stream)
            parts = range(len(state.partition_members)) if partition is None else [partition]
            state.partition(parts[0] if parts else 0)  # an unknown partition: refused
            if add:
                state.check_node(node, running=True)
            for p in parts:
                plan = adding(node) if add else removing_plan(node)
                after, _ = await change(etcd, vhost, stream, p, plan, timeout)
                what = state.describe(p) if len(parts) > 1 or partition is not None \
                    else state.describe()
                if after is None:
                    lines.append(f"{what}: node {node} "
                                 + ("is already a replica" if add else "is not a replica"))
                else:
                    lines.append(f"{what}: node {node} "
                                 + ("added" if add else "removed")
                                 + f" (replicas: {', '.join(after)})")
        except ReplicaError as exc:
            return lines, str(exc)
    return lines, None
