"""``smartbroker queues grow|shrink|add-member|delete-member`` and ``cluster rebalance``:
RabbitMQ's ``rabbitmq-queues`` commands for quorum queue replicas, on the records in
etcd (``replica_state``, ``replica_change``), so they work whichever nodes are up.

As RabbitMQ's: ``grow NODE all|even`` adds NODE to every matching quorum queue it is not
a member of (``even``: only those with an even number of members), ``shrink NODE``
removes it from every one it is a member of (never the last member), ``add-member`` /
``delete-member`` change one queue, ``cluster rebalance`` moves leaders so each running
node leads about as many quorum queues (and, with ``streams`` or ``all``, stream
partitions: ``rabbitmq-queues rebalance stream``). grow and shrink print one row per queue
(vhost, name, size, result) and exit 1 when a row is an error (RabbitMQ exits 0).
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from smartbroker.cli.cluster import ClusterNameOpt, EtcdOpt, connect_etcd, run_etcd
from smartbroker.cli.common import CliError, JsonOpt, handle_errors, print_json, print_table

NodeArg = Annotated[str, typer.Argument(help="The node's name")]
VhostPatternOpt = Annotated[str, typer.Option(
    "--vhost-pattern", help="Regular expression the vhost names must match")]
QueuePatternOpt = Annotated[str, typer.Option(
    "--queue-pattern", help="Regular expression the queue names must match")]
ErrorsOnlyOpt = Annotated[bool, typer.Option(
    "--errors-only", help="Only list the queues that reported an error")]
TimeoutOpt = Annotated[float, typer.Option(
    "--timeout", min=0.1, help="Seconds to wait for a leader to hand over")]


def register(queues_app: typer.Typer, cluster_app: typer.Typer) -> None:
    queues_app.command("grow")(grow)
    queues_app.command("shrink")(shrink)
    queues_app.command("add-member")(add_member)
    queues_app.command("delete-member")(delete_member)
    cluster_app.command("rebalance")(rebalance)


@handle_errors
def add_member(vhost: Annotated[str, typer.Argument(help="The queue's vhost")],
               queue: Annotated[str, typer.Argument(help="The quorum queue")], node: NodeArg,
               etcd: EtcdOpt = None, cluster_name: ClusterNameOpt = "smartbroker") -> None:
    """Add NODE as a replica of a quorum queue (rabbitmq-queues add_member)."""
    from smartbroker.cli.replica_change import change_members

    result, _ = run_etcd(_with(connect_etcd(etcd, cluster_name), lambda client: change_members(
        client, vhost, queue, node, add=True)))
    typer.echo(f"queue '{queue}' in vhost '{vhost}': node {node} "
               + ("added" if result == "ok" else "is already a member"))


@handle_errors
def delete_member(vhost: Annotated[str, typer.Argument(help="The queue's vhost")],
                  queue: Annotated[str, typer.Argument(help="The quorum queue")],
                  node: NodeArg, etcd: EtcdOpt = None,
                  cluster_name: ClusterNameOpt = "smartbroker",
                  timeout: TimeoutOpt = 30.0) -> None:
    """Remove NODE's replica of a quorum queue (rabbitmq-queues delete_member).

    A leader hands its leadership to a member in sync first."""
    from smartbroker.cli.replica_change import change_members

    result, _ = run_etcd(_with(connect_etcd(etcd, cluster_name), lambda client: change_members(
        client, vhost, queue, node, add=False, timeout=timeout)))
    typer.echo(f"queue '{queue}' in vhost '{vhost}': node {node} "
               + ("removed" if result == "ok" else "is not a member"))


async def _with(etcd: Any, work: Any) -> Any:
    async with etcd:
        return await work(etcd)


@handle_errors
def grow(node: NodeArg,
         selection: Annotated[str, typer.Argument(
             help="all: every matching quorum queue; even: those with an even number of "
                  "members")] = "all",
         vhost_pattern: VhostPatternOpt = ".*", queue_pattern: QueuePatternOpt = ".*",
         errors_only: ErrorsOnlyOpt = False, etcd: EtcdOpt = None,
         cluster_name: ClusterNameOpt = "smartbroker", as_json: JsonOpt = False) -> None:
    """Add a replica on NODE to every matching quorum queue (rabbitmq-queues grow)."""
    if selection not in ("all", "even"):
        raise CliError(f"selection must be 'all' or 'even', not {selection!r}")
    rows = run_etcd(_with(connect_etcd(etcd, cluster_name), lambda client: _grow(
        client, node, selection, vhost_pattern, queue_pattern)))
    _report(rows, errors_only, as_json)


async def _grow(etcd: Any, node: str, selection: str, vhosts: str,
                queues: str) -> list[list[Any]]:
    from smartbroker.cli.replica_change import change_members
    from smartbroker.cli.replica_state import grow_targets, read

    state = await read(etcd)
    state.check_node(node, running=True)
    targets = grow_targets(state.quorum_logs(vhosts, queues), node, selection)
    return [await _row(change_members(etcd, r.vhost, r.queue, node, add=True, state=state),
                       r, len(r.members) + 1) for r in targets]


@handle_errors
def shrink(node: NodeArg, errors_only: ErrorsOnlyOpt = False, etcd: EtcdOpt = None,
           cluster_name: ClusterNameOpt = "smartbroker", timeout: TimeoutOpt = 30.0,
           as_json: JsonOpt = False) -> None:
    """Remove NODE's replica from every quorum queue (rabbitmq-queues shrink).

    The node may be up or down; a queue's last member is never removed."""
    rows = run_etcd(_with(connect_etcd(etcd, cluster_name),
                          lambda client: _shrink(client, node, timeout)))
    _report(rows, errors_only, as_json)


