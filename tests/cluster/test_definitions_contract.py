"""The definitions store contract: one suite, run against SQLite and against etcd.

Every kind is saved, read back by a second store instance (a restart, or another node),
and deleted with what it takes along. Names hold bytes that a key layout could trip on;
AMQP tables round-trip with their types. The etcd-only tests cover what only a shared
store has: changes by one instance seen by another through the watch, and imports larger
than one etcd request.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from smartbroker.cluster.definitions_etcd import DefinitionChange, EtcdDefinitionStore
from smartbroker.cluster.etcd_client import EtcdClient
from smartbroker.cluster.etcd_process import EtcdProcess, etcd_binary
from smartbroker.store.definitions import (
    JSON_DEPTH,
    BindingDef,
    DefinitionStore,
    ExchangeDef,
    PermissionDef,
    PolicyDef,
    QueueDef,
    UserDef,
    VHostDef,
)
from smartbroker.store.definitions_api import DefinitionStoreAPI

TABLE: dict[str, Any] = {
    "s": "text", "i": 7, "big": 2**62, "neg": -3, "f": 1.5, "t": True, "none": None,
    "b": b"\x00\xffraw", "nested": {"x": [1, "two", b"3", {"deep": None}], "$b": "not a tag"},
    "lookalike": {"$b": "AAAA"}, "dec": Decimal("1.25"), "ts": dt.datetime(2024, 5, 1, 12, 30),
}
ODD = ["/", "a/b", "%2F", "..", "sp ace", "nul\x00byte", "é☃\U0001f600", "x" * 255, "a"]

Body = Callable[["Backend"], Awaitable[None]]


class Backend:
    """Opens store instances over one shared place (a file, or an etcd prefix)."""

    def __init__(self, kind: str, tmp: Path, etcd: EtcdProcess | None, name: str) -> None:
        self.kind, self.tmp, self.etcd, self.name = kind, tmp, etcd, name
        self.opened: list[Any] = []

    async def open(self) -> DefinitionStoreAPI:
        if self.kind == "sqlite":
            store: Any = DefinitionStore(self.tmp / "definitions.sqlite3")
        else:
            assert self.etcd is not None
            store = await EtcdDefinitionStore(EtcdClient(self.etcd.endpoint, self.name)).open()
        self.opened.append(store)
        return store

    @staticmethod
    async def settle(store: DefinitionStoreAPI) -> None:
        """Until the store's changes are committed (nothing to wait for on SQLite)."""
        pending = store.pending()
        if pending is not None:
            await pending

    async def reopened(self, store: DefinitionStoreAPI) -> DefinitionStoreAPI:
        await self.settle(store)
        return await self.open()

    async def close(self) -> None:
        for store in self.opened:
            if isinstance(store, EtcdDefinitionStore):
                await store.aclose()
                await store.client.close()
            else:
                store.close()


def _runner(kind: str, request: pytest.FixtureRequest, tmp_path: Path,
            cluster_name: str) -> Callable[[Body], None]:
    etcd = None
    if kind == "etcd":
        if etcd_binary() is None:
            pytest.skip("no etcd binary on PATH (Debian: apt-get install etcd-server)")
        etcd = request.getfixturevalue("etcd")

    def runner(body: Body) -> None:
        async def main() -> None:
            backend = Backend(kind, tmp_path, etcd, cluster_name)
            try:
                await asyncio.wait_for(body(backend), 30)
            finally:
                await backend.close()
        asyncio.run(main())
    return runner


@pytest.fixture(params=["sqlite", "etcd"])
def run(request: pytest.FixtureRequest, tmp_path: Path,
        cluster_name: str) -> Callable[[Body], None]:
    """The contract: each test once per store."""
    return _runner(request.param, request, tmp_path, cluster_name)


@pytest.fixture
def run_etcd(request: pytest.FixtureRequest, tmp_path: Path,
             cluster_name: str) -> Callable[[Body], None]:
    """What only a store shared by nodes has."""
    return _runner("etcd", request, tmp_path, cluster_name)


