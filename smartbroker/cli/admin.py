"""Admin commands over the management HTTP API: inspect (tables or --json) and change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from smartbroker.cli.common import (
    DEFAULT_API,
    Api,
    ApiOpt,
    ArgOpt,
    CliError,
    JsonOpt,
    VhostFilterOpt,
    VhostOpt,
    handle_errors,
    parse_pairs,
    print_json,
    print_table,
    q,
    require,
    to_json,
)

queues_app = typer.Typer(help="List, declare, delete and purge queues.", no_args_is_help=True)
exchanges_app = typer.Typer(help="List, declare and delete exchanges.", no_args_is_help=True)
bindings_app = typer.Typer(help="List bindings.", no_args_is_help=True)
connections_app = typer.Typer(help="List and close client connections.", no_args_is_help=True)
channels_app = typer.Typer(help="List channels.", no_args_is_help=True)
consumers_app = typer.Typer(help="List consumers.", no_args_is_help=True)
vhosts_app = typer.Typer(help="List virtual hosts.", no_args_is_help=True)
users_app = typer.Typer(help="List, add and delete users; change passwords.", no_args_is_help=True)
definitions_app = typer.Typer(help="Export and import definitions (RabbitMQ's JSON format).",
                              no_args_is_help=True)

SUBAPPS = {
    "queues": queues_app, "exchanges": exchanges_app, "bindings": bindings_app,
    "connections": connections_app, "channels": channels_app, "consumers": consumers_app,
    "vhosts": vhosts_app, "users": users_app, "definitions": definitions_app,
}


def _listing(api: str, what: str, vhost: str | None) -> list[dict[str, Any]]:
    client = Api(api)
    if vhost is None:
        return client.get(what)
    client.get(f"vhosts/{q(vhost)}", not_found=f"vhost '{vhost}' not found")
    return client.get(f"{what}/{q(vhost)}")


def _vhost_listing(api: str, what: str, vhost: str | None) -> list[dict[str, Any]]:
    """Listings RabbitMQ scopes as /api/vhosts/{vhost}/{what}."""
    client = Api(api)
    if vhost is None:
        return client.get(what)
    return client.get(f"vhosts/{q(vhost)}/{what}", not_found=f"vhost '{vhost}' not found")


def register(app: typer.Typer) -> None:
    app.command("status")(status)
    app.command("bind")(bind)
    app.command("unbind")(unbind)
    for name, sub in SUBAPPS.items():
        app.add_typer(sub, name=name)


# -- status ------------------------------------------------------------------------------
@handle_errors
def status(api: ApiOpt = DEFAULT_API, as_json: JsonOpt = False) -> None:
    """Broker overview: version, node, object and message totals, listeners."""
    doc = Api(api).get("overview")
    if as_json:
        print_json(doc)
        return
    objects, totals = doc.get("object_totals", {}), doc.get("queue_totals", {})
    rows = [
        ("product", f"{doc.get('product_name', 'RabbitMQ')} {doc.get('product_version', doc.get('rabbitmq_version', ''))}"),
        ("node", doc.get("node")),
        *((k, objects.get(k, 0)) for k in ("connections", "channels", "exchanges", "queues",
                                           "consumers")),
        ("messages", totals.get("messages", 0)),
        ("messages ready", totals.get("messages_ready", 0)),
        ("messages unacked", totals.get("messages_unacknowledged", 0)),
        *((f"listener {lst.get('protocol')}", f"{lst.get('ip_address')}:{lst.get('port')}")
          for lst in doc.get("listeners", [])),
    ]
    print_table(["", "value"], [(k, str(v)) for k, v in rows])


# -- queues ------------------------------------------------------------------------------
@queues_app.command("list")
@handle_errors
def queues_list(api: ApiOpt = DEFAULT_API, vhost: VhostFilterOpt = None,
                as_json: JsonOpt = False) -> None:
    """List queues with message and consumer counts."""
    require(vhost=vhost)
    rows = _listing(api, "queues", vhost)
    if as_json:
        print_json(rows)
        return
    print_table(["vhost", "name", "type", "messages", "ready", "unacked", "consumers", "durable"],
                [(r["vhost"], r["name"], r.get("type", "classic"), r.get("messages", 0),
                  r.get("messages_ready", 0), r.get("messages_unacknowledged", 0),
                  r.get("consumers", 0), r.get("durable")) for r in rows])


@queues_app.command("declare")
@handle_errors
def queues_declare(
    name: str,
    api: ApiOpt = DEFAULT_API,
    vhost: VhostOpt = "/",
    durable: Annotated[bool, typer.Option("--durable/--transient")] = True,
    auto_delete: Annotated[bool, typer.Option("--auto-delete")] = False,
    queue_type: Annotated[str | None, typer.Option("--type", help="classic or stream")] = None,
    arg: ArgOpt = None,
) -> None:
    """Declare a queue (idempotent; an inequivalent redeclare is an error)."""
    require(queue=name, vhost=vhost)
    arguments = parse_pairs(arg)
    if queue_type:
        arguments["x-queue-type"] = queue_type
    Api(api).put(f"queues/{q(vhost)}/{q(name)}",
                 {"durable": durable, "auto_delete": auto_delete, "arguments": arguments},
                 not_found=f"vhost '{vhost}' not found")
    typer.echo(f"queue '{name}' declared in vhost '{vhost}'")


@queues_app.command("delete")
@handle_errors
def queues_delete(
    name: str,
    api: ApiOpt = DEFAULT_API,
    vhost: VhostOpt = "/",
    if_empty: Annotated[bool, typer.Option("--if-empty")] = False,
    if_unused: Annotated[bool, typer.Option("--if-unused")] = False,
) -> None:
    """Delete a queue and its messages."""
    require(queue=name, vhost=vhost)
    params = "&".join(p for p, on in (("if-empty=true", if_empty), ("if-unused=true", if_unused))
                      if on)
    Api(api).delete(f"queues/{q(vhost)}/{q(name)}" + (f"?{params}" if params else ""),
                    not_found=f"queue '{name}' not found in vhost '{vhost}'")
    typer.echo(f"queue '{name}' deleted")


@queues_app.command("purge")
@handle_errors
def queues_purge(name: str, api: ApiOpt = DEFAULT_API, vhost: VhostOpt = "/") -> None:
    """Drop every ready message of a queue."""
    require(queue=name, vhost=vhost)
    Api(api).delete(f"queues/{q(vhost)}/{q(name)}/contents",
                    not_found=f"queue '{name}' not found in vhost '{vhost}'")
    typer.echo(f"queue '{name}' purged")


# -- exchanges ---------------------------------------------------------------------------
@exchanges_app.command("list")
@handle_errors
def exchanges_list(api: ApiOpt = DEFAULT_API, vhost: VhostFilterOpt = None,
                   as_json: JsonOpt = False) -> None:
    """List exchanges."""
    require(vhost=vhost)
    rows = _listing(api, "exchanges", vhost)
    if as_json:
        print_json(rows)
        return
    print_table(["vhost", "name", "type", "durable", "auto_delete", "internal", "arguments"],
                [(r["vhost"], r["name"] or "(AMQP default)", r["type"], r.get("durable"),
                  r.get("auto_delete"), r.get("internal"), r.get("arguments")) for r in rows])


@exchanges_app.command("declare")
@handle_errors
def exchanges_declare(
    name: str,
    api: ApiOpt = DEFAULT_API,
    vhost: VhostOpt = "/",
    type_: Annotated[str, typer.Option("--type", help="direct, fanout, topic, headers")] = "direct",
    durable: Annotated[bool, typer.Option("--durable/--transient")] = True,
    auto_delete: Annotated[bool, typer.Option("--auto-delete")] = False,
    internal: Annotated[bool, typer.Option("--internal")] = False,
    arg: ArgOpt = None,
) -> None:
    """Declare an exchange."""
    require(exchange=name, vhost=vhost)
    Api(api).put(f"exchanges/{q(vhost)}/{q(name)}",
                 {"type": type_, "durable": durable, "auto_delete": auto_delete,
                  "internal": internal, "arguments": parse_pairs(arg)},
                 not_found=f"vhost '{vhost}' not found")
    typer.echo(f"exchange '{name}' declared in vhost '{vhost}'")


@exchanges_app.command("delete")
@handle_errors
def exchanges_delete(name: str, api: ApiOpt = DEFAULT_API, vhost: VhostOpt = "/",
                     if_unused: Annotated[bool, typer.Option("--if-unused")] = False) -> None:
    """Delete an exchange and its bindings."""
    require(exchange=name, vhost=vhost)
    Api(api).delete(f"exchanges/{q(vhost)}/{q(name)}" + ("?if-unused=true" if if_unused else ""),
                    not_found=f"exchange '{name}' not found in vhost '{vhost}'")
    typer.echo(f"exchange '{name}' deleted")


# -- bindings ----------------------------------------------------------------------------
@bindings_app.command("list")
@handle_errors
def bindings_list(api: ApiOpt = DEFAULT_API, vhost: VhostFilterOpt = None,
                  as_json: JsonOpt = False) -> None:
    """List bindings (default-exchange bindings included, as RabbitMQ lists them)."""
    require(vhost=vhost)
    rows = _listing(api, "bindings", vhost)
    if as_json:
        print_json(rows)
        return
    print_table(["vhost", "source", "destination", "type", "routing_key", "arguments"],
                [(r["vhost"], r["source"] or "(AMQP default)", r["destination"],
                  r["destination_type"], r["routing_key"], r.get("arguments")) for r in rows])


ToExchangeOpt = Annotated[bool, typer.Option(
    "--to-exchange", help="DESTINATION is an exchange (exchange-to-exchange binding)")]
RoutingKeyOpt = Annotated[str, typer.Option("--routing-key", "-k")]


def _binding_path(vhost: str, source: str, destination: str, to_exchange: bool) -> str:
    require(vhost=vhost, **{"exchange" if to_exchange else "queue": destination})
    if source == "":  # RabbitMQ's AMQP text (its HTTP API: 401 "Access refused.")
        raise CliError("operation not permitted on the default exchange")
    return f"bindings/{q(vhost)}/e/{q(source)}/{'e' if to_exchange else 'q'}/{q(destination)}"


@handle_errors
def bind(source: str, destination: str, api: ApiOpt = DEFAULT_API, vhost: VhostOpt = "/",
         routing_key: RoutingKeyOpt = "", to_exchange: ToExchangeOpt = False,
         arg: ArgOpt = None) -> None:
    """Bind exchange SOURCE to queue (or --to-exchange exchange) DESTINATION."""
    Api(api).post(_binding_path(vhost, source, destination, to_exchange),
                  {"routing_key": routing_key, "arguments": parse_pairs(arg)})
    typer.echo(f"bound '{source}' -> '{destination}' with routing key '{routing_key}'")


@handle_errors
def unbind(source: str, destination: str, api: ApiOpt = DEFAULT_API, vhost: VhostOpt = "/",
           routing_key: RoutingKeyOpt = "", to_exchange: ToExchangeOpt = False,
           arg: ArgOpt = None) -> None:
    """Remove the binding with this routing key (and arguments)."""
    client = Api(api)
    path = _binding_path(vhost, source, destination, to_exchange)
    arguments = parse_pairs(arg)
    for b in client.get(path):
        if b["routing_key"] == routing_key and b.get("arguments", {}) == arguments:
            client.delete(f"{path}/{q(b['properties_key'])}")
            typer.echo(f"unbound '{source}' -> '{destination}' (routing key '{routing_key}')")
            return
    raise CliError(f"no binding from '{source}' to '{destination}' with routing key "
                   f"'{routing_key}' in vhost '{vhost}'")


# -- connections, channels, consumers ----------------------------------------------------
@connections_app.command("list")
@handle_errors
def connections_list(api: ApiOpt = DEFAULT_API, vhost: VhostFilterOpt = None,
                     as_json: JsonOpt = False) -> None:
    """List client connections."""
    require(vhost=vhost)
    rows = _vhost_listing(api, "connections", vhost)
    if as_json:
        print_json(rows)
        return
    print_table(["name", "user", "vhost", "channels", "client", "recv_oct", "send_oct"],
                [(r["name"], r.get("user"), r.get("vhost"), r.get("channels", 0),
                  _client(r.get("client_properties") or {}), r.get("recv_oct", 0),
                  r.get("send_oct", 0)) for r in rows])


def _client(props: dict[str, Any]) -> str:
    return " ".join(str(props[k]) for k in ("product", "version") if props.get(k))


@connections_app.command("close")
@handle_errors
def connections_close(name: str, api: ApiOpt = DEFAULT_API,
                      reason: Annotated[str | None, typer.Option("--reason")] = None) -> None:
    """Close a client connection by NAME (as `connections list` shows it)."""
    require(connection=name)
    client = Api(api)
    missing = f"connection '{name}' not found"
    client.get(f"connections/{q(name)}", not_found=missing)
    client.request("DELETE", f"connections/{q(name)}", not_found=missing,
                   headers={"X-Reason": reason} if reason else None)
    typer.echo(f"connection '{name}' closed")


@channels_app.command("list")
@handle_errors
def channels_list(api: ApiOpt = DEFAULT_API, vhost: VhostFilterOpt = None,
                  as_json: JsonOpt = False) -> None:
    """List channels."""
    require(vhost=vhost)
    rows = _vhost_listing(api, "channels", vhost)
    if as_json:
        print_json(rows)
        return
    print_table(["name", "user", "vhost", "consumers", "unacked", "prefetch", "confirm", "tx"],
                [(r["name"], r.get("user"), r.get("vhost"), r.get("consumer_count", 0),
                  r.get("messages_unacknowledged", 0), r.get("prefetch_count", 0),
                  r.get("confirm"), r.get("transactional")) for r in rows])


@consumers_app.command("list")
@handle_errors
def consumers_list(api: ApiOpt = DEFAULT_API, vhost: VhostFilterOpt = None,
                   as_json: JsonOpt = False) -> None:
    """List consumers."""
    require(vhost=vhost)
    rows = _listing(api, "consumers", vhost)
    if as_json:
        print_json(rows)
        return
    print_table(["vhost", "queue", "consumer_tag", "channel", "ack", "prefetch", "exclusive"],
                [(r["queue"]["vhost"], r["queue"]["name"], r["consumer_tag"],
                  (r.get("channel_details") or {}).get("name"), r.get("ack_required"),
                  r.get("prefetch_count", 0), r.get("exclusive")) for r in rows])


# -- vhosts -------------------------------------------------------------------------------
@vhosts_app.command("list")
@handle_errors
def vhosts_list(api: ApiOpt = DEFAULT_API, as_json: JsonOpt = False) -> None:
    """List virtual hosts."""
    rows = Api(api).get("vhosts")
    if as_json:
        print_json(rows)
        return
    print_table(["name", "messages", "ready", "unacked", "description"],
                [(r["name"], r.get("messages", 0), r.get("messages_ready", 0),
                  r.get("messages_unacknowledged", 0), r.get("description", "")) for r in rows])


# -- definitions -------------------------------------------------------------------------
@definitions_app.command("export")
@handle_errors
def definitions_export(file: Annotated[Path, typer.Argument(help="Output file, - for stdout")],
                       api: ApiOpt = DEFAULT_API) -> None:
    """Export users, vhosts, permissions, policies, exchanges, queues and bindings."""
    doc = Api(api).get("definitions")
    text = to_json(doc) + "\n"
    if str(file) == "-":
        typer.echo(text, nl=False)
        return
    try:
        file.write_text(text)
    except OSError as exc:
        raise CliError(f"cannot write {file}: {exc.strerror or exc}") from None
    typer.echo(f"definitions exported to {file}", err=True)


@definitions_app.command("import")
@handle_errors
def definitions_import(file: Annotated[Path, typer.Argument(help="Definitions JSON, - for stdin")],
                       api: ApiOpt = DEFAULT_API) -> None:
    """Import definitions (RabbitMQ's export format)."""
    import sys

    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CliError(f"{file} is not JSON: {exc}") from None
    Api(api).post("definitions", doc)
    typer.echo(f"definitions imported from {file}")
