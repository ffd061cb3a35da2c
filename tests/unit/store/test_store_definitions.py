"""The SQLite definitions store and its type-preserving encoding of AMQP tables."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from smartbroker.store.definitions import (
    BindingDef,
    DefinitionStore,
    ExchangeDef,
    PermissionDef,
    PolicyDef,
    QueueDef,
    UserDef,
    VHostDef,
    dumps,
    loads,
)

TABLE = {
    "s": "text",
    "i": 7,
    "big": 2**62,
    "neg": -3,
    "f": 1.5,
    "whole_float": 2.0,
    "t": True,
    "no": False,
    "none": None,
    "b": b"\x00\xffraw",
    "nested": {"x": [1, "two", b"3", {"deep": None}], "$b": "not a tag"},
    "lookalike": {"$b": "AAAA"},
    "dec": Decimal("1.25"),
    "ts": dt.datetime(2024, 5, 1, 12, 30),
}


def test_encoding_round_trips_types():
    back = loads(dumps(TABLE))
    assert back == TABLE
    for k, v in TABLE.items():
        assert type(back[k]) is type(v), k


def test_encoding_refuses_unknown_types():
    with pytest.raises(TypeError):
        dumps({"x": object()})


def test_save_load_all_kinds(tmp_path):
    path = tmp_path / "defs.db"
    db = DefinitionStore(path)
    db.save_vhost(VHostDef("/", {"description": "default"}))
    db.save_user(UserDef("guest", "hash", ["administrator"]))
    db.save_permission(PermissionDef("guest", "/"))
    db.save_exchange(ExchangeDef("/", "ex", "topic", arguments={"alternate-exchange": "ae"}))
    db.save_queue(QueueDef("/", "q", arguments=TABLE))
    db.save_binding(BindingDef("/", "ex", "q", routing_key="a.#", arguments={"x-match": "all"}))
    db.save_binding(BindingDef("/", "ex", "q", routing_key="a.#", arguments={"x-match": "all"}))  # idempotent
    db.save_policy(PolicyDef("/", "ttl", "^q$", {"message-ttl": 1000}, priority=2, apply_to="queues"))
    db.close()
    d = DefinitionStore(path).load_all()
    assert d.vhosts == [VHostDef("/", {"description": "default"})]
    assert d.users == [UserDef("guest", "hash", ["administrator"])]
    assert d.permissions == [PermissionDef("guest", "/", ".*", ".*", ".*")]
    assert d.exchanges == [ExchangeDef("/", "ex", "topic", True, False, False, {"alternate-exchange": "ae"})]
    assert d.queues == [QueueDef("/", "q", arguments=TABLE)]
    assert d.bindings == [BindingDef("/", "ex", "q", "queue", "a.#", {"x-match": "all"})]
    assert d.policies == [PolicyDef("/", "ttl", "^q$", {"message-ttl": 1000}, 2, "queues")]


def test_deletes_cascade_like_rabbitmq():
    db = DefinitionStore(":memory:")
    db.save_exchange(ExchangeDef("/", "ex", "direct"))
    db.save_exchange(ExchangeDef("/", "ex2", "fanout"))
    db.save_queue(QueueDef("/", "q"))
    db.save_binding(BindingDef("/", "ex", "q", routing_key="k"))
    db.save_binding(BindingDef("/", "ex2", "ex", "exchange"))
    db.save_binding(BindingDef("/", "ex2", "q"))
    db.delete_exchange("/", "ex")
    assert db.load_all().bindings == [BindingDef("/", "ex2", "q")]
    db.delete_queue("/", "q")
    assert db.load_all().bindings == [] and db.load_all().queues == []
    db.save_binding(BindingDef("/", "ex2", "q2", arguments={"a": 1}))
    db.delete_binding(BindingDef("/", "ex2", "q2", arguments={"a": 2}))  # different args: kept
    assert len(db.load_all().bindings) == 1
    db.delete_binding(BindingDef("/", "ex2", "q2", arguments={"a": 1}))
    assert db.load_all().bindings == []
    db.save_user(UserDef("u", "h"))
    db.save_permission(PermissionDef("u", "/"))
    db.save_policy(PolicyDef("/", "p", ".*"))
    db.delete_user("u")
    assert db.load_all().permissions == [] and db.load_all().users == []
    db.delete_vhost("/")
    d = db.load_all()
    assert d.exchanges == [] and d.policies == []


def test_transaction_is_all_or_nothing(tmp_path):
    db = DefinitionStore(tmp_path / "d.db")
    with pytest.raises(RuntimeError), db.transaction():
        db.save_queue(QueueDef("/", "q1"))
        db.save_queue(QueueDef("/", "q2"))
        raise RuntimeError("boom")
    assert db.load_all().queues == []
    with db.transaction():
        db.save_queue(QueueDef("/", "q1"))
        db.save_queue(QueueDef("/", "q2"))
    db.close()
    assert [q.name for q in DefinitionStore(tmp_path / "d.db").load_all().queues] == ["q1", "q2"]


def test_batch_is_one_commit_that_keeps_what_was_written(tmp_path):
    """``batch`` groups independent saves into one commit (one fsync) and, unlike a
    transaction, keeps what the block wrote when it raises."""
    db = DefinitionStore(tmp_path / "d.db")
    commits = []
    db._db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    with db.batch():
        for i in range(50):
            db.save_queue(QueueDef("/", f"q{i}"))
    assert commits == ["COMMIT"]
    with pytest.raises(RuntimeError), db.batch():
        db.save_queue(QueueDef("/", "late"))
        raise RuntimeError("boom")
    db.close()
    names = {q.name for q in DefinitionStore(tmp_path / "d.db").load_all().queues}
    assert names == {f"q{i}" for i in range(50)} | {"late"}
