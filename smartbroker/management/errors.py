"""HTTP errors as RabbitMQ's management plugin returns them."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from smartbroker.errors import AMQPError

log = logging.getLogger("smartbroker.management")

REALM = 'Basic realm="RabbitMQ Management"'


class ApiError(Exception):
    def __init__(self, status: int, error: str, reason: Any,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.error = error
        self.reason = reason
        self.headers = headers


def not_found() -> ApiError:
    return ApiError(404, "Object Not Found", "Not Found")


def bad_request(reason: str) -> ApiError:
    return ApiError(400, "bad_request", reason)


def invalid_regex(exc: Any) -> ApiError:
    """``InvalidRegex`` as RabbitMQ answers it: ``["invalid_regexp", pattern, detail]``."""
    return ApiError(400, "bad_request", exc.reason())


def not_authorized(reason: str = "Login failed") -> ApiError:
    return ApiError(401, "not_authorized", reason, {"WWW-Authenticate": REALM})


def not_authorised(reason: str) -> ApiError:
    """An authenticated user refused (RabbitMQ spells this one with an s, and sends no
    Basic challenge: logging in again would not help)."""
    return ApiError(401, "not_authorised", reason)


def from_amqp(err: AMQPError) -> ApiError:
    """A broker refusal (inequivalent arg, reserved name...) as RabbitMQ's API reports it."""
    if err.code == 404:
        return ApiError(404, "not_found", err.text)
    if err.code == 403:
        return ApiError(403, "access_refused", err.text)
    return bad_request(err.text)


def _response(err: ApiError) -> JSONResponse:
    return JSONResponse({"error": err.error, "reason": err.reason}, status_code=err.status,
                        headers=err.headers)


async def api_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    if exc.headers and request.headers.get("x-requested-with") == "XMLHttpRequest":
        # a browser shows its own login dialog on a Basic challenge (and fetch() hangs
        # until it is answered): script requests (the dashboard) get the 401 without it
        exc = ApiError(exc.status, exc.error, exc.reason)
    return _response(exc)


async def amqp_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AMQPError)
    return _response(from_amqp(exc))


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        return _response(not_found())
    if exc.status_code == 405:
        return _response(ApiError(405, "Method Not Allowed", "Method Not Allowed"))
    return _response(ApiError(exc.status_code, "error", str(exc.detail)))


async def invalid_input_handler(request: Request, exc: Exception) -> JSONResponse:
    """The net under input validation: a value the broker's code cannot take (a type or
    size no check above caught) is the client's error, 400, not a 500 with a traceback.
    One warning line keeps such a gap visible so it can get its own check."""
    from smartbroker.broker.permissions import InvalidRegex

    if isinstance(exc, InvalidRegex):
        return _response(invalid_regex(exc))
    log.warning("management API: %s %s refused: %s: %s", request.method, request.url.path,
                type(exc).__name__, exc)
    return _response(bad_request(f"{type(exc).__name__}: {exc}"))


INVALID_INPUT = (ValueError, TypeError, OverflowError, RecursionError, UnicodeError)


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return _response(bad_request(describe_validation(exc.errors())))


def describe_validation(errors: Any) -> str:
    parts = []
    for e in errors:
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        if e.get("type") == "json_invalid":
            return "not_json"
        if e.get("type") == "missing":
            parts.append(f"{{key_missing,{'.'.join(loc)}}}")
        else:
            parts.append(f"{'.'.join(loc) or 'body'}: {e.get('msg')}")
    return "[" + ",".join(parts) + "]"
