"""Settings, one pydantic model: defaults < TOML file (--config) < SMARTBROKER_* env < flags.

The merge is pydantic-settings' own: ``settings_customise_sources`` lists the sources from
strongest to weakest (flags arrive as init arguments). ``Config.load`` turns every way a
setting can be wrong into one ``ConfigError`` line, so ``serve`` never shows a traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)

LogLevel = Literal["debug", "info", "warning", "error", "critical"]
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,199}$"  # node and cluster names: safe inside etcd keys


class ConfigError(ValueError):
    """A setting that cannot be used, already phrased as one line for the operator."""


def etcd_endpoint(url: str) -> str:
    """``http://host:port`` or ``host:port`` (port 2379 when left out) as ``http://host:port``;
    anything else is a ValueError naming it (aetcd speaks plain gRPC: no https)."""
    text = url.strip()
    try:
        parts = urlsplit(text if "://" in text else f"http://{text}")
        port = parts.port or 2379
    except ValueError:
        raise ValueError(f"etcd endpoint {text!r} is not a URL (http://host:port)") from None
    if parts.scheme == "https":
        raise ValueError(f"etcd endpoint {text!r}: only http:// endpoints are supported")
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.username:
        raise ValueError(f"etcd endpoint {text!r} is not a URL (http://host:port)")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"http://{host}:{port}"


class _TomlFile(TomlConfigSettingsSource):
    """The ``--config`` file: keys at the top level or under ``[smartbroker]``, spelt as
    the flags (``log-level``) or as the fields (``log_level``). Unlike the stock source, a
    missing file is an error: the operator named it."""

    def _read_files(self, files: Any, deep_merge: bool = False) -> dict[str, Any]:
        return {} if files is None else self._read_file(Path(files))

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        with open(file_path, "rb") as fh:
            raw = tomllib.load(fh)
        table = raw.get("smartbroker", raw)
        if not isinstance(table, dict):
            raise ConfigError(f"config file {file_path}: 'smartbroker' is not a table")
        return {k.replace("-", "_"): v for k, v in table.items()}


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SMARTBROKER_", extra="forbid")
    toml_file: ClassVar[Path | None] = None  # set on the subclass ``load`` builds

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
    # with fsync=batch, how often a stream partition's records that nobody waits for
    # (no confirm of a persistent message, no Kafka acks) are fsynced; they reach the OS
    # within 5 ms whatever this is. Kafka's log.flush.interval.ms (default: never);
    # RabbitMQ's streams never fsync
    stream_flush_interval_ms: int = Field(1000, ge=1)
    # milliseconds between samples of the message counters behind the API's *_details.rate
    # (RabbitMQ's collect_statistics_interval, same default)
    collect_statistics_interval: int = Field(5000, ge=10)
    # the Kafka listener (issue 14), 0 = off. Metadata sends clients to
    # kafka_advertised_host (unset: the address each client connected to, which is right
    # unless there is NAT or a proxy between them); the stream queues of kafka_vhost are
    # the topics
    kafka_port: int = Field(9092, ge=0, le=65535)
    kafka_advertised_host: str | None = None
    kafka_vhost: str = "/"
    kafka_auto_create_topics: bool = True  # Kafka's auto.create.topics.enable (with Produce)
    kafka_num_partitions: int = Field(1, ge=1, le=1024)  # Kafka's num.partitions (auto, -1)
    # Kafka security (issue 14 part 5). kafka_tls_port: a second Kafka listener with TLS as
    # for AMQP (tls_cert/tls_key/tls_ca), serving SSL and SASL_SSL; 0 = off.
    # SASL (PLAIN, SCRAM-SHA-256/512) is offered on every Kafka listener; a client without
    # it acts as the default user under its loopback rule, unless kafka_sasl_required
    # (Kafka's SASL_PLAINTEXT/SASL_SSL): then only ApiVersions and SASL are served before
    # a client has authenticated
    kafka_tls_port: int = Field(0, ge=0, le=65535)
    kafka_sasl_required: bool = False
    # Kafka's group.initial.rebalance.delay.ms: how long a group's first rebalance waits for
    # more members to join (each join extends it, up to the rebalance timeout)
    kafka_initial_rebalance_delay_ms: int = Field(3000, ge=0)
    # Kafka's group.min/max.session.timeout.ms: JoinGroup with a session timeout outside
    # them is refused (INVALID_SESSION_TIMEOUT), so no member can be checked too often or
    # hold its partitions too long after it has gone
    kafka_group_min_session_timeout_ms: int = Field(6000, ge=0)
    kafka_group_max_session_timeout_ms: int = Field(1800000, ge=0)
    # cluster mode (issue 15, docs/cluster.md): with etcd endpoints this node joins the
    # cluster cluster_name; without them it is the single node it always was.
    # etcd: "http://host:port" or "host:port", several comma-separated (flag or env)
    etcd: Annotated[list[str], NoDecode] = Field(default_factory=list)
    node_name: str | None = Field(None, pattern=_NAME)  # unset: smartbroker@<hostname>
    cluster_name: str = Field("smartbroker", pattern=_NAME)
    cluster_port: int = Field(25672, ge=0, le=65535)  # the cluster link (RabbitMQ's 25672)
    advertise_host: str | None = None  # what other nodes dial; unset: host, or the hostname
    cluster_secret: str | None = None  # unset: one created in etcd by the first node
    # seconds a node's membership lease lives without a keepalive: how long a kill -9
    # takes to be seen by the others (etcd raises anything under 2 to 2)
    cluster_lease_ttl: int = Field(5, ge=2, le=300)
    # seconds a definitions change (declare, bind, delete, user...) waits for its etcd
    # commit before the client gets RabbitMQ's "metadata store operation timed out" (541;
    # 503 from the API): etcd unreachable never leaves a declare waiting forever
    cluster_metadata_timeout: float = Field(5.0, gt=0, le=300)
    # ms a replica may lag its leader before it leaves the in-sync set (Kafka's
    # replica.lag.time.max.ms; docs/replication.md)
    replica_lag_ms: int = Field(10_000, ge=100, le=3_600_000)
    # SO_REUSEPORT on the AMQP and Kafka listeners: set by ``serve --workers`` on its
    # nodes, which share those ports (cluster/workers.py); off, a second broker on the
    # port is refused as before
    reuse_port: bool = False

    @field_validator("etcd", mode="before")
    @classmethod
    def _etcd_list(cls, value: Any) -> Any:
        """"a,b" from a flag or the environment, a list from TOML; each endpoint checked."""
        if value is None:
            return []
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, list):
            return items  # pydantic says what is wrong with it
        return [etcd_endpoint(str(item)) for item in items if str(item).strip()]

    @model_validator(mode="after")
    def _session_bounds(self) -> Config:
        """A minimum over the maximum would refuse every JoinGroup: say so at startup."""
        if self.kafka_group_min_session_timeout_ms > self.kafka_group_max_session_timeout_ms:
            raise ValueError("kafka_group_min_session_timeout_ms is over "
                             "kafka_group_max_session_timeout_ms")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Strongest first: flags, SMARTBROKER_* env, the TOML file (no .env, no secrets dir)."""
        return init_settings, env_settings, _TomlFile(settings_cls, cls.toml_file)

    @classmethod
    def load(cls, config_file: Path | None = None, **overrides: Any) -> Config:
        """The settings from every source; ``overrides`` (the flags) that are None are unset.

        Raises ConfigError with one readable line for a bad value, an unknown key, an
        unreadable or malformed file, or an environment variable that does not parse."""
        flags = {k: v for k, v in overrides.items() if v is not None}
        # a subclass per call carries the file name to the source: no module-level state
        loader = type(cls.__name__, (cls,), {"toml_file": config_file, "__module__": cls.__module__})
        try:
            return loader(**flags)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(map(str, first["loc"])) or "?"
            msg = first["msg"].removeprefix("Value error, ")
            raise ConfigError(f"invalid setting {where}: {msg}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {config_file} is not valid TOML: {exc}") from None
        except SettingsError as exc:  # e.g. SMARTBROKER_LOOPBACK_USERS that is not JSON
            raise ConfigError(f"invalid setting: {exc}") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {config_file}: "
                              f"{exc.strerror or exc}") from None
