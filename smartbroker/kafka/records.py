"""Kafka records <-> AMQP messages: the Kafka side's name for the mapping, which lives in
``queues/kafka_mapping.py`` so that AMQP readers of a stream (queues/, which may not
import a front end) decode stored Kafka batches with the same rules."""

from __future__ import annotations

from smartbroker.queues.kafka_mapping import (
    EMPTY_VALUE_HEADER,
    ESCAPE,
    KEY_HEADER,
    PROPERTY_PREFIX,
    RESERVED,
    KafkaHeaders,
    KafkaRecord,
    RecordError,
    header_to_record,
    message_to_record,
    record_header,
    record_to_message,
    route_for,
    stored_record,
    stored_to_record,
)

__all__ = ["EMPTY_VALUE_HEADER", "ESCAPE", "KEY_HEADER", "KafkaHeaders", "KafkaRecord",
           "PROPERTY_PREFIX", "RESERVED", "RecordError", "header_to_record",
           "message_to_record", "record_header", "record_to_message", "route_for",
           "stored_record", "stored_to_record"]
