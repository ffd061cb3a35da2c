"""Topic administration: CreateTopics, DeleteTopics and DescribeConfigs.

A topic is a durable stream queue of the Kafka vhost, so these go through the paths AMQP
takes: CreateTopics is ``VirtualHost.declare_queue`` (persisted, visible over AMQP and
HTTP), DeleteTopics is ``VirtualHost.delete_queue`` (queue.delete's path). Configs are the
stream's arguments (``configs.py`` maps them).

A name held by a classic queue is not a topic: CreateTopics says TOPIC_ALREADY_EXISTS (the
name is taken, which is what Kafka says for a taken name; the message says it is a classic
queue), DeleteTopics and DescribeConfigs say UNKNOWN_TOPIC_OR_PARTITION, as Metadata does
not list it. One node is every replica: replication factor -1 or 1. In cluster mode a
factor up to the number of nodes up is the stream's ``x-initial-cluster-size``: each
partition copied on that many nodes (docs/replication.md, "Streams").
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from smartbroker.broker.core import Broker
from smartbroker.errors import AMQPError
from smartbroker.kafka import codec, configs, slices
from smartbroker.kafka.authz import topic_allowed
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.produce import STREAM_ARGUMENTS, Topics
from smartbroker.queues.stream_args import StreamSettings

log = logging.getLogger("smartbroker.kafka")
CREATE_TOPICS, CREATE_VERSIONS = 19, (2, 7)
DELETE_TOPICS, DELETE_VERSIONS = 20, (1, 6)
DESCRIBE_CONFIGS, DESCRIBE_VERSIONS = 32, (0, 4)
TOPIC, BROKER = 2, 4  # DescribeConfigs resource types
MAX_PARTITIONS = 1024  # StreamSettings' limit on x-partitions
REPLICAS = "x-initial-cluster-size"  # RabbitMQ's name for a stream's replica count
_NO_UUID = uuid.UUID(int=0)


class TopicError(Exception):
    """One topic refused: its Kafka error code and message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


