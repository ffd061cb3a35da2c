"""Fixtures for the queue unit tests; the classic-queue ``q`` fixture lives in
classic_queue_helpers, the consumer groups' ``host`` and ``make`` in stream_group_helpers."""

from classic_queue_helpers import q  # noqa: F401
from stream_group_helpers import host, make  # noqa: F401