async def _shrink(etcd: Any, node: str, timeout: float) -> list[list[Any]]:
    from smartbroker.cli.replica_change import change_members
    from smartbroker.cli.replica_state import read

    state = await read(etcd)
    targets = [r for r in state.quorum_logs() if node in r.members]
    if not targets:
        state.check_node(node, running=False)
    return [await _row(change_members(etcd, r.vhost, r.queue, node, add=False,
                                      timeout=timeout, state=state), r, len(r.members))
            for r in targets]


async def _row(change: Any, r: Any, size: int) -> list[Any]:
    """(vhost, name, size, result) as rabbitmq-queues prints them."""
    try:
        result, size = await change
    except CliError as exc:
        return [r.vhost, r.queue, size, f"error: {str(exc).split(': ', 1)[-1]}"]
    return [r.vhost, r.queue, size, result]


def _report(rows: list[list[Any]], errors_only: bool, as_json: bool) -> None:
    failed = [row for row in rows if str(row[3]).startswith("error")]
    shown = failed if errors_only else rows
    if as_json:
        print_json([dict(zip(("vhost", "name", "size", "result"), row, strict=True))
                    for row in shown])
    elif shown:
        print_table(["vhost", "name", "size", "result"], shown)
    if failed:
        raise typer.Exit(1)


@handle_errors
def rebalance(kind: Annotated[str, typer.Argument(
                  help="all, quorum, streams or classic (classic queues have no replicas)")
              ] = "all",
              vhost_pattern: VhostPatternOpt = ".*", queue_pattern: QueuePatternOpt = ".*",
              etcd: EtcdOpt = None, cluster_name: ClusterNameOpt = "smartbroker",
              timeout: TimeoutOpt = 30.0, as_json: JsonOpt = False) -> None:
    """Move quorum queue and stream partition leaders so each node leads about as many
    of each (rabbitmq-queues rebalance)."""
    kind = "streams" if kind == "stream" else kind  # RabbitMQ's spelling
    if kind not in ("all", "quorum", "streams", "classic"):
        raise CliError(f"type must be all, quorum, streams or classic, not {kind!r}")
    counts, failures = run_etcd(_with(connect_etcd(etcd, cluster_name), lambda client:
                                      _rebalance(client, kind, vhost_pattern, queue_pattern,
                                                 timeout)))
    kinds = [k for k in ("quorum", "stream") if kind in ("all", f"{k}s", k)]
    if as_json:
        print_json({"nodes": [{"node": n, **{f"{k}_leaders": c[k] for k in kinds}}
                              for n, c in counts], "errors": failures})
    else:
        print_table(["node", *(f"{k} leaders" for k in kinds)],
                    [[n, *(c[k] for k in kinds)] for n, c in counts])
        for failure in failures:
            typer.echo(f"error: {failure}", err=True)
    if failures:
        raise typer.Exit(1)


async def _rebalance(etcd: Any, kind: str, vhosts: str, queues: str,
                     timeout: float) -> tuple[list[tuple[str, dict[str, int]]], list[str]]:
    """Per running node, the quorum queues and stream partitions it leads afterwards;
    the transfers that failed. Each type is balanced on its own (a node leading many
    queues and no stream partitions is not balanced by moving partitions to it)."""
    from smartbroker.cli.replica_change import move_leaders
    from smartbroker.cli.replica_state import leader_counts, read, rebalance_moves

    def selected(state: Any) -> dict[str, list[Any]]:
        return {"quorum": state.quorum_logs(vhosts, queues)
                if kind in ("all", "quorum") else [],
                "stream": state.stream_logs(vhosts, queues)
                if kind in ("all", "streams") else []}

    state = await read(etcd)
    failures: list[str] = []
    if kind != "classic":
        moves = [m for logs in selected(state).values() for m in rebalance_moves(logs, state.up)]
        failures = [f for f in await move_leaders(etcd, moves, timeout) if f is not None]
        state = await read(etcd)
    logs = selected(state)
    counts = {k: leader_counts((r for r in found if r.leader in state.up), state.up)
              for k, found in logs.items()}
    return [(n, {k: counts[k][n] for k in counts}) for n in sorted(state.up)], failures
