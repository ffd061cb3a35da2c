"""/api/streams[/{vhost}[/{name}]] and /api/groups[...] (smartbroker's own: RabbitMQ has no
HTTP view of stream offsets or consumer groups).

Consumer-group state and its operations live in ``queues/groups.py`` (``StreamGroups``:
a group exists while it has live members or committed offsets, e.g. after a restart) and
the offset arithmetic in ``queues/offsets.py``; this router parses the request, calls
them, and renders JSON. Resetting offsets follows ``kafka-consumer-groups
--reset-offsets``: refused (409) while the group has members, every target clipped to the
partition's ``[first, next]`` offsets.
"""

from __future__ import annotations

import datetime
from typing import Any, Literal

from fastapi import Request
from pydantic import Field

from smartbroker.management.authz import Refusal
from smartbroker.management.deps import CallerDep, StateDep, lookup_vhost
from smartbroker.management.errors import ApiError, bad_request, not_found
from smartbroker.management.models import Body
from smartbroker.management.routers.common import api_router, paginate, vhost_filter
from smartbroker.queues.groups import GroupActive, GroupError, GroupInfo, UnknownGroup
from smartbroker.queues.offsets import OffsetReset
from smartbroker.queues.stream_partitions import PartitionLog

router = api_router()

ResetTo = Literal["earliest", "latest", "offset", "datetime", "shift"]


class ResetBody(Body):
    to: ResetTo
    value: int | str | None = None
    dry_run: bool = Field(default=False)


def is_stream(q: Any) -> bool:
    """A queue with an offset log and consumer groups, as its type's capabilities say."""
    return q.capabilities.offset_log


def _streams(vhosts: list[Any]) -> list[Any]:
    return [q for vh in vhosts for q in list(vh.queues.values()) if is_stream(q)]


def _stream(state: Any, vhost: str, name: str) -> Any:
    vh = lookup_vhost(state.broker, vhost)
    q = vh.queues.get(name)
    if q is None:
        raise not_found()
    if not is_stream(q):
        raise bad_request(f"queue '{name}' in vhost '{vhost}' is not a stream")
    return q


def group_names(stream: Any) -> list[str]:
    return stream.groups.names()


def partition_json(part: PartitionLog) -> dict[str, Any]:
    """One partition of a stream (``StreamQueue.partitions``) as JSON."""
    o = part.offsets()
    return {"partition": part.index, "first_offset": o.first, "last_offset": o.last, "next_offset": o.next,
            "messages": o.messages, "size_bytes": o.size_bytes, "segments": o.segments}


def stream_json(stream: Any) -> dict[str, Any]:
    settings = stream.stream
    partitions = [partition_json(part) for part in stream.partitions]
    return {
        "name": stream.name, "vhost": stream.vhost, "type": "stream",
        "partition_count": len(partitions),
        "messages": sum(p["messages"] for p in partitions),
        "size_bytes": sum(p["size_bytes"] for p in partitions),
        "segments": sum(p["segments"] for p in partitions),
        "consumers": stream.consumer_count,
        "retention": {"max_age": settings.max_age, "max_length_bytes": settings.max_length_bytes,
                      "segment_bytes": settings.segment_bytes, "compact": settings.compact},
        "groups": group_names(stream),
        "partitions": partitions,
    }


def group_json(info: GroupInfo) -> dict[str, Any]:
    return {"group": info.name, "name": info.name, "queue": info.queue, "vhost": info.vhost,
            "state": "active" if info.active else "empty", "active": info.active,
            "rebalance": info.rebalance, "protocol": info.protocol,
            "members": [{"consumer_tag": m.consumer_tag, "instance_id": m.instance_id,
                         "partitions": list(m.partitions), "client_id": m.client_id,
                         "client_host": m.client_host, "protocol": m.protocol}
                        for m in info.members],
            "static_members_away": info.static_members_away, "lag": info.lag,
            "partitions": [{"partition": p.partition, "committed_offset": p.committed,
                            "first_offset": p.first, "end_offset": p.end, "lag": p.lag,
                            "owner": p.owner} for p in info.partitions]}


