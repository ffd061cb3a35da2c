"""Management: a RabbitMQ-compatible HTTP API, Prometheus metrics, (later) a dashboard.

The HTTP server is uvicorn running inside the broker's own event loop, so handlers read
and change broker state directly, with no locks. ``start_management`` is the one entry
point the server uses; routers live one module per resource in ``routers/`` and are
listed in ``routers.ROUTERS`` (adding an endpoint family is adding a module there).
"""

from smartbroker.management.server import ManagementServer, start_management

__all__ = ["ManagementServer", "start_management"]