class TopicAdmin:
    """The admin handlers of one listener."""

    def __init__(self, broker: Broker, streams: Topics,
                 topic_id: Callable[[str], uuid.UUID]) -> None:
        self.broker = broker
        self.streams = streams  # the vhost's name and Kafka's topic name rule
        self.node_id = 0  # this node's broker id: a topic's only replica (cluster mode: its own)
        self.brokers: Callable[[], int] = lambda: 1  # cluster mode: the up nodes (attach_peers)
        self.topic_id = topic_id
        # cluster mode: a stream's configs changed here reach every node holding it
        # (cluster/topic_configs.py); returns the etcd write's future, or None
        self.configs_changed: Callable[[Any], Any] | None = None

    def vhost(self) -> Any:
        vhost = self.broker.vhosts.get(self.streams.vhost)
        if vhost is None:
            raise TopicError(ErrorCode.UNKNOWN_SERVER_ERROR,
                             f"the Kafka vhost {self.streams.vhost!r} does not exist")
        return vhost

    def require(self, kind: str, name: str) -> None:
        """TopicError 29 unless the client may ``kind`` the topic (authz.py)."""
        if not topic_allowed(self.broker, self.streams.vhost, kind, name):
            raise TopicError(ErrorCode.TOPIC_AUTHORIZATION_FAILED,
                             f"{kind} access to topic {name!r} refused")

    def stream_of(self, name: str) -> Any:
        """The stream queue of an existing topic; TopicError 3 otherwise (a stream whose
        name Kafka forbids, declared over AMQP, is no topic: Metadata does not list it)."""
        vhost = self.vhost()
        queue = vhost.queues.get(name) if self.streams.valid_name(name) else None
        if queue is None or not queue.capabilities.offset_log:
            if self._elsewhere(name):  # cluster mode: its configs and files are the leader's
                raise TopicError(ErrorCode.NOT_LEADER_OR_FOLLOWER,
                                 f"topic {name!r} is led by another node")
            raise TopicError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION,
                             "This server does not host this topic-partition."
                             if queue is None else f"{name!r} is a classic queue, not a topic")
        return queue

    # -- CreateTopics ----------------------------------------------------------------------

    def create_topics(self, request: Request, session: Any) -> Any:
        """Created a slice of loop time at a time, answered once the new streams' files
        are durable (``slices.py``): a future unless it was quick and nothing to fsync."""
        body = request.body
        cls = codec.response_class(CREATE_TOPICS)
        names = Counter(t.name for t in body.topics)  # not list.count: 10k topics, 10^8 steps
        validate_only = bool(body.validate_only)

        def step(topic: Any) -> tuple[Any, Any]:
            try:
                if names[topic.name] > 1:
                    raise TopicError(ErrorCode.INVALID_REQUEST,
                                     f"Create topics request from client contains multiple "
                                     f"entries for the following topics: {topic.name}")
                queue, arguments, partitions = self._create(topic, validate_only)
            except TopicError as exc:
                return (topic.name, exc.code, str(exc), None, -1), None
            return ((topic.name, ErrorCode.NONE, None, arguments, partitions),
                    getattr(queue, "created", None))

        def answer(results: list[Any], failures: list[BaseException | None]) -> Any:
            topics = []
            for (name, code, message, arguments, partitions), failure in zip(
                    results, failures, strict=True):
                if failure is not None:  # created, but its files may not survive a power cut
                    code, arguments, partitions = ErrorCode.KAFKA_STORAGE_ERROR, None, -1
                    message = f"fsync of the new topic's files failed: {failure}"
                topics.append(self._created(cls, name, code, message, arguments, partitions))
            return cls(version=request.api_version, throttle_time_ms=0, topics=topics)

        return self._committed(slices.run(body.topics, step, self._one_commit, answer),
                               lambda b: b.topics)

    def _committed(self, response: Any, entries: Callable[[Any], Any]) -> Any:
        """Cluster mode: answered once etcd took the definitions (slices.after_commit)."""
        recorder = getattr(self.broker, "recorder", None)
        if recorder is None or not recorder.commits_later:
            return response  # a single node: SQLite committed in the call
        return slices.after_commit(response, recorder.pending, entries)

    def _one_commit(self) -> contextlib.AbstractContextManager[None]:
        """The definitions store's ``batch`` (store/definitions.py), when it persists."""
        listener = getattr(self.broker.vhosts.get(self.streams.vhost), "listener", None)
        store = getattr(listener, "definitions", None)
        return contextlib.nullcontext() if store is None else store.batch()

    def _create(self, topic: Any, validate_only: bool) -> tuple[Any, dict[str, Any], int]:
        """Check one CreatableTopic and (unless ``validate_only``) declare its stream."""
        name = topic.name
        if not self.streams.valid_name(name) or name.startswith("amq."):
            raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION,
                             f"Topic name {name!r} is illegal: 1-249 characters of "
                             "[a-zA-Z0-9._-], not '.' or '..', and not amq.* (reserved)")
        vhost = self.vhost()
        self.require("configure", name)
        existing = vhost.queues.get(name)
        if existing is not None or self._elsewhere(name):  # placed on another node: its
            raise TopicError(ErrorCode.TOPIC_ALREADY_EXISTS,  # proxy or not here yet
                             f"Topic '{name}' already exists."
                             if existing is None or existing.capabilities.offset_log
                             or existing.type_name == "stream"
                             else f"'{name}' is the name of a classic queue in vhost "
                                  f"'{vhost.name}'")
        partitions = self._partitions(topic, self.broker.config.kafka_num_partitions)
        try:
            arguments = configs.to_arguments((c.name, c.value) for c in topic.configs)
        except configs.ConfigError as exc:
            raise TopicError(ErrorCode.INVALID_CONFIG, str(exc)) from None
        arguments = {**STREAM_ARGUMENTS, "x-partitions": partitions, **arguments}
        if not topic.assignments and topic.replication_factor > 1:  # checked by _partitions
            arguments[REPLICAS] = topic.replication_factor  # copied to that many nodes
        try:
            if validate_only:  # what declare_queue would refuse, without declaring
                StreamSettings.parse(name, vhost.name, True, False, False, arguments)
                return None, arguments, partitions
            declared, later = configs.split_declared(arguments)
            queue, _ = vhost.declare_queue(name, durable=True, arguments=declared)
        except AMQPError as exc:
            raise TopicError(ErrorCode.INVALID_CONFIG, str(exc)) from None
        if later:  # compression.type, flush.ms...: kept in the new stream's overrides
            meta = getattr(queue, "meta", None)
            if meta is None:  # cluster mode: placed on another node, whose overrides these are
                raise TopicError(ErrorCode.INVALID_CONFIG, f"Topic '{name}' was created on "
                                 "another node without its configs "
                                 f"{', '.join(sorted(later))}: set them with AlterConfigs")
            meta.overrides.update(later)
            meta.save()
            if self.configs_changed is not None:
                self.configs_changed(queue)
        log.info("Kafka topic %r created as a stream of %d partition(s) in vhost %r",
                 name, partitions, vhost.name)
        return queue, arguments, partitions

    def _partitions(self, topic: Any, default: int = 1) -> int:
        """The partition count, from num_partitions or a manual assignment (all on us)."""
        assignments = topic.assignments or []
        rf = topic.replication_factor
        if assignments:
            if topic.num_partitions != -1 or rf != -1:
                raise TopicError(ErrorCode.INVALID_REQUEST, "Both numPartitions or "
                                 "replicationFactor and replicasAssignments were set. "
                                 "Both cannot be used at the same time.")
            indexes = sorted(a.partition_index for a in assignments)
            if indexes != list(range(len(indexes))):
                raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                 "Partitions should be a consecutive 0-based integer sequence")
            for a in assignments:
                if list(a.broker_ids) != [self.node_id]:
                    raise TopicError(ErrorCode.INVALID_REPLICA_ASSIGNMENT,
                                     f"partition {a.partition_index}: this node (broker "
                                     f"{self.node_id}) is the only replica, got {a.broker_ids}")
            partitions = len(indexes)
        else:
            partitions = default if topic.num_partitions == -1 else topic.num_partitions
            if rf == 0 or rf < -1:
                raise TopicError(ErrorCode.INVALID_REPLICATION_FACTOR,
                                 "Replication factor must be larger than 0, or -1 to use "
                                 "the default value.")
            brokers = self.brokers()
            if rf > brokers:  # cluster mode: the nodes up now (docs/replication.md)
                raise TopicError(ErrorCode.INVALID_REPLICATION_FACTOR,
                                 f"Unable to replicate the partition {rf} time(s): The target "
                                 f"replication factor of {rf} cannot be reached because only "
                                 f"{brokers} broker(s) are registered.")
        if partitions <= 0:
            raise TopicError(ErrorCode.INVALID_PARTITIONS,
                             "Number of partitions was set to an invalid non-positive value.")
        if partitions > MAX_PARTITIONS:
            raise TopicError(ErrorCode.INVALID_PARTITIONS,
                             f"Number of partitions {partitions} is over smartbroker's "
                             f"limit of {MAX_PARTITIONS}")
        return partitions

    def _created(self, cls: Any, name: str, code: ErrorCode, message: str | None,
                 arguments: dict[str, Any] | None = None, partitions: int = -1) -> Any:
        result = cls.CreatableTopicResult
        entry = result.CreatableTopicConfigs
        cfg = self.broker.config
        described = [] if arguments is None else configs.describe(
            arguments, max_message_size=cfg.max_message_size,
            flush_interval_ms=cfg.stream_flush_interval_ms)
        return result(name=name, topic_id=self.topic_id(name) if code == 0 else _NO_UUID,
                      error_code=code, error_message=message, topic_config_error_code=0,
                      num_partitions=partitions,
                      replication_factor=_factor(arguments) if code == 0 else -1,
                      configs=[entry(name=e.name, value=e.value, read_only=False,
                                     config_source=e.source, is_sensitive=False)
                               for e in described] if code == 0 else None)

    # -- DeleteTopics ----------------------------------------------------------------------

    def delete_topics(self, request: Request, session: Any) -> Any:
        body = request.body
        cls = codec.response_class(DELETE_TOPICS)
        if request.api_version >= 6:
            wanted = [(t.name, t.topic_id) for t in body.topics]
        else:
            wanted = [(name, None) for name in body.topic_names]
        results = []
        ids: dict[uuid.UUID, str] = {}  # topic id -> name, built once (not a scan per id)
        for name, tid in wanted:
            code, message = ErrorCode.NONE, None
            try:
                name = self._named(name, tid, ids)
                # the id it had, for the response; a topic led by another node is deleted
                # from the definitions, which its leader applies (cluster mode)
                tid = (self.topic_id(name) if self._elsewhere(name)
                       else self.stream_of(name).meta.topic_id)
                self.require("configure", name)
                self.vhost().delete_queue(name)
                log.info("Kafka topic %r deleted from vhost %r", name, self.streams.vhost)
            except TopicError as exc:
                code, message = exc.code, str(exc)
            except AMQPError as exc:  # not expected for a durable stream
                code, message = ErrorCode.UNKNOWN_SERVER_ERROR, str(exc)
            results.append(cls.DeletableTopicResult(
                name=name, topic_id=tid if tid is not None else _NO_UUID,
                error_code=code, error_message=message))
        return self._committed(cls(version=request.api_version, throttle_time_ms=0,
                                   responses=results), lambda b: b.responses)

    def _elsewhere(self, name: str) -> bool:
        elsewhere = self.streams.led_elsewhere
        return elsewhere is not None and elsewhere(name)

    def _named(self, name: str | None, tid: uuid.UUID | None, ids: dict[uuid.UUID, str]) -> str:
        """The topic's name, given its name or (v6, name null) its id (``ids`` filled on
        first use, checked against the queue still there)."""
        if name is not None:
            return name
        vhost = self.vhost()
        if not ids:
            ids.update((q.meta.topic_id, n) for n, q in list(vhost.queues.items())
                       if q.capabilities.offset_log and self.streams.valid_name(n))
        qname = ids.get(tid)  # type: ignore[arg-type]
        queue = vhost.queues.get(qname) if qname is not None else None
        if queue is not None and queue.capabilities.offset_log and queue.meta.topic_id == tid:
            return qname  # type: ignore[return-value]
        raise TopicError(ErrorCode.UNKNOWN_TOPIC_ID, "This server does not host this topic ID.")

    # -- DescribeConfigs -------------------------------------------------------------------

    def describe_configs(self, request: Request, session: Any) -> Any:
        body = request.body
        cls = codec.response_class(DESCRIBE_CONFIGS)
        result = cls.DescribeConfigsResult
        synonyms = request.api_version >= 1 and bool(body.include_synonyms)
        results = []
        for res in body.resources:
            code, message, entries = ErrorCode.NONE, None, []
            try:
                entries = self._resource(res.resource_type, res.resource_name,
                                         res.configuration_keys, session)
            except TopicError as exc:
                code, message = exc.code, str(exc)
            results.append(result(
                error_code=code, error_message=message, resource_type=res.resource_type,
                resource_name=res.resource_name,
                configs=[self._config(result.DescribeConfigsResourceResult, e, read_only,
                                      synonyms) for e, read_only in entries]))
        return cls(version=request.api_version, throttle_time_ms=0, results=results)

    def _resource(self, kind: int, name: str, keys: list[str] | None,
                  session: Any = None) -> list[tuple[configs.Entry, bool]]:
        if kind == TOPIC:
            if not self.streams.valid_name(name):
                raise TopicError(ErrorCode.INVALID_TOPIC_EXCEPTION, f"Topic name {name!r} is illegal")
            self.require("configure", name)  # KAFKA.md: configs need configure
            stream = self.stream_of(name)  # declared arguments, with what Kafka altered
            cfg = self.broker.config
            return [(e, False) for e in configs.describe(
                stream.meta.arguments(stream.arguments), keys, cfg.max_message_size,
                cfg.stream_flush_interval_ms)]
        if kind == BROKER:
            if name not in ("", "0"):
                raise TopicError(ErrorCode.INVALID_REQUEST,
                                 f"Unexpected broker id, expected 0 but received {name}")
            entries = self._broker_configs(session)
            return [(e, True) for e in entries if keys is None or e.name in keys]
        raise TopicError(ErrorCode.INVALID_REQUEST,
                         f"resource type {kind} is not supported (topics: 2, brokers: 4)")

    def _broker_configs(self, session: Any = None) -> list[configs.Entry]:
        """The broker settings this broker has in Kafka's terms, with the values it really
        uses (all read-only: they are ``smartbroker serve`` options or fixed here). The
        log defaults are a new stream's: kept for ever, 500 MB segments."""
        cfg = self.broker.config
        listeners, advertised = self._listeners(session)
        auto = "true" if cfg.kafka_auto_create_topics else "false"
        entry = configs.Entry
        return [entry("auto.create.topics.enable", auto, auto == "true", configs.BOOLEAN),
                entry("num.partitions", str(cfg.kafka_num_partitions),
                      cfg.kafka_num_partitions == 1, configs.INT),
                entry("default.replication.factor", "1", True, configs.INT),
                entry("broker.id", "0", False, configs.INT),
                entry("message.max.bytes", str(cfg.max_message_size), False, configs.INT),
                entry("log.dirs", str(cfg.data_dir / "streams"), False, configs.STRING),
                entry("log.retention.ms", "-1", True, configs.LONG),
                entry("log.retention.bytes", "-1", True, configs.LONG),
                entry("log.segment.bytes", "500000000", True, configs.INT),
                entry("log.cleanup.policy", "delete", True, configs.LIST),
                entry("group.initial.rebalance.delay.ms",
                      str(cfg.kafka_initial_rebalance_delay_ms), False, configs.INT),
                entry("group.min.session.timeout.ms",
                      str(cfg.kafka_group_min_session_timeout_ms),
                      cfg.kafka_group_min_session_timeout_ms == 6000, configs.INT),
                entry("group.max.session.timeout.ms",
                      str(cfg.kafka_group_max_session_timeout_ms),
                      cfg.kafka_group_max_session_timeout_ms == 1800000, configs.INT),
                entry("listeners", listeners, False, configs.STRING),
                entry("advertised.listeners", advertised, False, configs.STRING)]

    def _listeners(self, session: Any) -> tuple[str, str]:
        """Kafka's ``listeners`` (where this node binds) and ``advertised.listeners``
        (where Metadata sends clients: kafka_advertised_host, else the address this client
        reached), plain and TLS; named by security protocol, SASL_ when SASL is required."""
        cfg = self.broker.config
        sasl = "SASL_" if cfg.kafka_sasl_required else ""
        ports = [(f"{sasl}PLAINTEXT", cfg.kafka_port), (f"{sasl}SSL", cfg.kafka_tls_port)]
        ports = [(name, port) for name, port in ports if port]
        bind = "" if cfg.host in ("0.0.0.0", "::") else cfg.host  # Kafka: empty = all
        host = cfg.kafka_advertised_host or getattr(session, "local_host", None) or bind
        return (",".join(f"{name}://{_host(bind)}:{port}" for name, port in ports),
                ",".join(f"{name}://{_host(host)}:{port}" for name, port in ports))

    @staticmethod
    def _config(cls: Any, e: configs.Entry, read_only: bool, synonyms: bool) -> Any:
        """One described config; its synonyms (asked for) are itself alone: there are no
        broker-level configs a topic config falls back to here."""
        source = (e.source if not read_only or e.is_default
                  else configs.SOURCE_STATIC_BROKER)
        synonym = cls.DescribeConfigsSynonym
        return cls(name=e.name, value=e.value, read_only=read_only, config_source=source,
                   is_default=e.is_default, is_sensitive=False,
                   synonyms=[synonym(name=e.name, value=e.value, source=source)] if synonyms
                   else [], config_type=e.config_type, documentation=None)


def _host(host: str) -> str:
    """A host as a listener URL has it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def _factor(arguments: dict[str, Any] | None) -> int:
    """A created topic's replication factor: its stream's replica count."""
    size = (arguments or {}).get(REPLICAS, 1)
    return size if isinstance(size, int) and size > 0 else 1
