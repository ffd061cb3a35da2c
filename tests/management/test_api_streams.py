"""/api/streams and /api/groups: partition offsets, group lag, reset-offsets (smartbroker's own)."""

from __future__ import annotations

import datetime

import httpx
import pytest

from tests.integration.helpers import wait_until
from tests.management.scenarios import poll, stream_with_group

pytestmark = pytest.mark.extension


def group_doc(api: httpx.Client, stream: str, group: str = "g") -> dict:
    resp = api.get(f"/api/groups/%2F/{stream}/{group}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def caught_up(api: httpx.Client, stream: str) -> dict:
    return poll(lambda: (lambda d: d if d["lag"] == 0 else None)(group_doc(api, stream)),
                what="group lag 0")


def test_stream_info_and_queue_fields(api: httpx.Client, broker_url: str, qname: str) -> None:
    with stream_with_group(broker_url, qname, n=10):
        doc = api.get(f"/api/streams/%2F/{qname}").json()
        assert doc["type"] == "stream" and doc["partition_count"] == 2
        assert doc["messages"] == 10 and doc["groups"] == ["g"] and doc["consumers"] == 1
        parts = doc["partitions"]
        assert [p["partition"] for p in parts] == [0, 1]
        assert sum(p["messages"] for p in parts) == 10
        for p in parts:
            assert p["first_offset"] == 0 and p["next_offset"] == p["messages"]
            assert p["last_offset"] == (p["messages"] - 1 if p["messages"] else None)
            assert p["segments"] >= 1 and p["size_bytes"] > 0
        assert set(doc["retention"]) == {"max_age", "max_length_bytes", "segment_bytes", "compact"}
        assert qname in [s["name"] for s in api.get("/api/streams").json()]
        assert qname in [s["name"] for s in api.get("/api/streams/%2F").json()]

        queue = api.get(f"/api/queues/%2F/{qname}").json()
        assert queue["type"] == "stream" and queue["messages"] == 10
        assert queue["stream"]["partition_count"] == 2 and queue["groups"] == ["g"]


def test_group_describe_lists_members_offsets_lag(api: httpx.Client, broker_url: str,
                                                  qname: str) -> None:
    with stream_with_group(broker_url, qname, n=10) as s:
        doc = caught_up(api, qname)
        assert doc["state"] == "active" and doc["active"] is True
        assert doc["queue"] == qname and doc["vhost"] == "/" and doc["rebalance"] == "cooperative"
        [member] = doc["members"]
        assert member["partitions"] == [0, 1]
        for p in doc["partitions"]:
            assert p["committed_offset"] == p["end_offset"] and p["lag"] == 0
            assert p["owner"] == member["consumer_tag"]
        assert any(g["group"] == "g" and g["queue"] == qname for g in api.get("/api/groups").json())

        s.stop_group()
        doc = poll(lambda: (lambda d: d if not d["active"] else None)(group_doc(api, qname)),
                   what="group inactive")
        assert doc["state"] == "empty" and doc["members"] == []
        assert all(p["owner"] is None for p in doc["partitions"])


def test_reset_refused_while_members_active(api: httpx.Client, broker_url: str, qname: str) -> None:
    with stream_with_group(broker_url, qname, n=4):
        caught_up(api, qname)
        resp = api.post(f"/api/groups/%2F/{qname}/g/reset", json={"to": "earliest"})
        assert resp.status_code == 409
        assert resp.json()["reason"] == (f"consumer group 'g' on stream '{qname}' has 1 active "
                                         f"member(s): stop its consumers before resetting offsets")
        assert group_doc(api, qname)["lag"] == 0  # nothing moved


def test_reset_offsets_then_replay(api: httpx.Client, broker_url: str, qname: str) -> None:
    """The operator's replay: stop the group, rewind it, restart a member, get the events again."""
    with stream_with_group(broker_url, qname, n=10) as s:
        ends = {p["partition"]: p["end_offset"] for p in caught_up(api, qname)["partitions"]}
        s.stop_group()
        path = f"/api/groups/%2F/{qname}/g/reset"

        dry = api.post(path, json={"to": "earliest", "dry_run": True}).json()
        assert [(p["before"], p["after"]) for p in dry["partitions"]] == [(ends[0], 0), (ends[1], 0)]
        assert group_doc(api, qname)["lag"] == 0  # dry run changed nothing

        shifted = api.post(path, json={"to": "shift", "value": -2}).json()
        assert [p["after"] for p in shifted["partitions"]] == [max(ends[0] - 2, 0),
                                                                max(ends[1] - 2, 0)]
        clipped = api.post(path, json={"to": "offset", "value": 10_000}).json()
        assert [p["after"] for p in clipped["partitions"]] == [ends[0], ends[1]]
        future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
        by_time = api.post(path, json={"to": "datetime", "value": future.isoformat()}).json()
        assert [p["after"] for p in by_time["partitions"]] == [ends[0], ends[1]]
        by_time = api.post(path, json={"to": "datetime", "value": "2000-01-01T00:00:00Z"}).json()
        assert [p["after"] for p in by_time["partitions"]] == [0, 0]
        latest = api.post(path, json={"to": "latest"}).json()
        assert [p["after"] for p in latest["partitions"]] == [ends[0], ends[1]]

        api.post(path, json={"to": "earliest"}).raise_for_status()
        doc = group_doc(api, qname)
        assert doc["lag"] == 10 and [p["committed_offset"] for p in doc["partitions"]] == [0, 0]

        replayed: list[bytes] = []

        def on_message(c, method, props, body) -> None:
            c.basic_ack(method.delivery_tag)
            replayed.append(body)

        s.consumer_tag = s.ch.basic_consume(qname, on_message,
                                            arguments={"x-consumer-group": "g"})
        wait_until(s.conn, lambda: len(replayed) >= 10, timeout=10)
        assert sorted(replayed) == sorted(f"event-{i}".encode() for i in range(10))
        caught_up(api, qname)


def test_groups_from_the_offset_book_only(api: httpx.Client, broker_url: str, qname: str) -> None:
    """A group whose members are gone still has committed offsets: listed and resettable."""
    with stream_with_group(broker_url, qname, n=3, group="audit") as s:
        s.stop_group()
        listed = [g for g in api.get("/api/groups/%2F").json() if g["queue"] == qname]
        assert [(g["group"], g["state"]) for g in listed] == [("audit", "empty")]
        assert api.post(f"/api/groups/%2F/{qname}/audit/reset",
                        json={"to": "earliest"}).status_code == 200


def test_group_errors(api: httpx.Client, broker_url: str, qname: str, queue: str) -> None:
    stream = f"{qname}.s"
    with stream_with_group(broker_url, stream, n=1) as s:
        s.stop_group()
        resp = api.get(f"/api/groups/%2F/{stream}/nope")
        assert resp.status_code == 404
        assert resp.json()["reason"] == f"consumer group 'nope' not found on stream '{stream}' in vhost '/'"
        path = f"/api/groups/%2F/{stream}/g/reset"
        assert api.post(path, json={"to": "sideways"}).status_code == 400
        assert api.post(path, json={"to": "offset"}).status_code == 400
        resp = api.post(path, json={"to": "datetime", "value": "yesterday"})
        assert resp.status_code == 400 and "invalid datetime 'yesterday'" in resp.json()["reason"]
    assert api.get(f"/api/streams/%2F/{queue}").status_code == 400  # a classic queue
    assert api.get(f"/api/streams/%2F/{qname}.missing").status_code == 404
