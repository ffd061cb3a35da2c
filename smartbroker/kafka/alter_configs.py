"""AlterConfigs and IncrementalAlterConfigs for topics; the broker's configs are read-only.

A stream's declared arguments never change (AMQP redeclares are checked against them, as
RabbitMQ's arguments are immutable): what Kafka sets is stored beside them as overrides
(``StreamMeta.overrides``, queue argument -> value or None for "back to the default"),
fsynced before the answer, applied at once (the retention timer reads the new settings,
new segments take the new size) and again after a restart. DescribeConfigs shows the
result as DYNAMIC_TOPIC_CONFIG, over AMQP ``/api/queues`` still shows the declaration.

* AlterConfigs replaces the topic's whole config set: a config it leaves out goes back to
  its default, even one the declaration set.
* IncrementalAlterConfigs SETs, DELETEs (back to the default), APPENDs to or SUBTRACTs from
  (list configs only: ``cleanup.policy``) single configs.

Refusals as Kafka's: an unknown or unsupported config is INVALID_CONFIG (40), a bad value
too, a config named twice INVALID_REQUEST; an unknown topic UNKNOWN_TOPIC_OR_PARTITION; no
``configure`` permission TOPIC_AUTHORIZATION_FAILED. Broker configs (resource type 4) come
from ``smartbroker serve`` options, so altering them is INVALID_REQUEST saying so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

from smartbroker.broker.policies import effective_policy
from smartbroker.errors import AMQPError
from smartbroker.kafka import codec, configs, stored_configs
from smartbroker.kafka.admin import BROKER, TOPIC, TopicAdmin, TopicError
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.queues.stream_admin import check_overrides, set_overrides

log = logging.getLogger("smartbroker.kafka")
ALTER_CONFIGS, ALTER_VERSIONS = 33, (0, 2)
INCREMENTAL_ALTER_CONFIGS, INCREMENTAL_VERSIONS = 44, (0, 1)
SET, DELETE, APPEND, SUBTRACT = 0, 1, 2, 3  # Kafka's AlterConfigOp.OpType


class ConfigAlterer:
    """The two alter handlers, on the topic lookups of ``TopicAdmin``."""

    def __init__(self, admin: TopicAdmin) -> None:
        self.admin = admin

    def alter_configs(self, request: Request, session: Any) -> Any:
        return self._answer(ALTER_CONFIGS, request, incremental=False)

    def incremental_alter_configs(self, request: Request, session: Any) -> Any:
        return self._answer(INCREMENTAL_ALTER_CONFIGS, request, incremental=True)

    def _answer(self, api_key: int, request: Request, *, incremental: bool) -> Any:
        body = request.body
        cls = codec.response_class(api_key)
        responses = []
        shared: list[Any] = []  # cluster mode: etcd writes the answer waits for
        for res in body.resources:
            code, message = ErrorCode.NONE, None
            try:
                shared.append(self._alter(res, incremental, bool(body.validate_only)))
            except TopicError as exc:
                code, message = exc.code, str(exc)
            responses.append(cls.AlterConfigsResourceResponse(
                error_code=code, error_message=message, resource_type=res.resource_type,
                resource_name=res.resource_name))
        response = cls(version=request.api_version, throttle_time_ms=0, responses=responses)
        waits = [f for f in shared if f is not None]
        return _after(response, waits) if waits else response

    def _alter(self, res: Any, incremental: bool, validate_only: bool) -> Any:
        """Alter one resource; returns what the answer waits for (cluster mode: the
        configs' etcd record, as Kafka answers once the controller stored them)."""
        names = [c.name for c in res.configs]
        if len(set(names)) != len(names):
            raise TopicError(ErrorCode.INVALID_REQUEST, "Error due to duplicate config keys")
        if res.resource_type == BROKER:
            if res.resource_name not in ("", "0"):
                raise TopicError(ErrorCode.INVALID_REQUEST, "Unexpected broker id, expected 0 "
                                 f"but received {res.resource_name}")
            if not names:  # no dynamic broker configs to reset: nothing to do
                return None
            raise TopicError(ErrorCode.INVALID_REQUEST,
                             "smartbroker's broker configs cannot be updated over Kafka: they "
                             "are `smartbroker serve` options (" + ", ".join(names) + ")")
        if res.resource_type != TOPIC:
            raise TopicError(ErrorCode.INVALID_REQUEST,
                             f"resource type {res.resource_type} is not supported (topics: 2)")
        name = res.resource_name
        self.admin.require("configure", name)
        stream = self.admin.stream_of(name)
        current = {e.name: e.value for e in configs.describe(
            stream.meta.arguments(stream.arguments)) if not e.is_default}
        try:
            wanted = (_incremental(current, res.configs) if incremental
                      else {c.name: c.value for c in res.configs})
            arguments = configs.to_arguments(wanted.items())
        except configs.ConfigError as exc:
            raise TopicError(ErrorCode.INVALID_CONFIG, str(exc)) from None
        overrides = configs.overrides(stream.arguments, arguments)
        try:
            check_overrides(stream, overrides)
            if validate_only:
                return None
            vhost = self.admin.vhost()
            policy = effective_policy(vhost.policies, name, "queue")
            set_overrides(stream, overrides, policy.definition if policy else None)
        except AMQPError as exc:
            raise TopicError(ErrorCode.INVALID_CONFIG, str(exc)) from None
        except OSError as exc:
            raise TopicError(ErrorCode.KAFKA_STORAGE_ERROR, f"cannot store configs: {exc}") from None
        log.info("Kafka topic %r configs altered: %s", name,
                 ", ".join(f"{k}={v}" for k, v in sorted(wanted.items())) or "all defaults")
        shared = self.admin.configs_changed
        return None if shared is None else shared(stream)


def _after(response: Any, waits: list[Any]) -> asyncio.Future[Any]:
    """``response`` once the etcd writes in ``waits`` are done (a failed one is logged:
    the change holds here and is written again by the next alter)."""
    async def answer() -> Any:
        for outcome in await asyncio.gather(*waits, return_exceptions=True):
            if isinstance(outcome, BaseException):
                log.warning("altered topic configs not stored in etcd: %s", outcome)
        return response
    return asyncio.ensure_future(answer())


def _incremental(current: dict[str, str], ops: Iterable[Any]) -> dict[str, str | None]:
    """The topic's non-default configs after IncrementalAlterConfigs' operations."""
    out: dict[str, str | None] = dict(current)
    for op in ops:
        name, value, kind = op.name, op.value, op.config_operation
        mapped = configs.MAPPED.get(name) or stored_configs.STORED.get(name)
        if kind == DELETE:
            if mapped is None:
                configs.to_arguments([(name, None)])  # unknown or unsupported: refused
            out.pop(name, None)
            continue
        if kind not in (SET, APPEND, SUBTRACT):
            raise TopicError(ErrorCode.INVALID_REQUEST, f"Unknown operation type {kind}")
        if value is None:
            raise TopicError(ErrorCode.INVALID_REQUEST, f"Null value not supported for : {name}")
        if kind == SET or mapped is None:
            out[name] = value  # an unknown name is refused by to_arguments
            continue
        if mapped.config_type != configs.LIST:
            verb = "append" if kind == APPEND else "subtract"
            raise TopicError(ErrorCode.INVALID_CONFIG,
                             f"Config value {verb} is not allowed for config key: {name}")
        text = out.get(name)  # "" (an empty cleanup.policy) is a value, not the default
        have = [v for v in (mapped.default if text is None else text).split(",") if v]
        given = [v.strip() for v in value.split(",") if v.strip()]
        if kind == APPEND:
            have += [v for v in given if v not in have]
        else:
            have = [v for v in have if v not in given]
        out[name] = ",".join(have)
    return out
