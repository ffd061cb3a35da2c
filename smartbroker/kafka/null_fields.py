"""Which null a decoded Kafka request carries where its schema allows none.

Kafka's parser refuses a null (length -1, or 0 when compact) in a string, bytes or array
field not nullable in this version; kafka-python decodes it as None, which no handler
expects (found by tests/fuzz/test_kafka_fuzz.py). ``codec.decode_request`` asks
``refused_null`` and turns an answer into a ``DecodeError``. Checked along a plan made
once per schema and version: a Produce pays about a microsecond per partition. Split
from ``codec.py``; it reads the library's schema objects but imports nothing of it.
"""

from __future__ import annotations

from typing import Any

_NULLABLE_TYPES = frozenset({"string", "bytes", "records"})
_PLANS: dict[tuple[int, int], tuple[tuple[str, bool, Any, bool], ...]] = {}


def refused_null(fields: Any, obj: Any, version: int) -> str | None:
    """The name of the first field of ``obj`` (or of a struct inside it) that is null
    though ``version`` of its schema (``fields``) does not allow it; None if none is."""
    plan = _PLANS.get((id(fields), version))
    if plan is None:  # the schemas' field tuples live as long as the classes: ids are stable
        plan = _PLANS[(id(fields), version)] = _null_plan(fields, version)
    for name, required, sub, many in plan:
        value = getattr(obj, name, None)
        if value is None:
            if required:
                return name
        elif sub:
            for item in (value if many else (value,)):
                found = refused_null(sub, item, version)
                if found is not None:
                    return found
    return None


def _null_plan(fields: Any, version: int) -> tuple[tuple[str, bool, Any, bool], ...]:
    """(name, null refused, nested fields or None, is an array) of the fields to check."""
    plan = []
    for f in fields:
        if not f.for_version_q(version) or f.tagged_field_q(version):
            continue
        required = not f.nullable_for_version_q(version) and (
            f.is_array() or f.is_struct() or f.type_str in _NULLABLE_TYPES)
        sub = f._fields if (f.is_struct_array() or f.is_struct()) else None
        if required or sub:
            plan.append((f.name, required, sub, f.is_struct_array()))
    return tuple(plan)
