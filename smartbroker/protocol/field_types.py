"""The field-table type names RabbitMQ prints in its error texts, for decoded values."""

from __future__ import annotations

import datetime
import decimal
from typing import Any

from smartbroker.protocol.fields import Timestamp


def amqp_type(value: Any) -> str:
    """The field-table type name RabbitMQ reports for a decoded value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, Timestamp):
        return "timestamp"
    if isinstance(value, int):
        return "signedint" if -(1 << 31) <= value < (1 << 31) else "long"
    for kinds, name in ((str | bytes, "longstr"), (dict, "table"), (list | tuple, "array"),
                        (float, "double"), (decimal.Decimal, "decimal"),
                        (datetime.datetime, "timestamp")):
        if isinstance(value, kinds):
            return name
    return "void" if value is None else type(value).__name__
