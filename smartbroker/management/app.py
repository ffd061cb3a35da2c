"""The FastAPI application: error handlers, routers, raw-path routing."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from smartbroker.errors import AMQPError
from smartbroker.management import errors
from smartbroker.management.caught_up import CaughtUp
from smartbroker.management.committed import DefinitionsCommitted
from smartbroker.management.deps import RawPathMiddleware
from smartbroker.management.formatting import product_version
from smartbroker.management.metrics import registry_for
from smartbroker.management.routers import ROUTERS
from smartbroker.management.state import ManagementState


def create_app(state: ManagementState) -> Any:
    """The management ASGI app for ``state`` (wrapped to route on the raw path)."""
    app = FastAPI(title="smartbroker management", version=product_version(),
                  docs_url="/api/docs", redoc_url=None, openapi_url="/api/openapi.json")
    app.state.management = state
    app.state.metrics_registry = registry_for(state)
    app.add_exception_handler(errors.ApiError, errors.api_error_handler)
    app.add_exception_handler(AMQPError, errors.amqp_error_handler)
    app.add_exception_handler(StarletteHTTPException, errors.http_error_handler)
    app.add_exception_handler(RequestValidationError, errors.validation_error_handler)
    for exc_class in errors.INVALID_INPUT:
        app.add_exception_handler(exc_class, errors.invalid_input_handler)
    for router in ROUTERS:
        app.include_router(router)
    return DefinitionsCommitted(CaughtUp(RawPathMiddleware(app), state), state)
