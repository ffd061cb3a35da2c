"""The cluster link over real loopback sockets: batching, calls, authentication, a peer
killed mid-call, reconnection and back-pressure."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable

import pytest

from smartbroker.cluster.link import CallError, ClusterLink, PeerDown
from smartbroker.cluster.link_codec import ChannelSpec, FrameType, frame
from smartbroker.cluster.link_peer import PeerConnection
from smartbroker.cluster.link_protocol import Role

PUBLISH = ChannelSpec(1, "publish", "Q", 2)  # seq | routing key, body
SECRET = b"the-cluster-secret"


def run(main: Callable[[], Awaitable[None]], timeout: float = 30.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(main(), timeout)

    asyncio.run(bounded())


async def pair(secret_b: bytes = SECRET, **options: object) -> tuple[ClusterLink, ClusterLink]:
    """Node a (dials) and node b (accepts), both on free loopback ports."""
    a = await ClusterLink("a", "c", SECRET, **options).start()  # type: ignore[arg-type]
    b = await ClusterLink("b", "c", secret_b, **options).start()  # type: ignore[arg-type]
    a.add_peer("b", "127.0.0.1", b.port)
    b.add_peer("a", "127.0.0.1", a.port)
    return a, b


def test_100k_messages_each_way_arrive_in_order_in_few_writes() -> None:
    async def main() -> None:
        a, b = await pair()
        got: dict[str, list[tuple]] = {"a": [], "b": []}
        done = {"a": asyncio.Event(), "b": asyncio.Event()}

        def receiver(me: str) -> Callable[[str, list[tuple]], None]:
            def on_publish(peer: str, items: list[tuple]) -> None:
                assert peer != me
                got[me].extend(items)
                if len(got[me]) >= 100_000:
                    done[me].set()
            return on_publish

        a.on_messages(PUBLISH, receiver("a"))
        b.on_messages(PUBLISH, receiver("b"))
        await a.wait_connected("b")
        await b.wait_connected("a")

        async def publish(link: ClusterLink, peer: str) -> None:
            seq = 0
            while seq < 100_000:
                for _ in range(1000):  # what one loop pass of publishes might forward
                    if not link.send(peer, PUBLISH, (seq, "rk", b"m%d" % seq)):
                        await link.wait_writable(peer, PUBLISH)
                    seq += 1
                await asyncio.sleep(0)

        writes_before = a.writes + b.writes
        await asyncio.gather(publish(a, "b"), publish(b, "a"))
        await done["a"].wait()
        await done["b"].wait()
        for side in ("a", "b"):
            assert [item[0] for item in got[side]] == list(range(100_000))
            assert got[side][12345] == (12345, b"rk", b"m12345")
        writes = a.writes + b.writes - writes_before
        assert writes <= 2 * 100_000 / 200, writes  # batched: never one write per message
        await a.close()
        await b.close()

    run(main)


def test_calls_answer_fail_and_await() -> None:
    async def main() -> None:
        a, b = await pair()

        async def slow_echo(peer: str, payload: bytes) -> bytes:
            await asyncio.sleep(0.01)
            return peer.encode() + b":" + payload

        def refuse(peer: str, payload: bytes) -> bytes:
            raise CallError(404, "NOT_FOUND - no queue 'q'")

        b.on_call("echo", lambda peer, payload: payload[::-1])
        b.on_call("slow", slow_echo)
        b.on_call("refuse", refuse)
        await a.wait_connected("b")
        assert await a.call("b", "echo", b"abc") == b"cba"
        replies = await asyncio.gather(*(a.call("b", "slow", b"%d" % i) for i in range(50)))
        assert replies == [b"a:%d" % i for i in range(50)]
        with pytest.raises(CallError, match="404 NOT_FOUND") as info:
            await a.call("b", "refuse")
        assert info.value.code == 404
        with pytest.raises(CallError, match="no handler for 'nope'"):
            await a.call("b", "nope")
        b.on_call("buggy", lambda peer, payload: None)  # type: ignore[arg-type,return-value]
        with pytest.raises(CallError, match="541 internal error: TypeError"):
            await a.call("b", "buggy")
        assert await a.call("b", "echo", b"still up") == b"pu llits"
        with pytest.raises(PeerDown, match="no link to node 'z'"):
            await a.call("z", "echo")
        await b.wait_connected("a")
        a.on_call("who", lambda peer, payload: b"a")
        assert await b.call("a", "who") == b"a"  # the acceptor calls too
        await a.close()
        await b.close()

    run(main)


def test_a_wrong_secret_never_links_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="smartbroker.cluster.link")

    async def main() -> None:
        a, b = await pair(secret_b=b"another-secret", backoff=(0.05, 0.1))
        for _ in range(100):
            await asyncio.sleep(0.02)
            messages = [r.getMessage() for r in caplog.records]
            if (any("failed authentication" in m for m in messages)
                    and any("closed by the peer: authentication failed" in m for m in messages)):
                break
        assert not a.connected("b") and not b.connected("a")
        refused = [m for m in messages if "failed authentication" in m]
        assert refused[0].startswith("cluster link from a (127.0.0.1:")
        assert "refused: node 'a' failed authentication" in refused[0]
        assert len(refused) == 1  # retries do not repeat it
        assert not any(r.exc_info for r in caplog.records)
        await a.close()
        await b.close()

    run(main)


PEER_SCRIPT = """
import asyncio, sys
from smartbroker.cluster.link import ClusterLink

