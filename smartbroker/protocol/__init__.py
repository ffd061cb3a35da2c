"""The AMQP 0-9-1 wire: framing, the hot-path codec and the sans-IO frame reader (no asyncio)."""
