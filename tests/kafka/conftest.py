"""A broker with its Kafka listener on a free port, shared by the module's tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import EXTERNAL_URL, BrokerProcess, assert_clean_log


@pytest.fixture(scope="module")
def kafka_broker() -> Iterator[BrokerProcess]:
    if EXTERNAL_URL:
        pytest.skip("the Kafka listener is smartbroker's own")
    tmp = Path(tempfile.mkdtemp(prefix="smartbroker-kafka-"))
    proc = BrokerProcess(tmp / "data", kafka=True).start()
    try:
        yield proc
    finally:
        proc.stop()
        try:
            assert_clean_log(proc)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