async def main():
    link = await ClusterLink("b", "c", b"the-cluster-secret").start()
    link.on_call("hang", lambda peer, payload: asyncio.Event().wait())
    print(link.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_peer_killed_mid_call_fails_the_call_at_once() -> None:
    proc = subprocess.Popen([sys.executable, "-c", PEER_SCRIPT], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())

        async def main() -> None:
            a = await ClusterLink("a", "c", SECRET).start()
            downs: list[str] = []
            a.on_peer_down(downs.append)
            a.add_peer("b", "127.0.0.1", port)
            await a.wait_connected("b")
            call = asyncio.ensure_future(a.call("b", "hang", b""))
            await asyncio.sleep(0.05)
            assert not call.done()
            os.kill(proc.pid, signal.SIGKILL)
            started = time.monotonic()
            with pytest.raises(PeerDown, match="the link to node 'b' went down"):
                await call
            assert time.monotonic() - started < 2.0
            assert downs == ["b"]
            await a.close()

        run(main)
    finally:
        proc.kill()
        proc.wait()


def test_a_restarted_peer_is_dialed_again() -> None:
    async def main() -> None:
        a, b = await pair(backoff=(0.02, 0.2))
        ups: list[str] = []
        a.on_peer_up(ups.append)
        down = asyncio.Event()
        a.on_peer_down(lambda peer: down.set())
        await a.wait_connected("b")
        ups.clear()
        port = b.port
        await b.close()
        await down.wait()
        assert not a.connected("b")
        with pytest.raises(PeerDown):
            a.send("b", PUBLISH, (1, "", b""))
        b2 = await ClusterLink("b", "c", SECRET, port=port).start()
        b2.on_call("ping", lambda peer, payload: b"pong")
        await a.wait_connected("b", timeout=5.0)
        assert await a.call("b", "ping") == b"pong"
        assert ups == ["b"]
        await a.close()
        await b2.close()

    run(main)


def test_a_receiver_holding_a_channel_stops_the_sender_within_a_window() -> None:
    async def main() -> None:
        a, b = await pair(window=64 * 1024)
        got: list[tuple] = []
        b.on_messages(PUBLISH, lambda peer, items: got.extend(items))
        await a.wait_connected("b")
        await b.wait_connected("a")
        b.hold("a", PUBLISH)
        body = b"x" * 1000
        seq = 0
        while a.send("b", PUBLISH, (seq, "", body)):
            seq += 1
        told: list[tuple] = []
        a.on_writable(lambda peer, spec: told.append((peer, spec)))
        waiting = asyncio.ensure_future(a.wait_writable("b", PUBLISH))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        assert len(got) == seq + 1 <= 64 + 1  # one window, then nothing
        assert told == []
        b.release("a", PUBLISH)
        await asyncio.wait_for(waiting, 5.0)
        assert a.writable("b", PUBLISH)
        assert told[0] == ("b", PUBLISH)
        await a.close()
        await b.close()

    run(main)


def test_a_second_connection_from_a_peer_replaces_the_first() -> None:
    async def main() -> None:
        a, b = await pair()
        a.on_call("hang", lambda peer, payload: asyncio.Event().wait())
        downs: list[str] = []
        b.on_peer_down(downs.append)
        await a.wait_connected("b")
        await b.wait_connected("a")
        first = b._links["a"]
        pending = asyncio.ensure_future(b.call("a", "hang"))
        await asyncio.sleep(0.05)
        await a.loop.create_connection(lambda: PeerConnection(a, Role.DIALER, "b"),
                                       "127.0.0.1", b.port)  # as if a restarted
        with pytest.raises(PeerDown, match="replaced by a new connection"):
            await asyncio.wait_for(pending, 5)
        assert downs == ["a"]
        assert b._links["a"] is not first
        await a.close()
        await b.close()

    run(main)


def test_a_paused_peer_is_found_dead_by_heartbeats() -> None:
    proc = subprocess.Popen([sys.executable, "-c", PEER_SCRIPT], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())

        async def main() -> None:
            a = await ClusterLink("a", "c", SECRET, heartbeat=0.1, missed_heartbeats=3).start()
            a.add_peer("b", "127.0.0.1", port)
            await a.wait_connected("b")
            call = asyncio.ensure_future(a.call("b", "hang", b""))
            os.kill(proc.pid, signal.SIGSTOP)
            started = time.monotonic()
            with pytest.raises(PeerDown, match="nothing heard for"):
                await call
            assert time.monotonic() - started < 2.0
            assert not a.connected("b")
            a.remove_peer("b")
            await a.close()

        run(main)
    finally:
        proc.kill()
        proc.wait()


def test_garbage_on_the_cluster_port_is_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)

    async def main() -> None:
        b = await ClusterLink("b", "c", SECRET).start()
        for garbage in (b"GET / HTTP/1.1\r\n\r\n", b"\x00\x00\x00\x05\x01hello",
                        b"\xff" * 64, b"AMQP\x00\x00\x09\x01"):
            reader, writer = await asyncio.open_connection("127.0.0.1", b.port)
            writer.write(garbage)
            rest = await asyncio.wait_for(reader.read(), 5)  # the HELLO, maybe a CLOSE: EOF
            assert rest[4:5] == b"\x01"
            writer.close()
        a = await ClusterLink("a", "c", SECRET).start()
        a.add_peer("b", "127.0.0.1", b.port)
        await a.wait_connected("b")  # still serving
        assert not any(r.exc_info for r in caplog.records)
        closed = [r.getMessage() for r in caplog.records if "cluster link from" in r.getMessage()]
        assert len(closed) >= 3
        await a.close()
        await b.close()

    run(main)


def test_a_heartbeat_tick_between_a_peers_close_and_connection_lost_is_quiet() -> None:
    """The peer's CLOSE is read (the link is closed) but ``connection_lost`` comes a loop
    turn later: a heartbeat tick in between skips that link instead of raising."""
    async def main() -> None:
        a, b = await pair()
        await a.wait_connected("b")
        link = a._links["b"]
        link.data_received(frame(FrameType.CLOSE, b"going away"))
        assert not link.ready and a._links.get("b") is link  # connection_lost not yet run
        link.sent = False  # quiet since the last tick: this one would send a heartbeat
        a._tick()
        await link.finished
        assert not a.connected("b")
        await a.close()
        await b.close()

    run(main)
