"""/api/streams[/{vhost}[/{name}]] and /api/groups[...] (smartbroker's own: RabbitMQ has no
HTTP view of stream offsets or consumer groups).

A group is listed if it has a ``ConsumerGroup`` on the stream (members joined since the
broker started) or committed offsets in the stream's ``OffsetBook`` (e.g. after a restart).
Resetting offsets follows ``kafka-consumer-groups --reset-offsets``: refused (409) while the
group has members, every target clipped to the partition's ``[first, next]`` offsets.
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

router = api_router()

ResetTo = Literal["earliest", "latest", "offset", "datetime", "shift"]


class ResetBody(Body):
    to: ResetTo
    value: int | str | None = None
    dry_run: bool = Field(default=False)


def is_stream(q: Any) -> bool:
    return getattr(q, "type_name", None) == "stream"


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
    return sorted(set(stream.groups) | stream.offsets.groups())


def partition_json(stream: Any, p: int) -> dict[str, Any]:
    lg = stream.logs[p]
    first, nxt = lg.first_offset, lg.next_offset
    return {"partition": p, "first_offset": first,
            "last_offset": nxt - 1 if nxt > first else None, "next_offset": nxt,
            "messages": nxt - first, "size_bytes": lg.size_bytes, "segments": len(lg.segments())}


def stream_json(stream: Any) -> dict[str, Any]:
    settings = stream.stream
    partitions = [partition_json(stream, p) for p in range(len(stream.logs))]
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


def _committed(stream: Any, group: str, p: int) -> int:
    live = stream.groups.get(group)
    if live is not None:
        return live.committed(p)
    offset = stream.offsets.get(group, p)
    lg = stream.logs[p]
    return lg.first_offset if offset is None else max(offset, lg.first_offset)


def group_json(stream: Any, name: str) -> dict[str, Any]:
    live = stream.groups.get(name)
    if live is not None:
        doc = live.describe()
        held = len(live.held)
        members, mode = doc["members"], doc["rebalance"]
        owners = {p["partition"]: p["owner"] for p in doc["partitions"]}
    else:
        held, members, mode, owners = 0, [], None, {}
    partitions = []
    for p in range(len(stream.logs)):
        lg = stream.logs[p]
        committed = _committed(stream, name, p)
        partitions.append({"partition": p, "committed_offset": committed,
                           "first_offset": lg.first_offset, "end_offset": lg.next_offset,
                           "lag": max(lg.next_offset - committed, 0), "owner": owners.get(p)})
    active = bool(members) or held > 0
    return {"group": name, "name": name, "queue": stream.name, "vhost": stream.vhost,
            "state": "active" if active else "empty", "active": active, "rebalance": mode,
            "members": members, "static_members_away": held,
            "lag": sum(p["lag"] for p in partitions), "partitions": partitions}


def _group(state: Any, vhost: str, queue: str, group: str) -> Any:
    stream = _stream(state, vhost, queue)
    if group not in stream.groups and group not in stream.offsets.groups():
        raise ApiError(404, "not_found", f"consumer group '{group}' not found on stream "
                                         f"'{queue}' in vhost '{vhost}'")
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
    return [group_json(s, g) for s in _streams(vhosts) for g in group_names(s)]


@router.get("/groups")
async def list_groups(request: Request, state: StateDep, caller: CallerDep) -> Any:
    return await paginate(request, _groups(vhost_filter(caller, state.broker)))


@router.get("/groups/{vhost}")
async def vhost_groups(vhost: str, request: Request, state: StateDep) -> Any:
    return await paginate(request, _groups([lookup_vhost(state.broker, vhost)]))


@router.get("/groups/{vhost}/{queue}/{group}")
async def get_group(vhost: str, queue: str, group: str, state: StateDep) -> dict[str, Any]:
    return group_json(_group(state, vhost, queue, group), group)


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


def target_offset(stream: Any, group: str, p: int, body: ResetBody) -> int:
    lg = stream.logs[p]
    first, nxt = lg.first_offset, lg.next_offset
    if body.to == "earliest":
        return first
    if body.to == "latest":
        return nxt
    if body.to == "datetime":
        return min(max(lg.offset_for_timestamp(parse_datetime_ms(body.value)), first), nxt)
    n = _int_value(body)
    wanted = n if body.to == "offset" else _committed(stream, group, p) + n
    return min(max(wanted, first), nxt)


@router.post("/groups/{vhost}/{queue}/{group}/reset")
async def reset_group(vhost: str, queue: str, group: str, body: ResetBody,
                      state: StateDep, caller: CallerDep) -> dict[str, Any]:
    """Move the group's committed offsets (all partitions); 409 while it has members.
    Committing offsets is what a consumer of the stream does: read on the queue."""
    stream = _group(state, vhost, queue, group)
    caller.amqp(vhost).check("read", "queue", stream.name, Refusal.REASON)
    live = stream.groups.get(group)
    if live is not None and live.active:
        members, held = len(live.members), len(live.held)
        what = f"{members} active member(s)" + (f" and {held} static member(s) within their "
                                                 f"session timeout" if held else "")
        raise ApiError(409, "conflict", f"consumer group '{group}' on stream '{queue}' has "
                                        f"{what}: stop its consumers before resetting offsets")
    plan = []
    for p in range(len(stream.logs)):
        before = _committed(stream, group, p)
        after = target_offset(stream, group, p, body)
        plan.append({"partition": p, "before": before, "after": after,
                     "lag_after": max(stream.logs[p].next_offset - after, 0)})
    if not body.dry_run:
        for row in plan:
            stream.offsets.commit(group, row["partition"], row["after"])
    return {"group": group, "queue": queue, "vhost": vhost, "to": body.to, "value": body.value,
            "dry_run": body.dry_run, "partitions": plan}