def fill(store: DefinitionStoreAPI, vhost: str = "/") -> None:
    store.save_vhost(VHostDef(vhost, {"limits": {"max-queues": 3}}))
    store.save_user(UserDef("u", "hash", ["administrator"]))
    store.save_user_limits("u", {"max-connections": 2})
    store.save_user_scram("u", {"SCRAM-SHA-256": ("salt", 4096, "stored", "server")})
    store.save_permission(PermissionDef("u", vhost, "c", "w", "r"))
    store.save_topic_permission({"user": "u", "vhost": vhost, "exchange": "ex",
                                 "write": "^a", "read": "^b"})
    store.save_exchange(ExchangeDef(vhost, "ex", "topic", arguments={"alternate-exchange": "ae"}))
    store.save_exchange(ExchangeDef(vhost, "ex2", "fanout", auto_delete=True, internal=True))
    store.save_queue(QueueDef(vhost, "q", arguments=TABLE))
    store.save_queue(QueueDef(vhost, "s", type="stream", arguments={"x-queue-type": "stream"}))
    store.save_binding(BindingDef(vhost, "ex", "q", "queue", "a.#", {"k": b"v"}))
    store.save_binding(BindingDef(vhost, "ex", "q", "queue", "a.#", {"k": b"w"}))  # args differ
    store.save_binding(BindingDef(vhost, "ex", "ex2", "exchange", "b"))
    store.save_binding(BindingDef(vhost, "ex2", "q", "queue", ""))
    store.save_policy(PolicyDef(vhost, "p", "^q$", {"max-length": 10}, 5, "queues"))


def test_pending_is_none_or_the_commit(run: Callable[[Body], None]) -> None:
    async def body(b: Backend) -> None:
        store = await b.open()
        store.save_vhost(VHostDef("v"))
        pending = store.pending()
        if b.kind == "sqlite":
            assert pending is None
        else:
            assert pending is not None
            assert await pending > 0
            assert store.pending() is None
    run(body)


def test_every_kind_round_trips_through_another_instance(run: Callable[[Body], None]) -> None:
    async def body(b: Backend) -> None:
        store = await b.open()
        fill(store)
        mine = store.load_all()
        other = await b.reopened(store)
        assert other.load_all() == mine
        assert mine.queues[0].arguments == TABLE
        assert {type(v) for v in mine.queues[0].arguments.values()} == \
            {type(v) for v in TABLE.values()}
        assert len(mine.bindings) == 4 and len(mine.exchanges) == 2
        assert other.load_user_limits() == {"u": {"max-connections": 2}}
        assert other.load_user_scram() == {"u": {"SCRAM-SHA-256": ("salt", 4096, "stored",
                                                                   "server")}}
        assert other.load_topic_permissions() == [{"user": "u", "vhost": "/", "exchange": "ex",
                                                   "write": "^a", "read": "^b"}]
        store.save_user_limits("u", {})  # clears
        store.save_binding(BindingDef("/", "ex2", "q", "queue", ""))  # again: still one
        store.save_queue(QueueDef("/", "q", auto_delete=True))  # replaces
        third = await b.reopened(store)
        assert third.load_user_limits() == {}
        assert len(third.load_all().bindings) == 4
        assert [q.auto_delete for q in third.load_all().queues] == [True, False]
    run(body)


def test_deep_arguments_round_trip(run: Callable[[Body], None]) -> None:
    async def body(b: Backend) -> None:
        deep: Any = "leaf"
        for _ in range(JSON_DEPTH + 5):
            deep = {"d": deep}
        store = await b.open()
        store.save_queue(QueueDef("/", "deep", arguments={"x-deep": deep}))
        other = await b.reopened(store)
        assert other.load_all().queues[0].arguments == {"x-deep": deep}
    run(body)


