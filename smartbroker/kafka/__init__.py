"""The Kafka wire protocol: a second front end beside ``server/`` on the same broker
(issue 14). ``codec`` wraps kafka-python; the rest never imports it."""
