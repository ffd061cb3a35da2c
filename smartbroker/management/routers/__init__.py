"""One module per resource; ``ROUTERS`` is the list the app mounts, in order."""

from smartbroker.management.routers import (
    bindings,
    connections,
    dashboard,
    definitions,
    dlq,
    exchanges,
    health,
    limits,
    metrics,
    nodes,
    overview,
    policies,
    queues,
    streams,
    users,
    vhosts,
)

ROUTERS = [
    overview.router,
    nodes.router,
    vhosts.router,
    users.router,
    connections.router,
    exchanges.router,
    queues.router,
    bindings.router,
    policies.router,
    limits.router,
    definitions.router,
    health.router,
    metrics.router,
    dlq.router,
    streams.router,
    dashboard.router,
]
