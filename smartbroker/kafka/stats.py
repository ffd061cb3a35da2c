"""Counters of the Kafka listener, read by the Prometheus collector at scrape time
(``management/kafka_metrics.py``).

Counting must not slow the request path, so the listener only bumps plain numbers held
here: per answered request its api's count and seconds (``ApiCounts``), and one increment
per error code the response carries (Kafka's ``RequestMetrics`` ErrorsPerSec counts each
partition's code, NONE included). Which fields of a response hold error codes is worked
out once per response class from its schema (``_plan``), so a response is walked along
those fields only. A Fetch response's record batches are counted from their 61-byte
headers (batch length, attributes, record count), without decoding a record. Bytes and
connections are not counted per request at all: the collector sums the connection
records (``KafkaConnectionRecord.bytes_in``/``bytes_out``) and what closed ones left in
``retired_bytes``.
"""

from __future__ import annotations

import weakref
from time import perf_counter
from typing import Any

from smartbroker.kafka import codec
from smartbroker.queues.kafka_batch import CONTROL
from smartbroker.recordbatch import HEADER_SIZE, fields

_COUNTS = fields("batchLength", "attributes", "recordsCount")  # of the one shared layout
_PRODUCE = 0  # api key (produce.py imports the broker; this module stays light)
_FETCH = codec.FETCH
Plan = tuple[tuple[str, Any, bool], ...]  # (field, nested plan or None for a code, is array)
_PLANS: dict[type, Plan] = {}
# id(broker) -> its KafkaListener: how the management side finds it. Weak values: a
# listener holds its broker, so while the entry lives the id names that broker, and a
# broker made and dropped in a test process takes its entry with it.
_LISTENERS: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()


def register(broker: Any, listener: Any) -> None:
    """``listener`` (which keeps ``broker`` alive) serves Kafka for ``broker``."""
    _LISTENERS[id(broker)] = listener


def listener_of(broker: Any) -> Any:
    """The broker's KafkaListener, or None when Kafka is off."""
    return _LISTENERS.get(id(broker))


def api_name(api_key: int) -> str:
    """Kafka's name of a request type ("Produce", "JoinGroup"), as in its RequestMetrics."""
    cls = codec.REQUESTS.get(api_key)
    if cls is None:
        return str(api_key)
    name = getattr(cls, "name", None) or cls.__name__
    return name[:-len("Request")] if name.endswith("Request") else name


def _field_plan(fields: Any) -> Plan:
    """The fields of a schema leading to an ``error_code`` (duck-typed on the library's
    field objects: ``name``, ``is_struct``, ``is_struct_array``, ``_fields``)."""
    plan: list[tuple[str, Any, bool]] = []
    for f in fields:
        name = getattr(f, "name", None)
        if name == "error_code":
            plan.append((name, None, False))
            continue
        many = bool(f.is_struct_array())
        if many or f.is_struct():
            sub = _field_plan(f._fields)
            if sub:
                plan.append((name, sub, many))
    return tuple(plan)


def _plan(cls: type) -> Plan:
    plan = _PLANS.get(cls)
    if plan is None:
        try:
            plan = _field_plan(cls._struct._fields)  # type: ignore[attr-defined]
        except Exception:  # a body that is no schema message: nothing to count
            plan = ()
        _PLANS[cls] = plan
    return plan


def _codes(obj: Any, plan: Plan, errors: dict[int, int]) -> None:
    for name, sub, many in plan:
        value = getattr(obj, name, None)
        if value is None:
            continue
        if sub is None:
            errors[value] = errors.get(value, 0) + 1
        elif many:
            for item in value:
                _codes(item, sub, errors)
        else:
            _codes(value, sub, errors)


def batch_counts(data: Any) -> tuple[int, int]:
    """(batches, records) in RecordBatch v2 bytes, transaction markers left out; a
    truncated last batch (Kafka may cut one at max bytes) is not counted."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        return 0, 0
    size = len(data)
    pos = batches = records = 0
    unpack = _COUNTS.unpack_from
    while pos + HEADER_SIZE <= size:
        length, attributes, count = unpack(data, pos)
        end = pos + 12 + length
        if end > size or length < 0:
            break
        if not attributes & CONTROL:
            batches += 1
            records += count
        pos = end
    return batches, records


class ApiCounts:
    """One api's answered requests, their seconds, and their error codes by code."""

    __slots__ = ("count", "seconds", "errors")

    def __init__(self) -> None:
        self.count = 0
        self.seconds = 0.0
        self.errors: dict[int, int] = {}


class KafkaStats:
    """What the Kafka listener has done since the broker started."""

    __slots__ = ("apis", "fetched", "opened", "retired_bytes")

    def __init__(self) -> None:
        self.apis: dict[int, ApiCounts] = {}  # by api key
        self.fetched = [0, 0]  # record batches, records sent in Fetch responses
        self.opened = 0  # connections accepted
        self.retired_bytes = [0, 0]  # in, out of connections since closed

    def answered(self, api_key: int, body: Any, started: float) -> None:
        """A request answered (``body`` None: no response, acks=0), ``started`` being the
        ``perf_counter()`` of the read that brought it in."""
        per = self.apis.get(api_key)
        if per is None:
            per = self.apis[api_key] = ApiCounts()
        per.count += 1
        per.seconds += perf_counter() - started
        if body is None:
            return
        errors = per.errors
        if api_key == _PRODUCE:  # the walk of _codes, unrolled for the hot paths
            for topic in body.responses:
                for part in topic.partition_responses:
                    code = part.error_code
                    errors[code] = errors.get(code, 0) + 1
        elif api_key == _FETCH:
            self._fetch(body, errors)
        else:
            plan = _PLANS.get(type(body))
            _codes(body, plan if plan is not None else _plan(type(body)), errors)

    def _fetch(self, body: Any, errors: dict[int, int]) -> None:
        """Error codes (top level and per partition) and the batches sent."""
        code = getattr(body, "error_code", None) or 0
        errors[code] = errors.get(code, 0) + 1
        fetched = self.fetched
        for topic in body.responses or ():
            for part in topic.partitions or ():
                code = part.error_code
                errors[code] = errors.get(code, 0) + 1
                records = part.records
                if records:
                    batches, count = batch_counts(records)
                    fetched[0] += batches
                    fetched[1] += count
