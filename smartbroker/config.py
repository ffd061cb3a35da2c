"""Settings, one pydantic model: defaults < TOML file (--config) < SMARTBROKER_* env < flags."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMARTBROKER_", extra="forbid")

    host: str = "0.0.0.0"
    port: int = Field(5672, ge=0, le=65535)
    management_port: int = Field(15672, ge=0, le=65535)
    prometheus_port: int = Field(15692, ge=0, le=65535)  # GET /metrics, no auth; 0 = off
    data_dir: Path = Path("./data")
    log_level: LogLevel = "info"

    default_user: str = "guest"
    default_pass: str = "guest"
    default_vhost: str = "/"
    # users that may only log in from 127.0.0.1/::1 (RabbitMQ's loopback_users)
    loopback_users: list[str] = Field(default_factory=lambda: ["guest"])

    channel_max: int = Field(2047, ge=1, le=65535)
    frame_max: int = Field(131072, ge=4096)
    heartbeat: int = Field(60, ge=0, le=65535)
    handshake_timeout: float = Field(10.0, gt=0)
    max_message_size: int = Field(128 * 1024 * 1024, ge=1)
    max_connections: int = Field(65535, ge=1)
    # TLS: a second AMQP listener (and HTTPS for the management API) when a cert is given
    tls_port: int = Field(5671, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None  # CA bundle to verify client certificates
    tls_verify_peer: bool = False  # ask clients for a certificate (EXTERNAL auth)
    tls_fail_if_no_peer_cert: bool = False  # and refuse clients without one
    # resource alarms (RabbitMQ's vm_memory_high_watermark and disk_free_limit): publishers
    # are blocked while the broker's RSS is above the watermark (<= 1: fraction of RAM,
    # above 1: bytes) or the data directory's disk has less free space than the limit
    memory_high_watermark: float = Field(0.4, gt=0)
    disk_free_limit: int = Field(50 * 1024 * 1024, ge=0)
    # always: fsync before every confirm, alone; batch: confirms share fsyncs (group
    # commit, default); never: no fsync (survives a process crash, not a power cut)
    fsync: Literal["always", "batch", "never"] = "batch"

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Config:
        """File values first, then env (pydantic-settings), then explicit flag overrides."""
        file_values: dict[str, Any] = {}
        if config_file is not None:
            with open(config_file, "rb") as fh:
                raw = tomllib.load(fh)
            file_values = {k.replace("-", "_"): v for k, v in raw.get("smartbroker", raw).items()}
        env_values = cls().model_dump(exclude_unset=True)
        merged = {**file_values, **env_values,
                  **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**merged)
