"""EtcdClient against a real etcd: the prefix, paged reads, conditional transactions,
watches that survive an etcd restart, leases."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from smartbroker.cluster.etcd_client import (
    Delete,
    EtcdClient,
    EtcdUnavailable,
    Put,
    WatchEvent,
    stop_tasks,
)
from smartbroker.cluster.etcd_connection import parse_endpoints
from smartbroker.cluster.etcd_process import EtcdProcess
from smartbroker.launcher import free_port

T = TypeVar("T")


def run(etcd: EtcdProcess, name: str, body: Callable[[EtcdClient], Awaitable[T]]) -> T:
    async def main() -> T:
        async with EtcdClient(etcd.endpoint, name) as client:
            return await body(client)
    return asyncio.run(main())


def test_parse_endpoints() -> None:
    assert parse_endpoints("http://127.0.0.1:2379, h2:23") == [("127.0.0.1", 2379), ("h2", 23)]
    assert parse_endpoints(["localhost"]) == [("localhost", 2379)]
    with pytest.raises(ValueError):
        parse_endpoints(" , ")
    with pytest.raises(ValueError):
        EtcdClient("h:1", "a/b")


def test_keys_live_under_the_cluster_prefix(etcd: EtcdProcess, cluster_name: str) -> None:
    async def body(client: EtcdClient) -> None:
        await client.put("a", b"1")
        await client.put(b"b/\xff\x00", b"2")  # any bytes after the prefix
        async with EtcdClient(etcd.endpoint, cluster_name + "-other") as other:
            assert await other.get("a") is None
            assert (await other.range())[0] == []
        got = await client.get("a")
        assert got is not None and got.key == b"a" and got.value == b"1"
        assert client.key("a") == f"/smartbroker/{cluster_name}/a".encode()
        kvs, _ = await client.range("b/")
        assert [(kv.key, kv.value) for kv in kvs] == [(b"b/\xff\x00", b"2")]
    run(etcd, cluster_name, body)


def test_range_pages_at_one_revision(etcd: EtcdProcess, cluster_name: str) -> None:
    async def body(client: EtcdClient) -> None:
        await client.commit([Put(f"k/{i:03}", str(i).encode()) for i in range(25)])
        kvs, revision = await client.range("k/", page=4)
        assert [kv.value for kv in kvs] == [str(i).encode() for i in range(25)]
        await client.put("k/999", b"later")
        again, _ = await client.range("k/", page=4)
        assert len(again) == 26
        assert all(kv.mod_revision <= revision for kv in kvs)
    run(etcd, cluster_name, body)


def test_commit_is_all_or_nothing_with_conditions(etcd: EtcdProcess, cluster_name: str) -> None:
    async def body(client: EtcdClient) -> None:
        rev = await client.commit([Put("x/1", b"a"), Put("x/2", b"b")])
        assert rev is not None
        x1 = await client.get("x/1")
        assert x1 is not None and x1.mod_revision == rev
        assert await client.commit([Put("x/3", b"c")], absent=["x/1"]) is None
        assert await client.get("x/3") is None
        assert await client.commit([Delete("x/", prefix=True)],
                                   mod_revisions={"x/1": rev - 1}) is None
        assert await client.commit([Delete("x/", prefix=True)],
                                   mod_revisions={"x/1": rev}) is not None
        assert (await client.range("x/"))[0] == []
    run(etcd, cluster_name, body)


def test_create_if_absent_has_one_winner(etcd: EtcdProcess, cluster_name: str) -> None:
    async def body(client: EtcdClient) -> None:
        results = await asyncio.gather(*(client.create_if_absent("secret", bytes([i]))
                                         for i in range(5)))
        assert sum(created for created, _ in results) == 1
        assert len({kv.value for _, kv in results}) == 1
    run(etcd, cluster_name, body)


def test_watch_from_a_revision_sees_puts_and_deletes(etcd: EtcdProcess, cluster_name: str) -> None:
    async def body(client: EtcdClient) -> list[WatchEvent]:
        _, revision = await client.range("w/")
        await client.put("w/a", b"1")
        await client.put("elsewhere", b"-")
        await client.delete("w/a")
        events: list[WatchEvent] = []
        async for event in client.watch("w/", start_revision=revision + 1):
            events.append(event)
            if len(events) == 2:
                break
        return events
    events = run(etcd, cluster_name, body)
    assert [(e.kind, e.key, e.value) for e in events] == [("put", b"w/a", b"1"),
                                                           ("delete", b"w/a", b"")]
    assert events[0].revision < events[1].revision


def test_watch_resumes_after_etcd_restarts(tmp_path: Path, cluster_name: str) -> None:
    """No change is lost while the stream is broken: it resumes after the last revision."""
    own = EtcdProcess(tmp_path).start()

    async def main() -> list[bytes]:
        async with EtcdClient(own.endpoint, cluster_name, timeout=2) as client, \
                EtcdClient(own.endpoint, cluster_name, timeout=2) as writer:
            seen: list[bytes] = []
            first = asyncio.Event()

            async def consume() -> None:
                async for event in client.watch("r/"):
                    seen.append(event.value)
                    first.set()
                    if event.value == b"3":  # not a count: "1" may be seen more than once
                        return
            task = asyncio.create_task(consume())
            while not first.is_set():  # a watch "from now" may start after a put: repeat
                await writer.put("r/k", b"1")
                with_timeout = asyncio.wait_for(first.wait(), 0.5)
                await asyncio.gather(with_timeout, return_exceptions=True)
            await asyncio.to_thread(own.stop)
            await asyncio.to_thread(own.start)
            await writer.put("r/k", b"2")
            await writer.put("r/k", b"3")
            await asyncio.wait_for(task, 20)
            return seen
    try:
        seen = asyncio.run(main())
    finally:
        own.stop()
    assert seen[-2:] == [b"2", b"3"]


def test_a_dead_endpoint_is_unavailable_and_the_next_is_used(etcd: EtcdProcess,
                                                            cluster_name: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}"

    async def main() -> None:
        client = EtcdClient(dead, cluster_name, timeout=1)
        with pytest.raises(EtcdUnavailable, match="no etcd endpoint answered"):
            await client.get("a")
        await client.close()
        async with EtcdClient(f"{dead},{etcd.endpoint}", cluster_name, timeout=1) as client:
            await client.put("a", b"1")
            assert (await client.get("a")) is not None
    asyncio.run(main())


def test_leases_keep_keys_alive_and_revoking_deletes_them(etcd: EtcdProcess,
                                                          cluster_name: str) -> None:
    async def body(client: EtcdClient) -> None:
        lease = await client.grant_lease(2)
        await client.put("nodes/n1", b"{}", lease=lease)
        lost = asyncio.Event()
        keeper = asyncio.create_task(client.keep_alive(lease, 2, on_lost=lost.set))
        await asyncio.sleep(2.5)  # past the TTL: only the keep-alives hold the key
        assert await client.get("nodes/n1") is not None
        assert await client.refresh_lease(lease) > 0
        await client.revoke_lease(lease)
        assert await client.get("nodes/n1") is None
        await asyncio.wait_for(keeper, 3)  # the next refresh finds the lease gone
        assert lost.is_set()
    run(etcd, cluster_name, body)


def test_stop_tasks_outlasts_a_swallowed_cancel() -> None:
    """3.11's ``asyncio.wait_for`` (inside aetcd) can swallow a cancel: a node stopping
    must not then wait forever for its watch task (it hung until SIGKILL)."""
    async def stubborn() -> None:
        # swallowed, as wait_for does when its inner future completed meanwhile
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()
        await asyncio.Event().wait()  # and back to waiting for watch events

    async def failed() -> None:
        raise ValueError("retrieved by stop_tasks, never logged as unretrieved")

    async def main() -> None:
        tasks = [asyncio.create_task(stubborn()), asyncio.create_task(failed())]
        await asyncio.sleep(0)
        await asyncio.wait_for(stop_tasks(tasks), 2)
        assert all(task.done() for task in tasks)
    asyncio.run(main())
