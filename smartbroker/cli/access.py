"""Admin commands for access, limits and policies: users list/add/delete/set-password/
set-permissions/set-topic-permissions/set-limit, vhosts add/delete/set-limit, policies
list/set/delete (management API, RabbitMQ's JSON)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from smartbroker.cli.admin import users_app, vhosts_app
from smartbroker.cli.common import (
    DEFAULT_API,
    Api,
    ApiOpt,
    CliError,
    JsonOpt,
    VhostOpt,
    handle_errors,
    print_json,
    print_table,
    q,
    require,
)

policies_app = typer.Typer(help="List, set and delete policies (queue settings by name pattern).",
                           no_args_is_help=True)


def check_regexes(*patterns: str) -> None:
    """Refuse a pattern the broker could not compile, before any request (the broker
    refuses it too: 400 invalid_regexp), with one readable line."""
    from smartbroker.broker.permissions import InvalidRegex, compile_regex

    for pattern in patterns:
        try:
            compile_regex(pattern)
        except InvalidRegex as exc:
            raise CliError(str(exc)) from None


def register(app: typer.Typer) -> None:
    app.add_typer(policies_app, name="policies")


# -- users ---------------------------------------------------------------------------------
@users_app.command("list")
@handle_errors
def users_list(api: ApiOpt = DEFAULT_API, as_json: JsonOpt = False) -> None:
    """List users and their tags."""
    rows = Api(api).get("users")
    if as_json:
        print_json(rows)
        return
    print_table(["name", "tags"], [(r["name"], ",".join(_tags(r.get("tags")))) for r in rows])


def _tags(tags: Any) -> list[str]:
    if isinstance(tags, str):
        return [t for t in tags.split(",") if t]
    return list(tags or [])


@users_app.command("add")
@handle_errors
def users_add(name: str, password: str, api: ApiOpt = DEFAULT_API,
              tags: Annotated[str, typer.Option("--tags", help="e.g. administrator")] = "") -> None:
    """Add a user (or replace its password and tags)."""
    require(user=name)
    Api(api).put(f"users/{q(name)}", {"password": password, "tags": tags})
    typer.echo(f"user '{name}' added")


@users_app.command("delete")
@handle_errors
def users_delete(name: str, api: ApiOpt = DEFAULT_API) -> None:
    """Delete a user."""
    require(user=name)
    Api(api).delete(f"users/{q(name)}", not_found=f"user '{name}' not found")
    typer.echo(f"user '{name}' deleted")


@users_app.command("set-password")
@handle_errors
def users_set_password(name: str, password: str, api: ApiOpt = DEFAULT_API) -> None:
    """Change a user's password (tags are kept)."""
    require(user=name)
    client = Api(api)
    user = client.get(f"users/{q(name)}", not_found=f"user '{name}' not found")
    client.put(f"users/{q(name)}", {"password": password, "tags": _tags(user.get("tags"))})
    typer.echo(f"password of user '{name}' changed")


# -- vhosts --------------------------------------------------------------------------------
@vhosts_app.command("add")
@handle_errors
def vhosts_add(name: str, api: ApiOpt = DEFAULT_API,
               description: Annotated[str, typer.Option(help="Free text")] = "") -> None:
    """Create a virtual host."""
    require(vhost=name)
    Api(api).put(f"vhosts/{q(name)}", {"description": description})
    typer.echo(f"vhost '{name}' added")


@vhosts_app.command("delete")
@handle_errors
def vhosts_delete(name: str, api: ApiOpt = DEFAULT_API) -> None:
    """Delete a virtual host, its queues and messages (its connections are closed)."""
    require(vhost=name)
    Api(api).delete(f"vhosts/{q(name)}", not_found=f"vhost '{name}' not found")
    typer.echo(f"vhost '{name}' deleted")


@users_app.command("set-permissions")
@handle_errors
def users_set_permissions(
    name: str,
    configure: Annotated[str, typer.Argument(help="regex of resources it may declare/delete")],
    write: Annotated[str, typer.Argument(help="regex of resources it may publish/bind to")],
    read: Annotated[str, typer.Argument(help="regex of resources it may consume/bind from")],
    api: ApiOpt = DEFAULT_API, vhost: VhostOpt = "/",
) -> None:
    """Grant NAME permissions in a vhost (RabbitMQ's three regexes; "" denies)."""
    require(user=name, vhost=vhost)
    check_regexes(configure, write, read)
    Api(api).put(f"permissions/{q(vhost)}/{q(name)}",
                 {"configure": configure, "write": write, "read": read})
    typer.echo(f"permissions of user '{name}' in vhost '{vhost}' set")


