"""Broker state: virtual hosts with their exchanges, queues and bindings; channels; consumers."""