def test_odd_names_are_kept_apart_and_round_trip(run: Callable[[Body], None]) -> None:
    async def body(b: Backend) -> None:
        store = await b.open()
        for name in ODD:
            store.save_vhost(VHostDef(name))
            store.save_queue(QueueDef(name, name))
            store.save_exchange(ExchangeDef(name, name, "direct"))
            store.save_binding(BindingDef(name, name, name, "queue", name, {name: name}))
            store.save_permission(PermissionDef(name, name))
            store.save_user(UserDef(name, "h"))
        other = await b.reopened(store)
        defs = other.load_all()
        assert sorted(q.name for q in defs.queues) == sorted(ODD)
        assert all(q.vhost == q.name for q in defs.queues)
        assert sorted(x.routing_key for x in defs.bindings) == sorted(ODD)
        store.delete_vhost("a/b")  # not "a", not "/"; everything in it
        store.delete_user("/")
        again = (await b.reopened(store)).load_all()
        assert sorted(v.name for v in again.vhosts) == sorted(set(ODD) - {"a/b"})
        assert "a/b" not in {q.vhost for q in again.queues} | {x.vhost for x in again.bindings}
        assert sorted(q.name for q in again.queues) == sorted(set(ODD) - {"a/b"})
        assert "/" not in {u.name for u in again.users} | {p.user for p in again.permissions}
    run(body)


def test_deletes_take_along_what_depends_on_them(run: Callable[[Body], None]) -> None:
    async def body(b: Backend) -> None:
        store = await b.open()
        fill(store, "/")
        fill(store, "other")
        store.delete_queue("/", "q")  # bindings to it go
        store.delete_exchange("/", "ex2")  # bindings from and to it go
        store.delete_binding(BindingDef("other", "ex", "q", "queue", "a.#", {"k": b"v"}))
        store.delete_policy("other", "p")
        store.delete_permission("u", "other")
        store.delete_topic_permission("u", "other", "ex")
        defs = (await b.reopened(store)).load_all()
        assert [(x.vhost, x.name) for x in defs.queues] == [("/", "s"), ("other", "q"),
                                                           ("other", "s")]
        assert [(x.vhost, x.source, x.destination, x.arguments) for x in defs.bindings] == [
            ("other", "ex", "ex2", {}), ("other", "ex", "q", {"k": b"w"}),
            ("other", "ex2", "q", {})]
        assert [(p.vhost, p.name) for p in defs.policies] == [("/", "p")]
        assert [p.vhost for p in defs.permissions] == ["/"]
        store.delete_user("u")  # credentials, permissions, topic permissions; not limits
        store.delete_vhost("/")
        other = await b.reopened(store)
        defs = other.load_all()
        assert defs.users == [] and defs.permissions == []
        assert other.load_user_scram() == {} and other.load_topic_permissions() == []
        assert other.load_user_limits() == {"u": {"max-connections": 2}}
        assert {x.vhost for x in [*defs.exchanges, *defs.queues, *defs.policies]} == {"other"}
        assert [v.name for v in defs.vhosts] == ["other"]
    run(body)


def test_transaction_rolls_back_batch_keeps(run: Callable[[Body], None]) -> None:
    async def body(b: Backend) -> None:
        store = await b.open()
        with pytest.raises(RuntimeError), store.transaction():
            store.save_queue(QueueDef("/", "gone"))
            with store.transaction():  # nested: joins the outer one
                store.save_queue(QueueDef("/", "gone-too"))
            raise RuntimeError
        assert store.load_all().queues == []
        with pytest.raises(RuntimeError), store.batch():
            store.save_queue(QueueDef("/", "kept"))
            raise RuntimeError
        with store.transaction():
            store.save_queue(QueueDef("/", "a"))
            store.delete_queue("/", "a")  # the same key twice in one group
            store.save_queue(QueueDef("/", "a", arguments={"v": 2}))
        defs = (await b.reopened(store)).load_all()
        assert [(q.name, q.arguments) for q in defs.queues] == [("a", {"v": 2}), ("kept", {})]
    run(body)


