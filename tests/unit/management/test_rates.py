"""MessageRates: rates from two timed readings, served from the last sample."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable

from smartbroker.management.rates import MessageRates


class Counters:
    """Readings the test sets by hand, and a clock it moves by hand."""

    def __init__(self) -> None:
        self.values: dict[Hashable, tuple[int, ...]] = {}
        self.now = 100.0
        self.reads = 0

    def read(self) -> list[tuple[Hashable, tuple[int, ...]]]:
        self.reads += 1
        return list(self.values.items())

    def clock(self) -> float:
        return self.now


def make() -> tuple[Counters, MessageRates]:
    c = Counters()
    return c, MessageRates(c.read, interval=5.0, clock=c.clock)


def test_no_rate_before_two_samples() -> None:
    c, rates = make()
    c.values["q"] = (10, 0)
    assert rates.of("q") is None
    rates.sample()
    assert rates.of("q") is None


def test_rate_is_change_over_time_between_samples() -> None:
    c, rates = make()
    c.values["q"] = (10, 4)
    rates.sample()
    c.values["q"] = (60, 4)
    c.now += 5
    rates.sample()
    assert rates.of("q") == (10.0, 0.0)
    c.now += 2  # reads between samples see the last sample, not a fresh one
    assert rates.of("q") == (10.0, 0.0)
    assert c.reads == 2


def test_rate_falls_to_zero_when_traffic_stops() -> None:
    c, rates = make()
    c.values["q"] = (0, 0)
    rates.sample()
    c.values["q"], c.now = (7, 0), c.now + 1
    rates.sample()
    assert rates.of("q") == (7.0, 0.0)
    c.now += 1
    rates.sample()
    assert rates.of("q") == (0.0, 0.0)


def test_new_key_counts_from_zero_and_deleted_key_is_forgotten() -> None:
    c, rates = make()
    c.values["old"] = (5,)
    rates.sample()
    del c.values["old"]
    c.values["new"] = (3,)  # declared after the first sample: its counters began at 0
    c.now += 2
    rates.sample()
    assert rates.of("new") == (1.5,)
    assert rates.of("old") is None


def test_a_counter_that_went_down_is_not_a_negative_rate() -> None:
    c, rates = make()
    c.values["q"] = (50,)
    rates.sample()
    c.values["q"], c.now = (20,), c.now + 1  # e.g. an id reused by a new queue
    rates.sample()
    assert rates.of("q") == (0.0,)


def test_timer_samples_until_stopped() -> None:
    async def scenario() -> None:
        c = Counters()
        sampled = asyncio.Event()

        def read() -> list[tuple[Hashable, tuple[int, ...]]]:
            if c.reads >= 2:
                sampled.set()
            return c.read()

        rates = MessageRates(read, interval=0.001)
        rates.start()
        await asyncio.wait_for(sampled.wait(), 5)
        task = rates._task
        await rates.stop()
        assert task is not None and task.cancelled()  # no sample can come any more

    asyncio.run(scenario())


def test_readings_are_the_queues_and_their_totals_with_deleted_queues() -> None:
    from types import SimpleNamespace

    from smartbroker.management.rates import OVERVIEW, readings
    from smartbroker.management.state import ManagementState

    busy = SimpleNamespace(stats={"publish": 5, "deliver": 2, "ack": 1})
    idle = SimpleNamespace(stats={})
    vhost = SimpleNamespace(queues={"busy": busy, "idle": idle}, on_queue_deleted=[])
    broker = SimpleNamespace(vhosts={"/": vhost},
                             config=SimpleNamespace(collect_statistics_interval=250))
    state = ManagementState(broker)  # type: ignore[arg-type]
    assert state.rates.interval == 0.25
    gone = SimpleNamespace(stats={"publish": 10, "redeliver": 3})
    for callback in vhost.on_queue_deleted:
        callback(gone)
    assert dict(readings(state)) == {id(busy): (5, 2, 1, 0), OVERVIEW: (15, 2, 1, 3)}
