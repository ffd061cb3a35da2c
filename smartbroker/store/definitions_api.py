"""The one interface of a definitions store: SQLite on a single node, etcd in a cluster.

``DefinitionStore`` (store/definitions.py) and ``EtcdDefinitionStore``
(cluster/definitions_etcd.py) both satisfy it; the recorder, ``Persistence.restore`` and
the Kafka admin batch only use what is named here, and
tests/cluster/test_definitions_contract.py runs one suite against both.

Writers are synchronous, because the broker records a change in the same call that makes
it. A store whose commit completes later (etcd) says so through ``pending()``: the
awaitable of everything written so far, which a front end awaits before it answers
``-ok`` ("a declare answers -ok only after etcd accepted it"). SQLite commits before the
writer returns, so its ``pending()`` is always None and nothing waits on a single node.
"""

from __future__ import annotations

from collections.abc import Awaitable
from contextlib import AbstractContextManager
from typing import Protocol, runtime_checkable

from smartbroker.store.definitions import (
    BindingDef,
    Definitions,
    ExchangeDef,
    PermissionDef,
    PolicyDef,
    QueueDef,
    UserDef,
    VHostDef,
)

ScramRows = dict[str, tuple[str, int, str, str]]  # mechanism -> salt, iterations, keys


@runtime_checkable
class DefinitionStoreAPI(Protocol):
    commits_later: bool  # True: ``pending()`` may be an awaitable (front ends check once)

    # -- grouping --------------------------------------------------------------------
    def transaction(self) -> AbstractContextManager[None]:
        """All changes of the block or none (an exception rolls back); nests."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Many changes in one commit; what was written is kept even if the block raises."""
        ...

    def pending(self) -> Awaitable[object] | None:
        """What to await before telling a client a change is done; None: already done."""
        ...

    # -- vhosts and users --------------------------------------------------------------
    def save_vhost(self, v: VHostDef) -> None: ...
    def delete_vhost(self, name: str) -> None:
        """The vhost and everything in it (exchanges, queues, bindings, policies,
        permissions, topic permissions), as RabbitMQ does."""
        ...
    def save_user(self, u: UserDef) -> None: ...
    def delete_user(self, name: str) -> None:
        """The user, its SCRAM credentials, permissions and topic permissions."""
        ...
    def save_user_limits(self, name: str, limits: dict[str, int]) -> None:
        """Empty ``limits`` clears them."""
        ...
    def load_user_limits(self) -> dict[str, dict[str, int]]: ...
    def save_user_scram(self, name: str, rows: ScramRows) -> None:
        """Replaces the user's SCRAM credentials."""
        ...
    def load_user_scram(self) -> dict[str, ScramRows]: ...

    # -- permissions -------------------------------------------------------------------
    def save_permission(self, p: PermissionDef) -> None: ...
    def delete_permission(self, user: str, vhost: str) -> None: ...
    def save_topic_permission(self, p: dict[str, str]) -> None: ...
    def delete_topic_permission(self, user: str, vhost: str, exchange: str) -> None: ...
    def load_topic_permissions(self) -> list[dict[str, str]]: ...

    # -- vhost contents ----------------------------------------------------------------
    def save_exchange(self, e: ExchangeDef) -> None: ...
    def delete_exchange(self, vhost: str, name: str) -> None:
        """Also drops the bindings from it and to it."""
        ...
    def save_queue(self, q: QueueDef) -> None: ...
    def delete_queue(self, vhost: str, name: str) -> None:
        """Also drops the bindings to it."""
        ...
    def save_binding(self, b: BindingDef) -> None: ...
    def delete_binding(self, b: BindingDef) -> None: ...
    def save_policy(self, p: PolicyDef) -> None: ...
    def delete_policy(self, vhost: str, name: str) -> None: ...

    # -- reading -----------------------------------------------------------------------
    def load_all(self) -> Definitions:
        """Everything, each list sorted as SQLite's ORDER BY sorts it."""
        ...

    def close(self) -> None: ...