@users_app.command("set-topic-permissions")
@handle_errors
def users_set_topic_permissions(
    name: str,
    exchange: Annotated[str, typer.Argument(help="a topic exchange")],
    write: Annotated[str, typer.Argument(help="regex of routing keys it may publish with")],
    read: Annotated[str, typer.Argument(help="regex of routing keys it may bind with")],
    api: ApiOpt = DEFAULT_API, vhost: VhostOpt = "/",
) -> None:
    """Restrict NAME's routing keys on a topic exchange ({username}, {vhost} expand)."""
    require(user=name, exchange=exchange, vhost=vhost)
    check_regexes(write, read)
    Api(api).put(f"topic-permissions/{q(vhost)}/{q(name)}",
                 {"exchange": exchange, "write": write, "read": read})
    typer.echo(f"topic permissions of user '{name}' on exchange '{exchange}' in vhost '{vhost}' set")


@users_app.command("clear-topic-permissions")
@handle_errors
def users_clear_topic_permissions(name: str, api: ApiOpt = DEFAULT_API, vhost: VhostOpt = "/") -> None:
    """Drop every topic permission of NAME in a vhost."""
    require(user=name, vhost=vhost)
    Api(api).delete(f"topic-permissions/{q(vhost)}/{q(name)}",
                    not_found=f"user '{name}' has no topic permissions in vhost '{vhost}'")
    typer.echo(f"topic permissions of user '{name}' in vhost '{vhost}' cleared")


@policies_app.command("list")
@handle_errors
def policies_list(api: ApiOpt = DEFAULT_API, as_json: JsonOpt = False) -> None:
    """List policies."""
    rows = Api(api).get("policies")
    if as_json:
        print_json(rows)
        return
    print_table(["vhost", "name", "pattern", "apply-to", "priority", "definition"],
                [(r["vhost"], r["name"], r["pattern"], r.get("apply-to", "all"),
                  r.get("priority", 0), json.dumps(r.get("definition", {}), sort_keys=True))
                 for r in rows])


@policies_app.command("set")
@handle_errors
def policies_set(
    name: str,
    pattern: Annotated[str, typer.Argument(help="regex on queue (or exchange) names")],
    definition: Annotated[str, typer.Argument(help='JSON, e.g. \'{"message-ttl": 60000}\'')],
    api: ApiOpt = DEFAULT_API, vhost: VhostOpt = "/",
    priority: Annotated[int, typer.Option(help="the highest matching policy applies")] = 0,
    apply_to: Annotated[str, typer.Option("--apply-to", help="queues, exchanges or all")] = "queues",
) -> None:
    """Set a policy: its keys apply live to matching queues (queue arguments win)."""
    require(policy=name, vhost=vhost)
    try:
        parsed: Any = json.loads(definition)
    except ValueError as exc:
        raise CliError(f"definition is not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise CliError("definition must be a JSON object")
    Api(api).put(f"policies/{q(vhost)}/{q(name)}", {"pattern": pattern, "definition": parsed,
                                                    "priority": priority, "apply-to": apply_to})
    typer.echo(f"policy '{name}' set")


@policies_app.command("delete")
@handle_errors
def policies_delete(name: str, api: ApiOpt = DEFAULT_API, vhost: VhostOpt = "/") -> None:
    """Delete a policy."""
    require(policy=name, vhost=vhost)
    Api(api).delete(f"policies/{q(vhost)}/{q(name)}", not_found=f"policy '{name}' not found")
    typer.echo(f"policy '{name}' deleted")


def _set_limit(api: str, path: str, raw: str, what: str) -> None:
    client = Api(api)
    if raw.lower() != "none" and not raw.lstrip("-").isdigit():
        raise CliError(f"limit value must be an integer or 'none', got '{raw}'")
    value = None if raw.lower() == "none" else int(raw)
    if value is None or value < 0:
        client.delete(path, not_found=f"{what} not found")
        typer.echo(f"{what}: limit cleared")
    else:
        client.put(path, {"value": value})
        typer.echo(f"{what}: limit set to {value}")


@vhosts_app.command("set-limit")
@handle_errors
def vhosts_set_limit(
    name: str,
    limit: Annotated[str, typer.Argument(help="max-connections or max-queues")],
    value: Annotated[str, typer.Argument(help="the limit, or 'none' to clear it")],
    api: ApiOpt = DEFAULT_API,
) -> None:
    """Limit a vhost's connections or queues (RabbitMQ's vhost limits)."""
    require(vhost=name, limit=limit)
    _set_limit(api, f"vhost-limits/{q(name)}/{q(limit)}", value, f"vhost '{name}' {limit}")


@users_app.command("set-limit")
@handle_errors
def users_set_limit(
    name: str,
    limit: Annotated[str, typer.Argument(help="max-connections or max-channels")],
    value: Annotated[str, typer.Argument(help="the limit, or 'none' to clear it")],
    api: ApiOpt = DEFAULT_API,
) -> None:
    """Limit a user's connections or channels (RabbitMQ's user limits)."""
    require(user=name, limit=limit)
    _set_limit(api, f"user-limits/{q(name)}/{q(limit)}", value, f"user '{name}' {limit}")
