"""CLI fixtures: a CliRunner invoking the typer app with --url/--api of the test broker."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from typer.testing import CliRunner

from smartbroker.cli import app
from smartbroker.launcher import wait_for_port


@pytest.fixture(scope="session")
def api_url(broker) -> str:
    if not broker.api:
        pytest.skip("no management API (set SMARTBROKER_TEST_API for an external broker)")
    parts = urlsplit(broker.api)
    wait_for_port(parts.hostname or "127.0.0.1", parts.port or 15672, None)  # external ones
    return broker.api


@pytest.fixture
def cli(api_url: str, broker_url: str, monkeypatch: pytest.MonkeyPatch):
    """``cli("queues", "list")`` → click Result; env points the commands at the broker."""
    monkeypatch.setenv("SMARTBROKER_API", api_url)
    monkeypatch.setenv("SMARTBROKER_URL", broker_url)
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(app, list(args), input=input, catch_exceptions=False)

    return invoke
