"""Names and keys the API accepts: what AMQP can carry (a short string, at most 255 bytes).

RabbitMQ's API refuses a queue name over 255 bytes with this text; we refuse exchange
names and routing/binding keys the same way (RabbitMQ stores those, but no AMQP client
could ever name or match them, and topic matching would walk them)."""

from __future__ import annotations

from smartbroker.management.errors import bad_request

SHORTSTR_MAX = 255


def check_name(what: str, value: str) -> None:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > SHORTSTR_MAX:
        raise bad_request(f"{what} should be less than {SHORTSTR_MAX} bytes, actually was {size}\n")
