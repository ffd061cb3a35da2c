"""Integration tests: RabbitMQ-compatible AMQP 0-9-1 behaviour, run against a live broker."""
