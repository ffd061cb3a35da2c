"""Kafka over TLS on kafka_tls_port with the AMQP TLS files (Kafka's SSL and SASL_SSL
security protocols), confluent-kafka verifying the broker against a throwaway CA; Metadata
sends a TLS client back to the TLS port."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from smartbroker.launcher import BrokerProcess, free_port
from tests.kafka.kafka_brokers import own_kafka
from tests.kafka.sasl_helpers import (
    PASSWORD,
    add_user,
    confluent_consume,
    confluent_produce,
    confluent_sasl,
    topic_name,
)
from tests.security.test_tls import pki  # noqa: F401  (the throwaway CA fixture)

pytestmark = pytest.mark.extension


@pytest.fixture(scope="module")
def tls_kafka(pki: Path) -> Iterator[BrokerProcess]:  # noqa: F811
    port = free_port()
    with own_kafka("smartbroker-kafka-tls-", extra_args=[
            "--tls-port", str(free_port()), "--tls-cert", str(pki / "server.crt"),
            "--tls-key", str(pki / "server.key"), "--tls-ca", str(pki / "ca.crt"),
            "--kafka-tls-port", str(port)]) as proc:
        proc.kafka_tls_port = port  # type: ignore[attr-defined]
        add_user(proc, "alice", verify=ssl.create_default_context(cafile=str(pki / "ca.crt")))
        yield proc


def _tls(proc: BrokerProcess, ca: Path, protocol: str, **extra: str) -> dict[str, str]:
    return {"bootstrap.servers": f"127.0.0.1:{proc.kafka_tls_port}",  # type: ignore[attr-defined]
            "security.protocol": protocol, "ssl.ca.location": str(ca / "ca.crt"), **extra}


def test_ssl_round_trip(tls_kafka: BrokerProcess, pki: Path) -> None:  # noqa: F811
    topic = topic_name("ssl")
    config = _tls(tls_kafka, pki, "SSL")
    delivered, errors = confluent_produce(config, topic, [b"over tls"])
    assert delivered == [None], errors
    assert confluent_consume(config, topic, 1) == [b"over tls"]


def test_sasl_ssl_round_trip(tls_kafka: BrokerProcess, pki: Path) -> None:  # noqa: F811
    topic = topic_name("sasl-ssl")
    config = confluent_sasl(f"127.0.0.1:{tls_kafka.kafka_tls_port}",  # type: ignore[attr-defined]
                            "SCRAM-SHA-256", "alice", PASSWORD, protocol="SASL_SSL",
                            **{"ssl.ca.location": str(pki / "ca.crt")})
    delivered, errors = confluent_produce(config, topic, [b"secret"])
    assert delivered == [None], errors
    assert confluent_consume(config, topic, 1) == [b"secret"]
    assert "authenticated as 'alice' (SASL SCRAM-SHA-256)" in tls_kafka.log()


def test_the_plain_port_still_serves_plaintext(tls_kafka: BrokerProcess) -> None:
    config = {"bootstrap.servers": tls_kafka.kafka_bootstrap}
    assert confluent_produce(config, topic_name("plain"), [b"x"])[0] == [None]


def test_a_kafka_tls_port_without_a_certificate_is_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "smartbroker", "serve", "--host", "127.0.0.1",
         "--port", str(free_port()), "--management-port", str(free_port()),
         "--prometheus-port", "0", "--kafka-port", str(free_port()),
         "--kafka-tls-port", str(free_port()), "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1] == (
        "error: kafka_tls_port needs a TLS certificate (--tls-cert, --tls-key)")
