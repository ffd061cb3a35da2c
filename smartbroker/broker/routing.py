"""The one routing loop: where a message published to an exchange goes.

It follows exchange-to-exchange bindings with a visited set (so cycles end) and falls
back to an exchange's alternate exchange (its argument, else an ``alternate-exchange``
policy) when that exchange routes nowhere, as RabbitMQ does. Headers are decoded only
when a headers exchange is on the way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from smartbroker.broker.exchange import Exchange
from smartbroker.broker.policies import effective_policy
from smartbroker.message import Message
from smartbroker.queues.base import Queue

if TYPE_CHECKING:
    from smartbroker.broker.vhost import VirtualHost


def alternate_exchange(vhost: VirtualHost, ex: Exchange) -> str | None:
    """The exchange's argument wins; else an ``alternate-exchange`` policy key."""
    if ex.alternate_exchange:
        return ex.alternate_exchange
    if not vhost.policies:
        return None
    policy = effective_policy(vhost.policies, ex.name, "exchange")
    value = policy.definition.get("alternate-exchange") if policy else None
    return value if isinstance(value, str) and value else None


def route(vhost: VirtualHost, exchange: Exchange, message: Message,
          routing_keys: list[str]) -> set[Queue]:
    """Queues the message goes to; follows e2e bindings and alternate exchanges."""
    queues: set[Queue] = set()
    visited = {exchange}
    pending = [exchange]
    headers = message.headers if exchange.router.uses_headers else None
    while pending:
        ex = pending.pop()
        found = False
        for key in routing_keys:
            for dest in ex.router.route(key, headers if ex.router.uses_headers else None):
                found = True
                if isinstance(dest, Exchange):
                    if dest not in visited:
                        visited.add(dest)
                        if dest.router.uses_headers and headers is None:
                            headers = message.headers
                        pending.append(dest)
                else:
                    queues.add(dest)
        if not found and (ae_name := alternate_exchange(vhost, ex)):
            ae = vhost.exchanges.get(ae_name)
            if ae is not None and ae not in visited:
                visited.add(ae)
                if ae.router.uses_headers and headers is None:
                    headers = message.headers
                pending.append(ae)
    return queues
