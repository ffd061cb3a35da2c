"""Prometheus metrics, read from broker state at scrape time (names as RabbitMQ's
prometheus plugin; per-queue series carry ``vhost`` and ``queue`` labels)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from smartbroker.management.formatting import product_version
from smartbroker.management.kafka_metrics import KafkaCollector
from smartbroker.management.state import resident_memory
from smartbroker.management.views import open_connections

QUEUE_COUNTERS = (
    ("publish", "rabbitmq_queue_messages_published", "Messages published into the queue"),
    ("deliver", "rabbitmq_queue_messages_delivered", "Messages delivered to consumers or got"),
    ("ack", "rabbitmq_queue_messages_acked", "Messages acknowledged by consumers"),
    ("redeliver", "rabbitmq_queue_messages_redelivered", "Messages requeued for redelivery"),
)
GLOBAL_COUNTERS = (
    ("publish", "rabbitmq_global_messages_received", "Messages received from publishers"),
    ("deliver", "rabbitmq_global_messages_delivered", "Messages delivered to consumers"),
    ("ack", "rabbitmq_global_messages_acknowledged", "Messages acknowledged by consumers"),
    ("redeliver", "rabbitmq_global_messages_redelivered", "Messages redelivered to consumers"),
)


class BrokerCollector(Collector):
    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[Any]:
        state = self.state
        labels = ["vhost", "queue"]
        ready = GaugeMetricFamily("rabbitmq_queue_messages_ready",
                                  "Messages ready to be delivered to consumers", labels=labels)
        unacked = GaugeMetricFamily("rabbitmq_queue_messages_unacked",
                                    "Messages delivered to consumers but not yet acknowledged",
                                    labels=labels)
        consumers = GaugeMetricFamily("rabbitmq_queue_consumers", "Consumers on a queue",
                                      labels=labels)
        messages = GaugeMetricFamily("rabbitmq_queue_messages",
                                     "Sum of ready and unacknowledged messages", labels=labels)
        counters = {key: CounterMetricFamily(name, doc, labels=labels)
                    for key, name, doc in QUEUE_COUNTERS}
        n_queues = n_consumers = 0
        for vh in list(state.broker.vhosts.values()):
            for q in list(vh.queues.values()):
                lv = [vh.name, q.name]
                n_queues += 1
                n_consumers += q.consumer_count
                ready.add_metric(lv, q.message_count)
                unacked.add_metric(lv, q.unacked_count)
                messages.add_metric(lv, q.message_count + q.unacked_count)
                consumers.add_metric(lv, q.consumer_count)
                stats = q.stats
                for key, family in counters.items():
                    family.add_metric(lv, stats.get(key, 0))
        yield from (ready, unacked, messages, consumers, *counters.values())
        totals = state.totals()
        for key, name, doc in GLOBAL_COUNTERS:
            yield CounterMetricFamily(name, doc, value=totals[key])
        conns = open_connections(state)
        yield GaugeMetricFamily("rabbitmq_connections", "Connections currently open",
                                value=len(conns))
        yield GaugeMetricFamily("rabbitmq_channels", "Channels currently open",
                                value=sum(len(c.channels) for c in conns))
        yield GaugeMetricFamily("rabbitmq_queues", "Queues available", value=n_queues)
        yield GaugeMetricFamily("rabbitmq_consumers", "Consumers currently connected",
                                value=n_consumers)
        bytes_in, bytes_out = state.bytes_totals()
        yield CounterMetricFamily("rabbitmq_connection_incoming_bytes",
                                  "Bytes received on client connections", value=bytes_in)
        yield CounterMetricFamily("rabbitmq_connection_outgoing_bytes",
                                  "Bytes sent on client connections", value=bytes_out)
        yield GaugeMetricFamily("rabbitmq_process_resident_memory_bytes",
                                "Resident memory of the broker process", value=resident_memory())
        yield InfoMetricFamily("rabbitmq_identity", "Node identity",
                               value={"rabbitmq_node": state.node,
                                      "rabbitmq_cluster": getattr(state.cluster, "cluster_name",
                                                                  None) or state.node})
        yield InfoMetricFamily("rabbitmq_build", "Build information",
                               value={"product_name": "smartbroker",
                                      "product_version": product_version()})


def registry_for(state: Any) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(state))
    registry.register(KafkaCollector(state))
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
