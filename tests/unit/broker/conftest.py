"""Fixtures shared by the broker unit tests."""

from __future__ import annotations

import pytest

from smartbroker.broker.vhost import VirtualHost


@pytest.fixture
def vh() -> VirtualHost:
    return VirtualHost("/")
