"""What every admin/client command shares: options, the HTTP API client, one-line errors,
tables and JSON output."""

from __future__ import annotations

import functools
import json
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, NoReturn, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import typer

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_API = "http://guest:guest@localhost:15672"

UrlOpt = Annotated[str, typer.Option("--url", envvar="SMARTBROKER_URL",
                                     help="AMQP URL of the broker")]
ApiOpt = Annotated[str, typer.Option("--api", envvar="SMARTBROKER_API",
                                     help="Management HTTP API URL (with user:password)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts)")]
VhostFilterOpt = Annotated[str | None, typer.Option("--vhost", help="Only this vhost [default: all]")]
VhostOpt = Annotated[str, typer.Option("--vhost", help="Virtual host")]
ArgOpt = Annotated[list[str] | None, typer.Option(
    "--arg", help="Argument key=value (value parsed as JSON when it can be); repeatable")]

F = TypeVar("F", bound=Callable[..., Any])


class CliError(Exception):
    """Printed as ``error: <message>`` on stderr, exit code 1."""


def safe_url(url: str) -> str:
    """The URL without its password (for messages)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def require(**names: str | None) -> None:
    """Refuse empty names before any request: the API answers an empty path segment with
    a redirect (RabbitMQ: 405) and AMQP reads an empty vhost as the default one, so an
    empty name would "succeed" at doing nothing. ``require(queue=name)``; None is unset."""
    for what, value in names.items():
        if value == "":
            raise CliError(f"{what.replace('_', ' ')} name must not be empty")


_MISSING = re.compile(r"no (queue|exchange|vhost) '(.*)' in vhost '(.*)'")


def friendly(text: str) -> str:
    """``NOT_FOUND - no queue 'x' in vhost '/'`` → ``queue 'x' not found in vhost '/'``."""
    m = _MISSING.search(text)
    if m:
        return f"{m.group(1)} '{m.group(2)}' not found in vhost '{m.group(3)}'"
    return re.sub(r"^[A-Z_]+ - ", "", text)


def handle_errors(fn: F) -> F:
    """Turn every failure into one line on stderr and a non-zero exit, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except CliError as exc:
            _error(str(exc))
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except OSError as exc:
            _error(str(exc.strerror or exc))
        except Exception as exc:  # the last net: still one line
            _error(f"{type(exc).__name__}: {exc}")

    return wrapper  # type: ignore[return-value]


def _error(message: str) -> NoReturn:
    """``error: <message>`` on one line (a broker's or an exception's text may span several)."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(1) from None


def parse_pairs(pairs: Sequence[str] | None, what: str = "argument") -> dict[str, Any]:
    """``k=v`` items as a dict; values that parse as JSON (numbers, true) keep their type."""
    out: dict[str, Any] = {}
    for item in pairs or ():
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"{what} '{item}' is not of the form key=value")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def q(segment: str) -> str:
    return quote(segment, safe="")


class Api:
    """The management HTTP API, synchronously (one request per call)."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        try:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            port = parts.port
        except ValueError as exc:
            raise CliError(f"invalid --api: {exc}") from None
        if parts.scheme not in ("http", "https"):
            raise CliError(f"invalid --api {safe_url(url)!r}: expected http(s)://user:password@host:port")
        self.user = parts.username or "guest"
        self.password = parts.password or "guest"
        host = parts.hostname or "localhost"
        if port:
            host = f"{host}:{port}"
        self.base = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        self.timeout = timeout

    def request(self, method: str, path: str, body: Any = None,
                not_found: str | None = None, headers: dict[str, str] | None = None) -> Any:
        import httpx

        try:
            resp = httpx.request(method, f"{self.base}/api/{path}", json=body, headers=headers,
                                 auth=(self.user, self.password), timeout=self.timeout)
        except httpx.HTTPError:
            raise CliError(f"cannot reach broker at {self.base}") from None
        reason = _reason(resp) if resp.status_code >= 300 else ""
        if resp.status_code == 401 and reason in ("", "Login failed"):
            raise CliError(f"access refused by {self.base} for user '{self.user}'")
        if resp.status_code == 404:
            raise CliError(not_found or friendly(reason) or f"not found: /api/{path}")
        if resp.status_code >= 300:  # a redirect is no answer either (it is not followed)
            raise CliError(friendly(reason) or f"HTTP {resp.status_code} "
                           f"{resp.reason_phrase} from {method} /api/{path}")
        if resp.status_code == 204 or not resp.content:
            return None
        try:
            return deep_json(resp.text)
        except RecursionError:
            raise CliError(f"{self.base} answered with JSON nested too deeply to read") from None
        except ValueError:
            raise CliError(f"{self.base} did not answer with JSON (is it the management API?)") from None

    def get(self, path: str, not_found: str | None = None) -> Any:
        return self.request("GET", path, not_found=not_found)

    def put(self, path: str, body: Any, not_found: str | None = None) -> Any:
        return self.request("PUT", path, body, not_found)

    def post(self, path: str, body: Any, not_found: str | None = None) -> Any:
        return self.request("POST", path, body, not_found)

    def delete(self, path: str, not_found: str | None = None) -> Any:
        return self.request("DELETE", path, not_found=not_found)


