"""Client commands over AMQP (aio-pika): publish, get, consume."""

from __future__ import annotations

import asyncio
import base64
import sys
from collections.abc import Awaitable
from pathlib import Path
from typing import Annotated, Any

import typer

from smartbroker.cli.amqp import Session, run_amqp, with_vhost
from smartbroker.cli.common import (
    DEFAULT_URL,
    CliError,
    JsonOpt,
    UrlOpt,
    handle_errors,
    parse_pairs,
    require,
)
from smartbroker.cli.decoding import timestamp_seconds
from smartbroker.management.jsonio import dumps, jsonable

AmqpVhostOpt = Annotated[str | None, typer.Option(
    "--vhost", help="Virtual host [default: the one in --url]")]


def register(app: typer.Typer) -> None:
    app.command("publish")(publish)
    app.command("get")(get)
    app.command("consume")(consume)


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
        "timestamp": timestamp_seconds(msg.timestamp),
        "type": msg.type, "user_id": msg.user_id, "app_id": msg.app_id,
    }.items() if v not in (None, "")}
    return {"exchange": msg.exchange, "routing_key": msg.routing_key,
            "redelivered": bool(msg.redelivered), "properties": jsonable(props),
            "payload": body, "payload_encoding": encoding}


def _show(msg: Any, as_json: bool) -> None:
    if as_json:
        sys.stdout.write(dumps(_message_doc(msg)) + "\n")
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
    """Publish a message (mandatory, with publisher confirms): a message that reaches no
    queue is returned by the broker (312 NO_ROUTE) and the command fails."""
    import aio_pika

    require(vhost=vhost)
    if (body is None) == (file is None):
        raise CliError("give a BODY or --file, not both and not neither")
    if len(routing_key.encode()) > 255:
        raise CliError("routing key is longer than 255 bytes")
    try:
        payload = file.read_bytes() if file is not None else body.encode()  # type: ignore[union-attr]
    except OSError as exc:
        raise CliError(f"cannot read {file}: {exc.strerror or exc}") from None
    headers = parse_pairs(header, "header")
    mode = aio_pika.DeliveryMode.PERSISTENT if persistent else aio_pika.DeliveryMode.NOT_PERSISTENT

    async def work(session: Session) -> Outcome:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        channel = session.channel
        ex = (channel.default_exchange if exchange == "" else
              await session.until_closed(channel.get_exchange(exchange, ensure=True)))
        outcome = Outcome()
        console = Console(stderr=True)  # no bar (not even its blank line) when not a tty
        progress = Progress(TextColumn("publishing"), BarColumn(), MofNCompleteColumn(),
                            console=console, transient=True,
                            disable=count < 2 or not console.is_terminal)
        with progress:
            task = progress.add_task("publish", total=count)
            window: list[Awaitable[Any]] = []
            for i in range(count):
                msg = aio_pika.Message(payload, headers=headers or None, delivery_mode=mode,
                                       content_type=content_type)
                window.append(ex.publish(msg, routing_key, mandatory=True))
                if len(window) >= 256 or i == count - 1:
                    outcome.add(await session.until_closed(asyncio.gather(*window)))
                    progress.advance(task, len(window))
                    window = []
        return outcome

    outcome = run_amqp(with_vhost(url, vhost), work)
    where = f"exchange '{exchange}' with routing key '{routing_key}'"
    if outcome.returned:
        raise CliError(f"{_of(outcome.returned, count)} returned as unroutable: "
                       f"{outcome.return_reason} ({where})")
    if outcome.nacked:
        raise CliError(f"{_of(outcome.nacked, count)} refused by the broker (basic.nack) "
                       f"({where})")
    typer.echo(f"published {_of(count, count)} to {where}", err=True)


class Outcome:
    """What the broker said about each published message: confirmed, returned or nacked."""

    def __init__(self) -> None:
        self.returned = 0
        self.nacked = 0
        self.return_reason = ""

    def add(self, confirmations: list[Any]) -> None:
        from aiormq import spec
        from aiormq.abc import DeliveredMessage

        for answer in confirmations:
            if isinstance(answer, DeliveredMessage) and isinstance(answer.delivery,
                                                                   spec.Basic.Return):
                self.returned += 1
                self.return_reason = f"{answer.delivery.reply_code} {answer.delivery.reply_text}"
            elif isinstance(answer, spec.Basic.Nack):
                self.nacked += 1


def _of(n: int, total: int) -> str:
    noun = "message" if total == 1 else "messages"
    return f"{n} {noun}" if n == total else f"{n} of {total} {noun}"


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
    require(queue=queue, vhost=vhost)

    async def work(session: Session) -> int:
        q = await session.until_closed(session.channel.get_queue(queue, ensure=True))
        got = []
        for _ in range(count):
            msg = await session.until_closed(q.get(no_ack=False, fail=False))
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

    n = run_amqp(with_vhost(url, vhost), work)
    if n == 0:
        typer.echo(f"queue '{queue}' is empty", err=True)


# -- consume -----------------------------------------------------------------------------
@handle_errors
def consume(
    queue: str,
    count: Annotated[int | None, typer.Option("--count", "-n", min=1,
                                              help="Stop after N messages [default: run until Ctrl-C]")] = None,
    prefetch: Annotated[int, typer.Option("--prefetch", min=1)] = 100,
    offset: Annotated[str | None, typer.Option(
        "--offset", help="Streams: first, last, next, an offset, or an interval like 10m")] = None,
    group: Annotated[str | None, typer.Option(
        "--group", help="Streams: consume as a member of this consumer group")] = None,
    as_json: JsonOpt = False,
    url: UrlOpt = DEFAULT_URL,
    vhost: AmqpVhostOpt = None,
) -> None:
    """Consume messages and print them, acking each one printed.

    With --count N the broker is never given credit for more than N deliveries, so the
    command stops after exactly N, acks them all and leaves the rest in the queue (or,
    for a stream, unread) — nothing is nacked or redelivered.
    """
    require(queue=queue, vhost=vhost, group=group)
    if offset == "":
        raise CliError("--offset must not be empty: first, last, next, an offset or an interval")
    arguments: dict[str, Any] = {}
    if offset is not None:
        arguments["x-stream-offset"] = int(offset) if offset.isdigit() else offset
    if group is not None:
        arguments["x-consumer-group"] = group
    window = prefetch if count is None else min(prefetch, count)

    async def work(session: Session) -> int:
        channel = session.channel
        await session.until_closed(channel.set_qos(prefetch_count=window))
        q = await session.until_closed(channel.get_queue(queue, ensure=True))
        await session.watch_cancel(queue)
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        tag = await session.until_closed(q.consume(inbox.put, arguments=arguments or None))
        seen = acked = 0
        msg = None
        while count is None or seen < count:
            msg = await session.until_closed(inbox.get())
            _show(msg, as_json)
            seen += 1
            # ack as we go only while the credit it frees cannot bring a delivery past N
            if count is None or seen <= count - window:
                await msg.ack()
                acked = seen
        if msg is not None and acked < seen:
            # cancel first: the credit this ack frees would bring deliveries that the
            # close then hands back as redelivered
            await session.until_closed(q.cancel(tag))
            await msg.ack(multiple=True)
        return seen

    run_amqp(with_vhost(url, vhost), work)