# -- etcd only ---------------------------------------------------------------------------
def test_two_nodes_see_each_others_changes_by_watch(run_etcd: Callable[[Body], None]) -> None:

    async def body(b: Backend) -> None:
        a = await b.open()
        c = await b.open()
        assert isinstance(a, EtcdDefinitionStore) and isinstance(c, EtcdDefinitionStore)
        seen_a: list[DefinitionChange] = []
        seen_c: list[DefinitionChange] = []
        arrived = asyncio.Event()
        a.subscribe(seen_a.append)
        c.subscribe(lambda ch: (seen_c.append(ch), arrived.set()))
        a.save_queue(QueueDef("/", "q1"))
        a.save_binding(BindingDef("/", "amq.direct", "q1", "queue", "k"))
        await b.settle(a)
        while len(seen_c) < 2:
            arrived.clear()
            await arrived.wait()
        assert [(x.table, x.old, x.new) for x in seen_c] == [
            ("queues", None, QueueDef("/", "q1")),
            ("bindings", None, BindingDef("/", "amq.direct", "q1", "queue", "k"))]
        assert c.load_all().queues == [QueueDef("/", "q1")]
        c.delete_queue("/", "q1")  # and its binding, in one transaction
        await b.settle(c)
        while len(seen_a) < 2:
            await asyncio.sleep(0.01)
        assert sorted((x.table, x.new) for x in seen_a) == [("bindings", None), ("queues", None)]
        assert a.load_all().queues == [] and a.load_all().bindings == []
        assert len(seen_c) == 2  # a node's own changes never come back as changes
    run_etcd(body)


def test_an_import_bigger_than_one_etcd_request(run_etcd: Callable[[Body], None]) -> None:

    async def body(b: Backend) -> None:
        store = await b.open()
        big = {"x-pad": "p" * 20_000}
        with store.batch():  # 400 queues x 20 kB: ~8 MB, 400 operations
            for i in range(400):
                store.save_queue(QueueDef("/", f"q{i:03}", arguments=big))
        revision = await store.pending()
        assert revision
        other = await b.reopened(store)
        assert [q.name for q in other.load_all().queues] == [f"q{i:03}" for i in range(400)]
    run_etcd(body)


def test_two_nodes_writing_one_key_converge_on_etcds_order(
        run_etcd: Callable[[Body], None]) -> None:

    async def body(b: Backend) -> None:
        a = await b.open()
        c = await b.open()
        for i in range(20):  # both write the same policy, interleaved
            a.save_policy(PolicyDef("/", "p", "^a", {"i": i}))
            c.save_policy(PolicyDef("/", "p", "^c", {"i": i}))
        await b.settle(a)
        await b.settle(c)
        truth = (await b.open()).load_all().policies
        for _ in range(200):
            if a.load_all().policies == truth == c.load_all().policies:
                break
            await asyncio.sleep(0.01)
        assert a.load_all().policies == truth == c.load_all().policies
        assert truth[0].definition == {"i": 19}
    run_etcd(body)


def test_a_change_etcd_refuses_fails_its_commit_and_leaves_the_view(
        run_etcd: Callable[[Body], None]) -> None:

    async def body(b: Backend) -> None:
        store = await b.open()
        store.save_queue(QueueDef("/", "kept"))
        store.save_queue(QueueDef("/", "huge", arguments={"x-pad": "p" * (2 << 20)}))
        refused = store.pending()
        store.save_queue(QueueDef("/", "after"))  # may share a transaction with "huge"
        assert refused is not None
        with pytest.raises(Exception, match="refused"):
            await refused
        await b.settle(store)
        assert [q.name for q in store.load_all().queues] == ["after", "kept"]
        assert [q.name for q in (await b.reopened(store)).load_all().queues] == ["after",
                                                                               "kept"]
    run_etcd(body)