def _group(state: Any, vhost: str, queue: str, group: str) -> Any:
    stream = _stream(state, vhost, queue)
    try:
        stream.groups.require(group)
    except GroupError as error:
        raise _refused(error) from None
    return stream


# -- streams -------------------------------------------------------------------------------
@router.get("/streams")
async def list_streams(request: Request, state: StateDep, caller: CallerDep) -> Any:
    return await paginate(request, [stream_json(s)
                                    for s in _streams(vhost_filter(caller, state.broker))])


@router.get("/streams/{vhost}")
async def vhost_streams(vhost: str, request: Request, state: StateDep) -> Any:
    return await paginate(request, [stream_json(s) for s in _streams([lookup_vhost(state.broker, vhost)])])


@router.get("/streams/{vhost}/{name}")
async def get_stream(vhost: str, name: str, state: StateDep) -> dict[str, Any]:
    return stream_json(_stream(state, vhost, name))


# -- consumer groups -------------------------------------------------------------------------
def _groups(vhosts: list[Any]) -> list[dict[str, Any]]:
    return [group_json(info) for s in _streams(vhosts) for info in s.groups.describe_all()]


@router.get("/groups")
async def list_groups(request: Request, state: StateDep, caller: CallerDep) -> Any:
    return await paginate(request, _groups(vhost_filter(caller, state.broker)))


@router.get("/groups/{vhost}")
async def vhost_groups(vhost: str, request: Request, state: StateDep) -> Any:
    return await paginate(request, _groups([lookup_vhost(state.broker, vhost)]))


@router.get("/groups/{vhost}/{queue}/{group}")
async def get_group(vhost: str, queue: str, group: str, state: StateDep) -> dict[str, Any]:
    return group_json(_group(state, vhost, queue, group).groups.describe(group))


def parse_datetime_ms(value: Any) -> int:
    """Epoch milliseconds, or an ISO 8601 date/time (UTC unless it carries an offset)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        raise bad_request("datetime reset needs a value: ISO 8601 or epoch milliseconds")
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise bad_request(f"invalid datetime '{value}': expected ISO 8601, e.g. "
                          f"2024-05-01T12:00:00Z") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)


def _int_value(body: ResetBody) -> int:
    value = body.value
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise bad_request(f"'{body.to}' reset needs an integer value, got '{value}'") from None
    if value is None or isinstance(value, bool):
        raise bad_request(f"'{body.to}' reset needs an integer value")
    return value


def reset_spec(body: ResetBody) -> OffsetReset:
    """The body as the queue's reset takes it (datetimes as epoch milliseconds)."""
    if body.to in ("earliest", "latest"):
        return OffsetReset(body.to)
    if body.to == "datetime":
        return OffsetReset("datetime", parse_datetime_ms(body.value))
    return OffsetReset(body.to, _int_value(body))


def _refused(error: GroupError) -> ApiError:
    if isinstance(error, UnknownGroup):
        return ApiError(404, "not_found", str(error))
    if isinstance(error, GroupActive):
        return ApiError(409, "conflict", str(error))
    return bad_request(str(error))


@router.post("/groups/{vhost}/{queue}/{group}/reset")
async def reset_group(vhost: str, queue: str, group: str, body: ResetBody,
                      state: StateDep, caller: CallerDep) -> dict[str, Any]:
    """Move the group's committed offsets (all partitions); 409 while it has members.
    Committing offsets is what a consumer of the stream does: read on the queue."""
    stream = _group(state, vhost, queue, group)
    caller.amqp(vhost).check("read", "queue", stream.name, Refusal.REASON)
    try:
        stream.groups.refuse_if_active(group, "resetting offsets")  # 409 before a bad value
        plan = stream.groups.reset(group, reset_spec(body), dry_run=body.dry_run)
    except GroupError as error:
        raise _refused(error) from None
    return {"group": group, "queue": queue, "vhost": vhost, "to": body.to, "value": body.value,
            "dry_run": body.dry_run,
            "partitions": [{"partition": m.partition, "before": m.before, "after": m.after,
                            "lag_after": m.lag_after} for m in plan]}
