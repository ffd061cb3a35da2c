"""Fixtures for the queue unit tests; the classic-queue ``q`` fixture lives in classic_queue_helpers."""

from classic_queue_helpers import q  # noqa: F401
