"""Client commands over AMQP (aio-pika): publish, get, consume."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import typer

from smartbroker.cli_common import (
    DEFAULT_URL,
    CliError,
    JsonOpt,
    UrlOpt,
    friendly,
    handle_errors,
    parse_pairs,
    safe_url,
)

T = TypeVar("T")
AmqpVhostOpt = Annotated[str | None, typer.Option(
    "--vhost", help="Virtual host [default: the one in --url]")]


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
    app.command("get")(get)
    app.command("consume")(consume)


def _with_vhost(url: str, vhost: str | None) -> str:
    if vhost is None:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, ""))


def _run(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Connect, run ``work(channel)``, close; AMQP failures become one-line CliErrors."""
    import logging

    import aio_pika
    import aiormq

    for name in ("aio_pika", "aiormq"):  # their connection-failure logs would be a 2nd line
        logging.getLogger(name).setLevel(logging.CRITICAL)

    async def main() -> T:
        try:
            conn = await aio_pika.connect(url, timeout=10)
        except (TimeoutError, OSError, aiormq.exceptions.AMQPConnectionError) as exc:
            if isinstance(exc, aiormq.exceptions.ProbableAuthenticationError):
                raise CliError(f"access refused by broker at {safe_url(url)}") from None
            raise CliError(f"cannot reach broker at {safe_url(url)}") from None
        try:
            channel = await conn.channel(publisher_confirms=True)
            return await work(channel)
        finally:
            with contextlib.suppress(Exception):  # the broker may already have closed it
                await asyncio.wait_for(conn.close(), 5)

    try:
        return asyncio.run(main())
    except aiormq.exceptions.AMQPError as exc:
        raise CliError(friendly(_reply_text(exc))) from None


def _reply_text(exc: BaseException) -> str:
    args = getattr(exc, "args", ())
    for arg in args:
        text = getattr(arg, "reply_text", None)
        if text:
            return str(text)
    return str(args[0]) if args else type(exc).__name__


def _message_doc(msg: Any) -> dict[str, Any]:
    try:
        body: Any = msg.body.decode()
        encoding = "string"
    except UnicodeDecodeError:
        body = base64.b64encode(msg.body).decode()
        encoding = "base64"
    props = {k: v for k, v in {
        "content_type": msg.content_type, "content_encoding": msg.content_encoding,
        "headers": msg.headers or None, "delivery_mode": int(msg.delivery_mode)
        if msg.delivery_mode else None, "priority": msg.priority,
        "correlation_id": msg.correlation_id, "reply_to": msg.reply_to,
        "expiration": msg.expiration, "message_id": msg.message_id,
        "timestamp": int(msg.timestamp.timestamp()) if msg.timestamp else None,
        "type": msg.type, "user_id": msg.user_id, "app_id": msg.app_id,
    }.items() if v not in (None, "")}
    return {"exchange": msg.exchange, "routing_key": msg.routing_key,
            "redelivered": bool(msg.redelivered), "properties": _jsonable(props),
            "payload": body, "payload_encoding": encoding}


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


def _show(msg: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(_message_doc(msg), sort_keys=True) + "\n")
    else:
        sys.stdout.write(msg.body.decode(errors="replace") + "\n")
    sys.stdout.flush()


# -- publish -----------------------------------------------------------------------------
@handle_errors
def publish(
    exchange: Annotated[str, typer.Argument(help="Exchange; \"\" for the default exchange")],
    routing_key: str,
    body: Annotated[str | None, typer.Argument(help="Message body (or --file)")] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read the body from a file")] = None,
    header: Annotated[list[str] | None, typer.Option("--header", "-H", help="Header k=v; repeatable")] = None,
    persistent: Annotated[bool, typer.Option("--persistent", help="delivery_mode=2")] = False,
    content_type: Annotated[str | None, typer.Option("--content-type")] = None,
    count: Annotated[int, typer.Option("--count", "-n", min=1, help="Publish N copies")] = 1,
    url: UrlOpt = DEFAULT_URL,
    vhost: AmqpVhostOpt = None,
) -> None:
    """Publish a message (with publisher confirms)."""
    import aio_pika

    if (body is None) == (file is None):
        raise CliError("give a BODY or --file, not both and not neither")
    try:
        payload = file.read_bytes() if file is not None else body.encode()  # type: ignore[union-attr]
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
    headers = parse_pairs(header, "header")
    mode = aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT

    async def work(channel: Any) -> int:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        ex = (channel.default_exchange if exchange == "" else
              await channel.get_exchange(exchange, ensure=True))
        unroutable = 0
        progress = Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(),
                            console=Console(stderr=True), transient=True, disable=count < 2)
        with progress:
            task = progress.add_task("publish", total=count)
            window: list[Awaitable[Any]] = []
            for _ in range(count):
                msg = aio_pika.Message(payload, headers=headers or None, delivery_mode=mode,
                                       content_type=content_type)
                window.append(ex.publish(msg, routing_key, mandatory=False))
                if len(window) >= 256:
                    await asyncio.gather(*window)
                    progress.advance(task, len(window))
                    window = []
            if window:
                await asyncio.gather(*window)
                progress.advance(task, len(window))
        return unroutable

    _run(_with_vhost(url, vhost), work)
    typer.echo(f"published {count} message{'s' if count != 1 else ''} to exchange "
               f"'{exchange}' with routing key '{routing_key}'", err=True)


# -- get ---------------------------------------------------------------------------------
@handle_errors
def get(
    queue: str,
    count: Annotated[int, typer.Option("--count", "-n", min=1)] = 1,
    requeue: Annotated[bool, typer.Option("--requeue", help="Put the messages back (peek)")] = False,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    vhost: AmqpVhostOpt = None,
) -> None:
    """Get up to N messages with basic.get; ack them, or --requeue them."""

    async def work(channel: Any) -> int:
        q = await channel.get_queue(queue, ensure=True)
        got = []
        for _ in range(count):
            msg = await q.get(no_ack=False, fail=False)
            if msg is None:
                break
            got.append(msg)
            _show(msg, as_json)
        for msg in got:
            if requeue:
                await msg.nack(requeue=True)
            else:
                await msg.ack()
        return len(got)

    n = _run(_with_vhost(url, vhost), work)
    if n == 0:
        typer.echo(f"queue '{queue}' is empty", err=True)


# -- consume -----------------------------------------------------------------------------
@handle_errors
def consume(
    queue: str,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1,
                                              help="Stop after N messages [default: run until Ctrl-C]")] = None,
    prefetch: Annotated[int, typer.Option("--prefetch")] = 100,
    offset: Annotated[str | None, typer.Option(
        "--offset", help="Streams: first, last, next, an offset, or an interval like 10m")] = None,
    group: Annotated[str | None, typer.Option(
        "--group", help="Streams: consume as a member of this consumer group")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    vhost: AmqpVhostOpt = None,
) -> None:
    """Consume messages (acking each) and print them."""
    arguments: dict[str, Any] = {}
    if offset is not None:
        arguments["x-stream-offset"] = int(offset) if offset.isdigit() else offset
    if group is not None:
        arguments["x-consumer-group"] = group

    async def work(channel: Any) -> int:
        await channel.set_qos(prefetch_count=prefetch)
        q = await channel.get_queue(queue, ensure=True)
        seen = 0
        async with q.iterator(arguments=arguments or None) as it:
            async for msg in it:
                _show(msg, as_json)
                await msg.ack()
                seen += 1
                if count is not None and seen >= count:
                    break
        return seen

    _run(_with_vhost(url, vhost), work)
