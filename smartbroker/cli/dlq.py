"""``smartbroker dlq``: list, inspect, redrive and purge dead-letter queues (over the
management HTTP API: ``/api/dlq/...`` and RabbitMQ's ``/api/queues/.../contents``)."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any

import typer

from smartbroker.cli.common import (
    DEFAULT_API,
    Api,
    ApiOpt,
    CliError,
    JsonOpt,
    VhostFilterOpt,
    VhostOpt,
    handle_errors,
    print_json,
    print_table,
    q,
    require,
)

dlq_app = typer.Typer(help="Inspect, redrive and purge dead-letter queues.", no_args_is_help=True)

BATCH = 500  # messages per redrive request: one progress step each
MAX_REQUEST = 100_000  # the API's cap on one request's limit


def register(app: typer.Typer) -> None:
    app.add_typer(dlq_app, name="dlq")


def _path(vhost: str, queue: str) -> str:
    return f"dlq/{q(vhost)}/{q(queue)}"


def _missing(queue: str, vhost: str) -> str:
    return f"queue '{queue}' not found in vhost '{vhost}'"


@dlq_app.command("list")
@handle_errors
def dlq_list(api: ApiOpt = DEFAULT_API, vhost: VhostFilterOpt = None,
             as_json: JsonOpt = False) -> None:
    """List dead-letter queues: where dead letters are routed, or where they sit."""
    require(vhost=vhost)
    client = Api(api)
    rows = client.get("dlq" if vhost is None else f"dlq/{q(vhost)}",
                      not_found=f"vhost '{vhost}' not found")
    if as_json:
        print_json(rows)
        return
    print_table(["vhost", "name", "messages", "sources", "oldest death", "oldest reason"],
                [(r["vhost"], r["name"], r.get("messages", 0),
                  ",".join(r.get("dead_letter_sources") or []),
                  (r.get("oldest") or {}).get("time"), (r.get("oldest") or {}).get("reason"))
                 for r in rows])


@dlq_app.command("inspect")
@handle_errors
def dlq_inspect(
    queue: str,
    api: ApiOpt = DEFAULT_API,
    vhost: VhostOpt = "/",
    limit: Annotated[int, typer.Option("--limit", "-n", min=0, max=10_000,
                                       help="How many messages to show")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """Browse dead-lettered messages without consuming them."""
    require(queue=queue, vhost=vhost)
    doc = Api(api).get(f"{_path(vhost, queue)}?limit={limit}", not_found=_missing(queue, vhost))
    if as_json:
        print_json(doc)
        return
    items = doc.get("items", [])
    typer.echo(f"{queue}: {len(items)} of {doc.get('messages', 0)} message(s)")
    print_table(["#", "reason", "source queue", "deaths", "count", "time", "exchange",
                 "routing keys", "bytes", "body"],
                [(m["position"], m.get("reason") or "-", m.get("queue") or "-", m.get("deaths", 0),
                  m.get("count", 0), m.get("time") or "-", _exchange(m.get("exchange")),
                  ",".join(m.get("routing_keys") or []), m.get("body_size", 0),
                  _preview(m.get("body_preview", ""), m.get("body_size", 0)))
                 for m in items])


def _exchange(name: str | None) -> str:
    if name is None:
        return "-"
    return name or "(AMQP default)"


def _preview(text: str, size: int, width: int = 40) -> str:
    flat = text.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    if len(flat) > width or size > len(text.encode()):
        return flat[:width - 1] + "…"
    return flat


@dlq_app.command("redrive")
@handle_errors
def dlq_redrive(
    queue: str,
    api: ApiOpt = DEFAULT_API,
    vhost: VhostOpt = "/",
    to_exchange: Annotated[str | None, typer.Option(
        "--to-exchange", help="Send to this exchange instead of where each message died")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=1,
                                              help="Move at most this many messages")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show where messages would go")] = False,
    batch: Annotated[int, typer.Option("--batch-size", min=1, max=10_000,
                                       help="Messages per API request")] = BATCH,
    as_json: JsonOpt = False,
) -> None:
    """Move dead-lettered messages back to the exchange and routing keys they died with.

    Each message leaves the DLQ only after it has been routed again, so an interrupted
    redrive loses nothing; messages that route nowhere stay in the DLQ.
    """
    require(queue=queue, vhost=vhost)
    client = Api(api)
    path = _path(vhost, queue)
    depth = client.get(f"{path}?limit=0", not_found=_missing(queue, vhost))["messages"]
    if to_exchange is not None:
        client.get(f"exchanges/{q(vhost)}/{q(to_exchange or 'amq.default')}",
                   not_found=f"exchange '{to_exchange}' not found in vhost '{vhost}'")
    wanted = depth if limit is None else min(limit, depth)
    if dry_run:
        _dry_run(client, path, queue, vhost, to_exchange, wanted, as_json)
        return
    moved, left_behind, result = _redrive_batches(client, path, queue, vhost, to_exchange,
                                                  wanted, batch)
    if as_json:
        print_json({"moved": moved, "left_in_dlq": left_behind,
                    "unroutable": result.get("unroutable", 0),
                    "skipped_no_death": result.get("skipped_no_death", 0),
                    "remaining": result.get("remaining", depth)})
        return
    where = f"exchange '{to_exchange}'" if to_exchange is not None else "where they died"
    typer.echo(f"moved {moved} message(s) from '{queue}' back to {where}; "
               f"{result.get('remaining', depth)} left in the queue")
    if left_behind:
        typer.echo(f"warning: {result.get('unroutable', 0)} unroutable and "
                   f"{result.get('skipped_no_death', 0)} without an x-death header stayed "
                   f"in '{queue}'", err=True)


def _redrive_batches(client: Api, path: str, queue: str, vhost: str, to_exchange: str | None,
                     wanted: int, batch: int) -> tuple[int, int, dict[str, Any]]:
    """Redrive ``wanted`` messages ``batch`` at a time, a progress step per request.

    Messages that cannot move stay at the head of the queue and each request scans from
    the head, so a request asks for those (``left_behind``) plus one new batch."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    moved = left_behind = 0
    result: dict[str, Any] = {}
    with Progress(TextColumn("redrive {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, disable=not console.is_terminal,
                  transient=False) as progress:
        task = progress.add_task(queue, total=wanted)
        while moved < wanted:
            step = min(batch, wanted - moved)
            body = {"to_exchange": to_exchange, "limit": min(left_behind + step, MAX_REQUEST),
                    "dry_run": False}
            result = client.post(f"{path}/redrive", body, not_found=_missing(queue, vhost))
            moved += result["moved"]
            left_behind = result["unroutable"] + result["skipped_no_death"]
            progress.update(task, advance=result["moved"])
            if result["moved"] == 0 or result["remaining"] <= left_behind:
                break
    return moved, left_behind, result


def _dry_run(client: Api, path: str, queue: str, vhost: str, to_exchange: str | None,
             wanted: int, as_json: bool) -> None:
    result = client.post(f"{path}/redrive", {"to_exchange": to_exchange,
                                              "limit": min(wanted, MAX_REQUEST), "dry_run": True},
                         not_found=_missing(queue, vhost))
    if as_json:
        print_json(result)
        return
    plan = Counter((p["exchange"], ",".join(p["routing_keys"])) for p in result["planned"])
    typer.echo(f"dry run: {sum(plan.values())} message(s) of '{queue}' would be redriven")
    print_table(["exchange", "routing keys", "messages"],
                [(_exchange(ex), keys, n) for (ex, keys), n in sorted(plan.items())])
    if result["skipped_no_death"]:
        typer.echo(f"{result['skipped_no_death']} message(s) have no x-death header: "
                   f"use --to-exchange to redrive them", err=True)


@dlq_app.command("purge")
@handle_errors
def dlq_purge(queue: str, api: ApiOpt = DEFAULT_API, vhost: VhostOpt = "/") -> None:
    """Drop every message of a dead-letter queue."""
    require(queue=queue, vhost=vhost)
    client = Api(api)
    missing = _missing(queue, vhost)
    before = client.get(f"queues/{q(vhost)}/{q(queue)}", not_found=missing)
    if before.get("type", "classic") == "stream":
        raise CliError(f"queue '{queue}' in vhost '{vhost}' is a stream: streams cannot be purged")
    client.delete(f"queues/{q(vhost)}/{q(queue)}/contents", not_found=missing)
    typer.echo(f"purged {before.get('messages_ready', 0)} message(s) from '{queue}'")
