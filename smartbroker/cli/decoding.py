"""The CLI's AMQP client reads whatever the broker may deliver.

aio-pika decodes through pamqp, which fails on messages RabbitMQ (and we) deliver as
they were published: short strings that are not UTF-8, timestamps in milliseconds or
microseconds (beyond ``datetime``), tables nested deeper than its recursion allows. A
``get`` or ``consume`` of such a message would end in ``InvalidFrameError``. In the CLI
process only, content headers are decoded by the broker's own defensive decoder
(``property_codec``; method-frame tables by ``codec``'s) while a command runs, and
aio-pika is told to keep a raw ``Timestamp`` as it is.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def tolerant() -> Iterator[None]:
    """While the command runs: content headers decoded defensively, raw timestamps kept."""
    from aio_pika import message as aio_message
    from pamqp import header

    import smartbroker.protocol.codec  # noqa: F401 - replaces pamqp's method-frame tables
    from smartbroker.protocol.fields import Timestamp
    from smartbroker.protocol.property_codec import decode_properties

    def unmarshal(self: Any, data: bytes) -> None:
        self.class_id, self.weight, self.body_size = _HEADER_PREFIX.unpack_from(data)
        self.properties = decode_properties(data)

    for hook in (aio_message.encode_timestamp, aio_message.decode_timestamp):
        hook.register(Timestamp)(_same)
    original = header.ContentHeader.unmarshal
    header.ContentHeader.unmarshal = unmarshal  # type: ignore[method-assign]
    try:
        yield
    finally:
        header.ContentHeader.unmarshal = original  # type: ignore[method-assign]


def _same(value: Any) -> Any:
    return value


_HEADER_PREFIX = struct.Struct("!HHQ")


def timestamp_seconds(value: Any) -> int | None:
    """A message's timestamp as the integer on the wire (a ``datetime`` from aio-pika, or
    the raw ``Timestamp`` kept by ``install``)."""
    if value is None:
        return None
    if hasattr(value, "timestamp"):
        return int(value.timestamp())
    return int(value)
