"""``smartbroker streams`` and ``smartbroker groups``: stream offsets and consumer groups
over the management HTTP API (``/api/streams``, ``/api/groups``)."""

from __future__ import annotations

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

streams_app = typer.Typer(help="Stream queues: partitions, offsets, retention.",
                          no_args_is_help=True)
groups_app = typer.Typer(help="Consumer groups on streams: members, offsets, lag; reset offsets.",
                         no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(streams_app, name="streams")
    app.add_typer(groups_app, name="groups")


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return str(n)  # pragma: no cover


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span and seconds % span == 0:
            return f"{int(seconds // span)}{unit}"
    return f"{seconds:g}s"


def _offset(value: int | None) -> Any:
    return "-" if value is None else value


# -- streams ---------------------------------------------------------------------------------
@streams_app.command("list")
@handle_errors
def streams_list(api: ApiOpt = DEFAULT_API, vhost: VhostFilterOpt = None,
                 as_json: JsonOpt = False) -> None:
    """List stream queues with message counts, sizes and groups."""
    require(vhost=vhost)
    rows = Api(api).get("streams" if vhost is None else f"streams/{q(vhost)}",
                        not_found=f"vhost '{vhost}' not found")
    if as_json:
        print_json(rows)
        return
    print_table(["vhost", "name", "partitions", "messages", "size", "segments", "consumers",
                 "groups"],
                [(r["vhost"], r["name"], r["partition_count"], r["messages"],
                  _size(r["size_bytes"]), r["segments"], r["consumers"], ",".join(r["groups"]))
                 for r in rows])


@streams_app.command("info")
@handle_errors
def streams_info(queue: str, api: ApiOpt = DEFAULT_API, vhost: VhostOpt = "/",
                 as_json: JsonOpt = False) -> None:
    """Partitions (first/last offset, size, segments) and retention of a stream."""
    require(stream=queue, vhost=vhost)
    doc = Api(api).get(f"streams/{q(vhost)}/{q(queue)}",
                       not_found=f"queue '{queue}' not found in vhost '{vhost}'")
    if as_json:
        print_json(doc)
        return
    ret = doc["retention"]
    print_table(["", "value"], [
        ("stream", f"{doc['name']} (vhost {doc['vhost']})"),
        ("partitions", str(doc["partition_count"])),
        ("messages", str(doc["messages"])),
        ("size", _size(doc["size_bytes"])),
        ("segments", str(doc["segments"])),
        ("consumers", str(doc["consumers"])),
        ("retention max-age", _age(ret.get("max_age"))),
        ("retention max-length-bytes", _size(ret.get("max_length_bytes"))),
        ("segment size", _size(ret.get("segment_bytes"))),
        ("compacted", "yes" if ret.get("compact") else "no"),
        ("groups", ",".join(doc["groups"]) or "-"),
    ])
    print_table(["partition", "first offset", "last offset", "next offset", "messages", "size",
                 "segments"],
                [(p["partition"], p["first_offset"], _offset(p["last_offset"]), p["next_offset"],
                  p["messages"], _size(p["size_bytes"]), p["segments"]) for p in doc["partitions"]])


# -- groups ----------------------------------------------------------------------------------
@groups_app.command("list")
@handle_errors
def groups_list(api: ApiOpt = DEFAULT_API, vhost: VhostFilterOpt = None,
                as_json: JsonOpt = False) -> None:
    """List consumer groups (live, or with committed offsets only) and their total lag."""
    require(vhost=vhost)
    rows = Api(api).get("groups" if vhost is None else f"groups/{q(vhost)}",
                        not_found=f"vhost '{vhost}' not found")
    if as_json:
        print_json(rows)
        return
    print_table(["vhost", "queue", "group", "state", "members", "lag"],
                [(r["vhost"], r["queue"], r["group"], r["state"], len(r["members"]), r["lag"])
                 for r in rows])


def _find_group(client: Api, group: str, queue: str | None, vhost: str) -> dict[str, Any]:
    if queue is not None:
        return client.get(f"groups/{q(vhost)}/{q(queue)}/{q(group)}",
                          not_found=f"consumer group '{group}' not found on stream '{queue}' "
                                    f"in vhost '{vhost}'")
    found = [g for g in client.get(f"groups/{q(vhost)}", not_found=f"vhost '{vhost}' not found")
             if g["group"] == group]
    if not found:
        raise CliError(f"consumer group '{group}' not found in vhost '{vhost}'")
    if len(found) > 1:
        queues = ", ".join(sorted(g["queue"] for g in found))
        raise CliError(f"consumer group '{group}' exists on several streams ({queues}): "
                       f"choose one with --queue")
    return found[0]


QueueOpt = Annotated[str | None, typer.Option("--queue", "-q", help="The stream of the group")]


@groups_app.command("describe")
@handle_errors
def groups_describe(group: str, api: ApiOpt = DEFAULT_API, queue: QueueOpt = None,
                    vhost: VhostOpt = "/", as_json: JsonOpt = False) -> None:
    """Members, assignment, committed offset and lag per partition of a group."""
    require(group=group, stream=queue, vhost=vhost)
    doc = _find_group(Api(api), group, queue, vhost)
    if as_json:
        print_json(doc)
        return
    mode = f", {doc['rebalance']} rebalance" if doc.get("rebalance") else ""
    mode += f", {doc['protocol']} members" if doc.get("protocol") == "kafka" else ""
    away = doc.get("static_members_away") or 0
    title = (f"group '{doc['group']}' on stream '{doc['queue']}': {doc['state']}, "
             f"{len(doc['members'])} member(s){mode}"
             + (f", {away} static member(s) away" if away else "") + f", lag {doc['lag']}")
    typer.echo(title)
    print_table(["partition", "owner", "committed", "end", "lag"],
                [(p["partition"], p.get("owner") or "-", p["committed_offset"], p["end_offset"],
                  p["lag"]) for p in doc["partitions"]])
    if doc["members"]:
        print_table(["member", "instance id", "client id", "client host", "partitions"],
                    [(m["consumer_tag"], m.get("instance_id") or "-", m.get("client_id") or "-",
                      m.get("client_host") or "-",
                      ",".join(str(p) for p in m["partitions"]) or "-") for m in doc["members"]])


@groups_app.command("reset-offsets")
@handle_errors
def groups_reset_offsets(
    group: str,
    queue: Annotated[str, typer.Option("--queue", "-q", help="The stream of the group")],
    api: ApiOpt = DEFAULT_API,
    vhost: VhostOpt = "/",
    to_earliest: Annotated[bool, typer.Option("--to-earliest", help="First offset kept")] = False,
    to_latest: Annotated[bool, typer.Option("--to-latest", help="Past the last offset")] = False,
    to_offset: Annotated[int | None, typer.Option("--to-offset", help="This offset (clipped)")] = None,
    to_datetime: Annotated[str | None, typer.Option(
        "--to-datetime", help="First offset at/after this time: ISO 8601 (UTC unless an "
                              "offset is given) or epoch ms")] = None,
    shift_by: Annotated[int | None, typer.Option("--shift-by", help="Committed offset + N "
                                                                    "(negative: replay)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Show the change, apply nothing")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Move a group's committed offsets, e.g. to replay events after a bug fix.

    Refused while the group has members: stop its consumers first.
    """
    require(group=group, stream=queue, vhost=vhost)
    choices = [("earliest", None, to_earliest), ("latest", None, to_latest),
               ("offset", to_offset, to_offset is not None),
               ("datetime", to_datetime, to_datetime is not None),
               ("shift", shift_by, shift_by is not None)]
    picked = [(to, value) for to, value, on in choices if on]
    if len(picked) != 1:
        raise CliError("give exactly one of --to-earliest, --to-latest, --to-offset, "
                       "--to-datetime, --shift-by")
    to, value = picked[0]
    doc = Api(api).post(f"groups/{q(vhost)}/{q(queue)}/{q(group)}/reset",
                        {"to": to, "value": value, "dry_run": dry_run},
                        not_found=f"consumer group '{group}' not found on stream '{queue}' "
                                  f"in vhost '{vhost}'")
    if as_json:
        print_json(doc)
        return
    verb = "would move" if dry_run else "moved"
    typer.echo(f"group '{group}' on stream '{queue}': {verb} committed offsets")
    print_table(["partition", "before", "after", "lag after"],
                [(p["partition"], p["before"], p["after"], p["lag_after"])
                 for p in doc["partitions"]])
    typer.echo("dry run: nothing changed" if dry_run else
               f"offsets of group '{group}' reset ({to}"
               + (f" {value}" if value is not None else "") + ")")
