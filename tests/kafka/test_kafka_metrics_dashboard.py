"""The dashboard's Kafka cards in headless Chromium (Debian's ``chromium`` driven by
Playwright): the Kafka port, Kafka connections and Kafka groups, refreshed as a Kafka client
connects and a group commits. Skipped when /usr/bin/chromium or playwright is missing."""

from __future__ import annotations

import socket
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from smartbroker.launcher import BrokerProcess

pytestmark = pytest.mark.extension

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 10_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _text_is(page: Any, element: str, text: str) -> None:
    page.wait_for_function("([id, want]) => document.getElementById(id)?.textContent === want",
                           arg=[element, text], timeout=WAIT_MS)


def test_kafka_cards(browser: Any, kafka_broker: BrokerProcess) -> None:
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    page = browser.new_page(viewport={"width": 1400, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(f"http://127.0.0.1:{kafka_broker.management_port}/")
        page.wait_for_selector("#app:not([hidden])", timeout=WAIT_MS)  # signed in as guest
        _text_is(page, "t-kafka-port", str(kafka_broker.kafka_port))
        assert page.locator(".card.kafka:not([hidden])").count() == 3
        _text_is(page, "t-kafka-connections", "0")
        groups_before = int(page.text_content("#t-kafka-groups") or "0")

        host, port = kafka_broker.kafka_bootstrap.split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            body = struct.pack(">hhih", 18, 0, 1, 1) + b"d"  # ApiVersions v0
            sock.sendall(struct.pack(">i", len(body)) + body)
            assert sock.recv(4)
            _text_is(page, "t-kafka-connections", "1")
        _text_is(page, "t-kafka-connections", "0")

        topic, group = f"dash-{uuid.uuid4().hex[:8]}", f"dash-{uuid.uuid4().hex[:8]}"
        producer = KafkaProducer(bootstrap_servers=kafka_broker.kafka_bootstrap)
        try:
            producer.send(topic, b"one").get(timeout=15)  # auto-creates the topic
        finally:
            producer.close()
        consumer = KafkaConsumer(bootstrap_servers=kafka_broker.kafka_bootstrap,
                                 group_id=group, enable_auto_commit=False)
        try:
            consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(0, None, -1)})
        finally:
            consumer.close()
        _text_is(page, "t-kafka-groups", str(groups_before + 1))
        assert errors == []
    finally:
        page.close()
