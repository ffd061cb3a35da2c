"""One AMQP session for a client command (publish, get, consume): connect, run the work,
close, and turn every refusal by the broker into RabbitMQ's reply code and text.

A command sees ``error: 530 NOT_ALLOWED - vhost x not found``, never an aiormq repr: the
broker's close is what went wrong, not the follow-up errors of the calls it interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

from smartbroker.cli import decoding
from smartbroker.cli.common import CliError, safe_url

T = TypeVar("T")
CONNECT_TIMEOUT = 10.0
CLOSE_TIMEOUT = 5.0


def with_vhost(url: str, vhost: str | None) -> str:
    """``url`` with its path replaced by ``vhost`` (None: keep the URL's own)."""
    if vhost is None:
        return url
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, ""))


@dataclass
class Session:
    """The command's channel, and the first close the broker sent (its reason wins over
    the follow-up errors of calls that were in flight)."""

    connection: Any
    channel: Any
    closed: asyncio.Future[BaseException] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())

    def on_close(self, _sender: Any, exc: BaseException | None = None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc or ConnectionError("connection closed"))

    def fail(self, exc: BaseException) -> None:
        """End the session's waits with ``exc`` (e.g. the broker cancelled our consumer)."""
        if not self.closed.done():
            self.closed.set_result(exc)

    async def until_closed(self, work: Awaitable[T]) -> T:
        """``await work``, but give up when the broker closes the channel or connection."""
        task = asyncio.ensure_future(work)
        await asyncio.wait({task, self.closed}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        raise self.closed.result()

    async def watch_cancel(self, queue: str) -> None:
        """A consumer the broker cancels (its queue was deleted) ends the command."""
        underlay = await self.channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(
            lambda _frame: self.fail(CliError(f"the broker cancelled the consumer of queue "
                                              f"'{queue}' (queue deleted?)")))


def check_url(url: str) -> None:
    """A malformed --url is the user's typo, not a ValueError from deep inside aiormq."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as exc:
        raise CliError(f"invalid --url: {exc}") from None
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise CliError(f"invalid --url {safe_url(url)!r}: expected amqp://user:password@host:port/vhost")


def run_amqp(url: str, work: Callable[[Session], Awaitable[T]]) -> T:
    """Connect to ``url``, run ``work(session)`` on a confirm channel, close."""
    import aio_pika
    import aiormq

    check_url(url)

    for name in ("aio_pika", "aiormq"):  # their own logging of the same failure: a 2nd line
        logging.getLogger(name).setLevel(logging.CRITICAL)
    _keep_open_refusal_reason()

    async def main() -> T:
        try:
            connection = await aio_pika.connect(url, timeout=CONNECT_TIMEOUT)
        except (aiormq.exceptions.ConnectionClosed,
                aiormq.exceptions.ProbableAuthenticationError):
            raise
        except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
            raise CliError(f"cannot reach broker at {safe_url(url)}{_why(exc)}") from None
        try:
            channel = await connection.channel(publisher_confirms=True, on_return_raises=False)
            session = Session(connection, channel)
            connection.close_callbacks.add(session.on_close)
            channel.close_callbacks.add(session.on_close)
            try:
                return await work(session)
            except CliError:
                raise
            except Exception:
                if session.closed.done() and reply_line(session.closed.result()):
                    raise session.closed.result() from None
                raise
        finally:
            with contextlib.suppress(BaseException):  # the broker may already have closed it
                await asyncio.wait_for(connection.close(), CLOSE_TIMEOUT)

    try:
        with decoding.tolerant():
            return asyncio.run(main())
    except (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError) as exc:
        raise CliError(reply_line(exc) or f"{type(exc).__name__}: {exc}") from None
    except TimeoutError:
        raise CliError(f"timed out waiting for the broker at {safe_url(url)}") from None


def _why(exc: BaseException) -> str:
    """Why a connect failed, when it says more than "nothing listens there"."""
    import socket
    import ssl

    exc = exc.__cause__ or exc  # aiormq wraps the socket's error
    if isinstance(exc, TimeoutError):
        return " (timed out)"
    if isinstance(exc, ssl.SSLError):
        return f" (TLS: {exc.reason or exc.strerror})"
    if isinstance(exc, socket.gaierror):
        return f" ({exc.strerror})"
    return ""


def reply_line(exc: BaseException) -> str | None:
    """``<code> <TEXT>`` of a channel or connection close, or None for other errors."""
    from aiormq import channel, connection, exceptions

    if not isinstance(exc, exceptions.ChannelClosed | exceptions.ConnectionClosed
                      | exceptions.ProbableAuthenticationError):
        return None
    args = [a for a in exc.args if a is not None]
    code = next((a for a in args if isinstance(a, int)), None)
    text = next((str(a) for a in args if isinstance(a, str)), "")
    if code is None:
        codes = {cls: c for mapping in (channel.EXCEPTION_MAPPING, connection.EXCEPTION_MAPPING)
                 for c, cls in mapping.items()}
        codes[exceptions.ProbableAuthenticationError] = 403
        code = next((c for cls, c in codes.items() if type(exc) is cls), None)
    if not text and code is None:
        return None
    return f"{code} {text}".strip() if code is not None else text


def _keep_open_refusal_reason() -> None:
    """aiormq compares connection.open's answer with OpenOk *before* it looks for a
    Connection.Close, so a refused open (530: no such vhost, no access to it) surfaces
    as "Expected one of ['Connection.OpenOk'], got <Connection.Close …>" with the reply
    code and text lost. Keep the close frame and raise it as what it is."""
    from aiormq import exceptions, spec
    from aiormq.connection import Connection

    original = Connection._rpc
    if getattr(original, "keeps_close_reason", False):
        return

    async def rpc(request: Any, writer: Any, frame_receiver: Any,
                  wait_response: bool = True) -> Any:
        seen = _LastFrame(frame_receiver)
        try:
            return await original(request, writer, seen, wait_response)
        except exceptions.InvalidFrameError:
            if isinstance(seen.frame, spec.Connection.Close):
                raise exceptions.ConnectionClosed(seen.frame.reply_code,
                                                  seen.frame.reply_text) from None
            raise

    rpc.keeps_close_reason = True  # type: ignore[attr-defined]
    Connection._rpc = staticmethod(rpc)  # type: ignore[method-assign,assignment]


class _LastFrame:
    """A frame receiver that remembers the last frame it handed out."""

    def __init__(self, receiver: Any) -> None:
        self.receiver = receiver
        self.frame: Any = None

    async def get_frame(self) -> Any:
        received = await self.receiver.get_frame()
        self.frame = received[2]
        return received
