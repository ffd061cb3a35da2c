"""Kafka's error codes (the numbers of ``org.apache.kafka.common.protocol.Errors``) that
smartbroker answers with; our own table so that no module but the codec imports kafka-python."""

from __future__ import annotations

from enum import IntEnum


class ErrorCode(IntEnum):
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    INVALID_TOPIC_EXCEPTION = 17
    UNSUPPORTED_VERSION = 35
    INVALID_REQUEST = 42
    FETCH_SESSION_ID_NOT_FOUND = 70
    UNKNOWN_TOPIC_ID = 100
