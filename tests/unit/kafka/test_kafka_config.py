"""The Kafka settings: defaults as Kafka's (9092, auto-creation on), 0 turns the listener
off, and every source (flag, env, TOML) reaches them like any other setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartbroker.config import Config, ConfigError


def test_defaults() -> None:
    cfg = Config.load()
    assert (cfg.kafka_port, cfg.kafka_advertised_host, cfg.kafka_vhost,
            cfg.kafka_auto_create_topics) == (9092, None, "/", True)


def test_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    toml = tmp_path / "s.toml"
    toml.write_text('kafka-vhost = "/kafka"\nkafka_auto_create_topics = false\nkafka-port = 1\n')
    monkeypatch.setenv("SMARTBROKER_KAFKA_PORT", "0")
    cfg = Config.load(toml, kafka_advertised_host="broker.example")
    assert (cfg.kafka_port, cfg.kafka_advertised_host, cfg.kafka_vhost,
            cfg.kafka_auto_create_topics) == (0, "broker.example", "/kafka", False)


@pytest.mark.parametrize("port", [-1, 65536])
def test_port_range(port: int) -> None:
    with pytest.raises(ConfigError, match="kafka_port"):
        Config.load(kafka_port=port)
