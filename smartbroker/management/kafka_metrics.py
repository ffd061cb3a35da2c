"""Prometheus metrics of the Kafka side, read at scrape time like ``metrics.py``'s.

* The listener's counters (``kafka/stats.py``): requests by Kafka's request name, their
  error codes by Kafka's error name, time from read to answer, bytes, connections,
  record batches and records produced and fetched. Names follow the JMX exporter's
  rendering of Kafka's own MBeans where one exists (``kafka_network_...``,
  ``kafka_server_...``).
* Consumer groups, in the one group model both protocols share: every stream's offset
  book (``queues/groups.py``) in every vhost, so AMQP ``x-consumer-group`` groups show
  beside Kafka's. ``kafka_consumergroup_lag`` and ``_current_offset`` have the
  kafka-exporter shape (labels ``group``, ``topic``, ``partition``, plus ``vhost`` since
  a stream's name is unique only in its vhost), for partitions with a committed offset,
  as exporters read them with OffsetFetch. Groups by state use Kafka's state names, as
  ListGroups states them (``kafka/group_view.py``): a Kafka group with members is in its
  coordinator's state; a group AMQP consumers hold is Stable; any other (offsets only,
  or a Kafka group without members) is Empty.

Nothing here runs per request, and a scrape is one pass over the committed offsets and
live groups (not ``GroupView.summary`` per group, which walks every stream per group).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
from prometheus_client.registry import Collector

from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.stats import api_name, listener_of
from smartbroker.queues.offsets import position

GROUP_STATES = ("Empty", "PreparingRebalance", "CompletingRebalance", "Stable")
GROUP_LABELS = ["vhost", "group", "topic", "partition"]


def error_name(code: int) -> str:
    """Kafka's name of an error code ("NONE", "UNKNOWN_TOPIC_OR_PARTITION")."""
    try:
        return ErrorCode(code).name
    except ValueError:
        return str(code)


class KafkaCollector(Collector):
    """The Kafka listener's counters (when it runs) and every consumer group's offsets."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        broker = self.state.broker
        listener = listener_of(broker)
        if listener is not None:
            yield from listener_metrics(listener)
        yield from group_metrics(broker, listener)


def listener_metrics(listener: Any) -> Iterator[Any]:
    stats = listener.stats
    requests = CounterMetricFamily("kafka_network_requests", "Kafka requests answered, "
                                   "by request type", labels=["request"])
    latency = SummaryMetricFamily("kafka_network_request_duration_seconds",
                                  "Kafka requests from the read that brought them in to "
                                  "their answer", labels=["request"])
    errors = CounterMetricFamily("kafka_network_request_errors", "Error codes in Kafka "
                                 "responses (one per partition or group, NONE included)",
                                 labels=["request", "error"])
    for key, per in sorted(list(stats.apis.items())):
        name = api_name(key)
        requests.add_metric([name], per.count)
        latency.add_metric([name], count_value=per.count, sum_value=per.seconds)
        for code, count in sorted(list(per.errors.items())):
            errors.add_metric([name, error_name(code)], count)
    yield from (requests, latency, errors)
    live = [p.record for p in list(listener.connections)]
    bytes_in = stats.retired_bytes[0] + sum(r.bytes_in for r in live)
    bytes_out = stats.retired_bytes[1] + sum(r.bytes_out for r in live)
    yield CounterMetricFamily("kafka_network_incoming_bytes", "Bytes received on Kafka "
                              "connections", value=bytes_in)
    yield CounterMetricFamily("kafka_network_outgoing_bytes", "Bytes sent on Kafka "
                              "connections", value=bytes_out)
    yield GaugeMetricFamily("kafka_connections", "Kafka connections currently open",
                            value=len(live))
    yield CounterMetricFamily("kafka_connections_opened", "Kafka connections accepted",
                              value=stats.opened)
    batches_in, records_in = listener.handlers.producer.appended
    yield CounterMetricFamily("kafka_server_produced_batches", "Record batches stored from "
                              "Produce requests", value=batches_in)
    yield CounterMetricFamily("kafka_server_produced_records", "Records stored from Produce "
                              "requests", value=records_in)
    batches_out, records_out = stats.fetched
    yield CounterMetricFamily("kafka_server_fetched_batches", "Record batches sent in Fetch "
                              "responses", value=batches_out)
    yield CounterMetricFamily("kafka_server_fetched_records", "Records in the batches sent in "
                              "Fetch responses", value=records_out)


def _streams(vhost: Any) -> list[Any]:
    return [q for q in list(vhost.queues.values())
            if q.capabilities.offset_log and getattr(q, "groups", None) is not None]


def group_metrics(broker: Any, listener: Any) -> Iterator[Any]:
    lag = GaugeMetricFamily("kafka_consumergroup_lag", "Records a consumer group has still "
                            "to read in a partition (log end minus committed offset)",
                            labels=GROUP_LABELS)
    current = GaugeMetricFamily("kafka_consumergroup_current_offset", "A consumer group's "
                                "committed offset in a partition", labels=GROUP_LABELS)
    by_state = dict.fromkeys(GROUP_STATES, 0)
    kafka_vhost = listener.handlers.node.vhost if listener is not None else None
    for vname, vhost in list(broker.vhosts.items()):
        active: dict[str, bool] = {}  # every group of the vhost: AMQP consumers hold it
        for stream in _streams(vhost):
            groups = stream.groups
            views = getattr(stream, "group_views", None)  # cluster: a spread stream's
            partitions = (dict(enumerate(views())) if views is not None  # others' bounds
                          else stream.partitions)
            for (group, index), committed in list(groups.book.offsets.items()):
                active.setdefault(group, False)
                part = partitions.get(index)
                if part is None:
                    continue
                at = position(committed, part)
                labels = [vname, group, stream.name, str(index)]
                current.add_metric(labels, at)
                lag.add_metric(labels, max(part.next_offset - at, 0))
            for group in list(groups.live):
                active[group] = active.get(group, False) or groups.amqp_active(group)
        kafka = _kafka_groups(listener) if vname == kafka_vhost else {}
        for group, amqp in active.items():
            state = kafka.pop(group, None) or ("Stable" if amqp else "Empty")
            by_state[state] = by_state.get(state, 0) + 1
        for state in kafka.values():  # Kafka groups with no offsets and no AMQP consumers
            by_state[state or "Empty"] = by_state.get(state or "Empty", 0) + 1
    yield from (lag, current)
    states = GaugeMetricFamily("kafka_consumergroups", "Consumer groups by state (Kafka's "
                               "state names), AMQP groups included", labels=["state"])
    for state, count in by_state.items():
        states.add_metric([state], count)
    yield states


def _kafka_groups(listener: Any) -> dict[str, str | None]:
    """The coordinator's groups but Dead ones: their state while they have members or are
    rebalancing, None for an Empty one (then AMQP consumers may hold it, as ListGroups)."""
    coordinator = getattr(listener.handlers, "coordinator", None)
    out: dict[str, str | None] = {}
    for group_id, group in list(getattr(coordinator, "groups", {}).items()):
        state = group.state
        if state != "Dead":
            out[group_id] = state if group.members or state != "Empty" else None
    return out
