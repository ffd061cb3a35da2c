"""Message rates for the API (``*_details.rate``), from successive counter readings.

RabbitMQ samples counters every few seconds; here each API read records a sample (at most
one per half second per counter) and the rate is the change over the last ~5 s of samples.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Hashable

WINDOW = 5.0
MIN_GAP = 0.5
MAX_KEYS = 100_000


class RateSampler:
    def __init__(self) -> None:
        self._samples: dict[Hashable, deque[tuple[float, float]]] = {}

    def rate(self, key: Hashable, value: float) -> float:
        now = time.monotonic()
        samples = self._samples.get(key)
        if samples is None:
            if len(self._samples) >= MAX_KEYS:
                self._samples.clear()
            samples = self._samples[key] = deque(maxlen=32)
        if not samples or now - samples[-1][0] >= MIN_GAP:
            samples.append((now, value))
        while len(samples) > 2 and now - samples[1][0] >= WINDOW:
            samples.popleft()
        first_t, first_v = samples[0]
        if now - first_t < MIN_GAP:
            return 0.0
        return round(max(value - first_v, 0) / (now - first_t), 1)


RATES = RateSampler()
