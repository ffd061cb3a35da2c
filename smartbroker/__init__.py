"""smartbroker: an AMQP 0-9-1 message broker with a Kafka-style log mode."""

__version__ = "0.1.0"
