"""DescribeProducers (61), DescribeTransactions (65) and ListTransactions (66): what admin
tools (``kafka-transactions.sh``, kafka-python's ``describe_producers``,
``list_transactions``, ``describe_transactions``, ``find_hanging_transactions``) read to
find stuck producers and transactions. Read-only views of state the broker keeps anyway:

* DescribeProducers: a partition's producer state (``queues/partition_producers.py``,
  Kafka's ProducerStateManager): each producer id's epoch, last sequence, last timestamp,
  coordinator epoch and the first offset of its open transaction (-1: none). A stream that
  never saw a producer id has none. Needs ``read`` on the topic (Kafka's READ), else
  TOPIC_AUTHORIZATION_FAILED; an unknown topic or partition is UNKNOWN_TOPIC_OR_PARTITION,
  one another node leads (cluster mode) NOT_LEADER_OR_FOLLOWER.
* ListTransactions (v0-1) and DescribeTransactions: the transaction coordinator's
  ``TxnMetadata`` per transactional id (``transactions.py``), with Kafka's state names.
  ListTransactions filters by state (names Kafka does not know come back in
  ``UnknownStateFilters`` and match nothing), producer id and, from v1, a running time
  longer than ``DurationFilter`` ms. v2's ``TransactionalIdPattern`` is not served (the
  regular-expression dialect and its errors are Kafka 4.1's). DescribeTransactions answers
  TRANSACTIONAL_ID_NOT_FOUND for an id the coordinator does not have, and lists only the
  partitions of topics the user may describe.

Permissions: RabbitMQ's model has no TransactionalId resource; Kafka implies DESCRIBE on a
transactional id from WRITE on it, and the rule ``txn_api.py`` applies to use one is "may
write some topic of the Kafka vhost", so that is the rule here too (ListTransactions leaves
out what may not be described, as Kafka does; DescribeTransactions answers
TRANSACTIONAL_ID_AUTHORIZATION_FAILED).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from smartbroker.kafka import codec
from smartbroker.kafka.authz import current_user, topic_describable, vhost_allowed
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.produce import PartitionError, Topics
from smartbroker.kafka.transactions import TransactionCoordinator
from smartbroker.kafka.txn_log import (
    COMPLETE_ABORT,
    COMPLETE_COMMIT,
    EMPTY,
    ONGOING,
    PREPARE_ABORT,
    PREPARE_COMMIT,
)

DESCRIBE_PRODUCERS, DESCRIBE_TRANSACTIONS, LIST_TRANSACTIONS = 61, 65, 66
VERSIONS = {DESCRIBE_PRODUCERS: (0, 0), DESCRIBE_TRANSACTIONS: (0, 0),
            LIST_TRANSACTIONS: (0, 1)}
# Kafka's TransactionState names (Dead and PrepareEpochFence never last here)
STATES = frozenset({EMPTY, ONGOING, PREPARE_COMMIT, PREPARE_ABORT, COMPLETE_COMMIT,
                    COMPLETE_ABORT, "Dead", "PrepareEpochFence"})


class TxnDescriber:
    """The three handlers, over the listener's topics and transaction coordinator."""

    def __init__(self, broker: Any, topics: Topics, coordinator: TransactionCoordinator) -> None:
        self.broker = broker
        self.topics = topics
        self.coordinator = coordinator

    def _may_describe_ids(self) -> bool:
        """Kafka's DESCRIBE on transactional ids: implied by WRITE, which is "may write
        some topic of the Kafka vhost" here (the module docstring)."""
        vhost, user = self.topics.vhost, current_user(self.broker)
        if not vhost_allowed(self.broker, vhost, user):
            return False
        perm = self.broker.permissions.get(vhost, user)
        return perm is not None and perm.write not in ("", "^$")

    # -- DescribeProducers -----------------------------------------------------------------

    def describe_producers(self, request: Any, session: Any) -> Any:
        cls = codec.response_class(DESCRIBE_PRODUCERS)
        topic_cls = cls.TopicResponse
        part_cls = topic_cls.PartitionResponse
        answers = []
        for topic in request.body.topics:
            parts = []
            for index in topic.partition_indexes:
                try:
                    producers = self._producers(topic.name, index, part_cls.ProducerState)
                except PartitionError as exc:
                    parts.append(part_cls(partition_index=index, error_code=exc.code,
                                          error_message=str(exc), active_producers=[]))
                    continue
                parts.append(part_cls(partition_index=index, error_code=ErrorCode.NONE,
                                      error_message=None, active_producers=producers))
            answers.append(topic_cls(name=topic.name, partitions=parts))
        return cls(version=request.api_version, throttle_time_ms=0, topics=answers)

    def _producers(self, name: str, index: int, state_cls: Any) -> list[Any]:
        queue = self.topics.stream(name, create=False, need="read")
        self.topics.local_partition(queue, name, index)
        txns = queue.txns
        if txns is None or index >= len(txns.partitions):
            return []  # never a producer id here
        return [state_cls(producer_id=pid, producer_epoch=entry.epoch,
                          last_sequence=entry.last_seq, last_timestamp=entry.last_ts,
                          coordinator_epoch=entry.coordinator_epoch,
                          current_txn_start_offset=entry.txn_first)
                for pid, entry in sorted(txns.partitions[index].producers.items())]

    # -- ListTransactions ------------------------------------------------------------------

    def list_transactions(self, request: Any, session: Any) -> Any:
        cls = codec.response_class(LIST_TRANSACTIONS)
        body, version = request.body, request.api_version
        wanted_states = set(body.state_filters or ())
        unknown = sorted(s for s in wanted_states if s not in STATES)
        pids = set(body.producer_id_filters or ())
        duration = body.duration_filter if version >= 1 else -1
        now = int(time.time() * 1000)
        listed = []
        if self._may_describe_ids():
            for txn_id, meta in sorted(self.coordinator.txns.items()):
                if (pids and meta.producer_id not in pids) or (
                        wanted_states and meta.state not in wanted_states) or (
                        duration is not None and duration >= 0
                        and now - meta.started_ms <= duration):
                    continue
                listed.append(cls.TransactionState(transactional_id=txn_id,
                                                   producer_id=meta.producer_id,
                                                   transaction_state=meta.state))
        return cls(version=version, throttle_time_ms=0, error_code=ErrorCode.NONE,
                   unknown_state_filters=unknown, transaction_states=listed)

    # -- DescribeTransactions --------------------------------------------------------------

    def describe_transactions(self, request: Any, session: Any) -> Any:
        cls = codec.response_class(DESCRIBE_TRANSACTIONS)
        state_cls = cls.TransactionState
        allowed = self._may_describe_ids()
        states = []
        for txn_id in request.body.transactional_ids:
            meta = self.coordinator.txns.get(txn_id) if allowed else None
            if meta is None:
                code = (ErrorCode.TRANSACTIONAL_ID_NOT_FOUND if allowed
                        else ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                states.append(state_cls(error_code=code, transactional_id=txn_id,
                                        transaction_state="", transaction_timeout_ms=0,
                                        transaction_start_time_ms=-1, producer_id=-1,
                                        producer_epoch=-1, topics=[]))
                continue
            by_topic: dict[str, list[int]] = defaultdict(list)
            for topic, partition in sorted(meta.partitions):
                by_topic[topic].append(partition)
            topics = [state_cls.TopicData(topic=t, partitions=p) for t, p in by_topic.items()
                      if topic_describable(self.broker, self.topics.vhost, t)]
            states.append(state_cls(error_code=ErrorCode.NONE, transactional_id=txn_id,
                                    transaction_state=meta.state,
                                    transaction_timeout_ms=meta.timeout_ms,
                                    transaction_start_time_ms=meta.started_ms,
                                    producer_id=meta.producer_id,
                                    producer_epoch=meta.epoch, topics=topics))
        return cls(version=request.api_version, throttle_time_ms=0, transaction_states=states)