def _reason(resp: Any) -> str:
    """RabbitMQ's ``reason`` of an error answer, on one line (some span several)."""
    try:
        doc = resp.json()
    except (ValueError, RecursionError):
        return ""
    if isinstance(doc, dict):
        reason = doc.get("reason") or doc.get("error") or ""
        return "" if reason == "Not Found" else " ".join(str(reason).split())
    return ""


# -- output ----------------------------------------------------------------------------
def to_json(data: Any, indent: int | None = 2) -> str:
    """Indented, sorted JSON; for values nested too deep for ``json.dumps`` (client-chosen
    tables), the iterative encoder's compact form."""
    try:
        return json.dumps(data, indent=indent, sort_keys=True)
    except RecursionError:
        from smartbroker.management.jsonio import dumps

        return dumps(data)


def print_json(data: Any) -> None:
    sys.stdout.write(to_json(data) + "\n")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> None:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 200, soft_wrap=False)
    table = Table(*columns, box=box.SIMPLE_HEAD, title=title, title_justify="left")
    numeric = set()
    materialized = [list(r) for r in rows]
    for i, _ in enumerate(columns):
        if materialized and all(isinstance(r[i], int | float) and not isinstance(r[i], bool)
                                for r in materialized):
            numeric.add(i)
    for i in numeric:
        table.columns[i].justify = "right"
    for row in materialized:
        table.add_row(*(_cell(v) for v in row))
    console.print(table)


def _cell(value: Any) -> str:
    from rich.markup import escape

    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dict | list):
        return escape(to_json(value, indent=None)) if value else ""
    return escape(str(value))


def deep_json(text: str) -> Any:
    """``json.loads`` for answers that carry client-chosen tables (queue arguments, client
    properties) nested as deep as an AMQP frame allows: Python's parser recurses once per
    level, so a deep answer is parsed again in a thread with a large stack and a raised
    recursion limit (the CLI is one short-lived process)."""
    import json
    import sys
    import threading

    try:
        return json.loads(text)
    except RecursionError:
        pass
    result: list[Any] = []
    failure: list[BaseException] = []

    def parse() -> None:
        try:
            result.append(json.loads(text))
        except BaseException as exc:  # handed back to the caller's thread
            failure.append(exc)

    limit, stack = sys.getrecursionlimit(), threading.stack_size()
    sys.setrecursionlimit(max(limit, 200_000))
    threading.stack_size(512 << 20)
    try:
        worker = threading.Thread(target=parse)
        worker.start()
        worker.join()
    finally:
        threading.stack_size(stack)
        sys.setrecursionlimit(limit)
    if failure:
        raise failure[0]
    return result[0]

