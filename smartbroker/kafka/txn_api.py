"""InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn, TxnOffsetCommit and EndTxn: the
wire side of the transaction coordinator (transactions.py), and how its decisions reach
the streams.

* Markers: EndTxn (or a timeout, or a fencing InitProducerId) writes one control batch
  (``codec.control_batch``) to every partition of the transaction, as stored Kafka batches
  Fetch serves and AMQP readers skip. The partition's producer state learns the marker
  first, so the readers the append wakes see the new last stable offset. EndTxn answers
  once every marker is durable (as Produce with acks=all).
* Offsets: a committed transaction's TxnOffsetCommit offsets go to the one
  committed-offset store, ``queue.groups.commit`` (as OffsetCommit does, groups.py).
* Errors as Kafka's KafkaApis: PRODUCER_FENCED is INVALID_PRODUCER_EPOCH to the versions
  before it existed (InitProducerId < 4, AddPartitionsToTxn/AddOffsetsToTxn/EndTxn < 2,
  TxnOffsetCommit < 3); AddPartitionsToTxn answers an unknown or forbidden topic per
  partition and OPERATION_NOT_ATTEMPTED for the others.
* Permissions: Kafka's TransactionalId and IdempotentWrite resources do not exist in
  RabbitMQ's model, so a producer id is given to a user that may write some topic of the
  Kafka vhost (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED, or CLUSTER_AUTHORIZATION_FAILED
  without a transactional id); partitions need ``write``, offsets ``read`` on the topic.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from smartbroker.kafka import codec, idempotence
from smartbroker.kafka.authz import current_user, group_allowed, vhost_allowed
from smartbroker.kafka.codec import Request
from smartbroker.kafka.errors import ErrorCode
from smartbroker.kafka.groups import MAX_METADATA, valid_group_id
from smartbroker.kafka.produce import PartitionError, Topics
from smartbroker.kafka.transactions import Partition, TransactionCoordinator, TxnError
from smartbroker.kafka.txn_log import TxnOffset
from smartbroker.queues import producer_state, stream_appends

log = logging.getLogger("smartbroker.kafka")
INIT_PRODUCER_ID, ADD_PARTITIONS_TO_TXN, ADD_OFFSETS_TO_TXN = 22, 24, 25
END_TXN, TXN_OFFSET_COMMIT = 26, 28
VERSIONS = {INIT_PRODUCER_ID: (0, 4), ADD_PARTITIONS_TO_TXN: (0, 3),
            ADD_OFFSETS_TO_TXN: (0, 3), END_TXN: (0, 3), TXN_OFFSET_COMMIT: (0, 3)}
_FENCED_SINCE = {INIT_PRODUCER_ID: 4, ADD_PARTITIONS_TO_TXN: 2, ADD_OFFSETS_TO_TXN: 2,
                 END_TXN: 2, TXN_OFFSET_COMMIT: 3}
MAINTENANCE_SECONDS = 60.0  # producer expiry and state snapshots


def _code(error: str, api_key: int, version: int) -> int:
    if error == "PRODUCER_FENCED" and version < _FENCED_SINCE[api_key]:
        return ErrorCode.INVALID_PRODUCER_EPOCH
    return ErrorCode[error]


class TxnHandlers:
    """The transaction APIs of one listener, over the Kafka vhost's streams."""

    def __init__(self, broker: Any, topics: Topics) -> None:
        self.broker = broker
        self.topics = topics
        persistence = getattr(broker, "persistence", None)
        if persistence is None:  # a broker without a data directory: in memory
            self.coordinator = TransactionCoordinator(None, self.write_markers, self.apply_offsets)
        else:
            storage = persistence.storage
            self.coordinator = TransactionCoordinator(
                persistence.data_dir / "kafka-transactions", self.write_markers,
                self.apply_offsets, fsync=storage.fsync, executor=persistence.executors.fsync,
                handles=persistence.executors.handles)
        self.coordinator.recover()
        # group id -> its Kafka group (coordinator.py) or None: TxnOffsetCommit's checks
        self.group_of: Callable[[str], Any] = lambda group: None
        self._maintenance: asyncio.TimerHandle | None = None
        self._schedule_maintenance()

    def _schedule_maintenance(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # handlers built outside a loop (unit tests): maintain() by hand
            return
        self._maintenance = loop.call_later(MAINTENANCE_SECONDS, self._maintain)

    def _maintain(self) -> None:
        try:
            self.maintain()
        except Exception:  # never lose the timer: the next pass retries
            log.exception("Kafka producer state maintenance failed")
        self._schedule_maintenance()

    def maintain(self, now_ms: int | None = None) -> int:
        """Forget idle transactional ids and producers, and snapshot the streams' producer
        state, so that the load after a crash scans only what was appended since
        (queues/producer_state.py). Returns how many producers were forgotten."""
        now = int(time.time() * 1000) if now_ms is None else now_ms
        self.coordinator.expire_ids(now)
        self.coordinator.retry_prepared()
        vhost = self.broker.vhosts.get(self.topics.vhost)
        forgotten = 0
        for queue in list(vhost.queues.values()) if vhost is not None else ():
            state = getattr(queue, "txns", None)
            if state is None or queue.deleted:
                continue
            forgotten += state.expire(now)
            state.forget_before(queue.partitions.first_offsets())
            if queue.directory is None:
                continue
            data = producer_state.encode_snapshot(state, queue.partitions.next_offsets())
            covered = state.journal.next_offset if state.journal is not None else None
            self._write_later(queue, data, covered)
        return forgotten

    def _write_later(self, queue: Any, data: bytes, covered: int | None = None) -> None:
        """The snapshot file is written and fsynced on a disk thread, not the loop; then
        the journal's segments below ``covered`` (what it covers) may go."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (unit tests): now
            loop = None
        persistence = getattr(self.broker, "persistence", None)
        if loop is None or persistence is None:
            try:
                producer_state.write_snapshot(queue.directory, data)
            except OSError as exc:
                log.warning("producer state of stream %r not saved: %s", queue.name, exc)
            return
        future = loop.run_in_executor(persistence.executors.fsync,
                                      producer_state.write_snapshot, queue.directory, data)

        def done(f: asyncio.Future[None]) -> None:
            exc = None if f.cancelled() else f.exception()
            if exc is not None:  # the older snapshot stays: a longer scan at load
                log.warning("producer state of stream %r not saved: %s", queue.name, exc)
            elif covered is not None and not (queue.deleted or queue.closed):
                queue.txns.journal.trim(covered)
        future.add_done_callback(done)

    def table(self) -> dict[int, Any]:
        return {INIT_PRODUCER_ID: self.init_producer_id,
                ADD_PARTITIONS_TO_TXN: self.add_partitions_to_txn,
                ADD_OFFSETS_TO_TXN: self.add_offsets_to_txn,
                END_TXN: self.end_txn, TXN_OFFSET_COMMIT: self.txn_offset_commit}

    def _may_write_some(self) -> bool:
        """A producer id goes to a user that may write some topic (see the docstring)."""
        vhost = self.topics.vhost
        user = current_user(self.broker)
        if not vhost_allowed(self.broker, vhost, user):
            return False
        perm = self.broker.permissions.get(vhost, user)
        return perm is not None and perm.write not in ("", "^$")

    # -- the streams' side -----------------------------------------------------------------
    def write_markers(self, partitions: list[Partition], pid: int, epoch: int,
                      commit: bool) -> Any:
        """Append a COMMIT/ABORT marker to each partition; a future of their durability,
        or None when nothing needs waiting for. A topic deleted meanwhile is skipped."""
        now = int(time.time() * 1000)
        batch = codec.control_batch(pid, epoch, commit, 0, now)
        waits = []
        for topic, index in partitions:
            try:
                queue = self.topics.stream(topic, create=False)
            except PartitionError:
                continue
            if queue.deleted or not queue.partitions.has(index):
                continue
            state = idempotence.producers_of(queue)[index]
            offset = queue.partitions[index].next_offset
            state.marker(pid, epoch, commit, offset, timestamp_ms=now)
            if queue.stream.compact:  # stored per record there: the marker is journaled
                if queue.consumers:
                    queue.dispatch()
                if state.journal is not None and state.journal.last >= 0:
                    waits.append(state.journal.wait_durable())
                continue
            first, result = stream_appends.append_kafka_batches(queue, index, [(batch, 1, now)])
            if queue.consumers:
                queue.dispatch()  # the LSO moved: AMQP readers may go on
            if result.sync is not None:
                waits.append(result.sync.wait_durable(first))
        if not waits:
            return None
        return asyncio.ensure_future(asyncio.gather(*waits))

    def apply_offsets(self, group: str, offsets: dict[Partition, TxnOffset]) -> None:
        """A committed transaction's offsets become the group's committed offsets, with
        their leader epoch and metadata (as OffsetCommit keeps them)."""
        for (topic, index), (offset, epoch, metadata) in offsets.items():
            try:
                queue = self.topics.stream(topic, create=False)
                queue.groups.commit(group, index, offset, metadata, epoch)
                queue.groups.make_commits_survive_crash()
            except Exception as exc:  # deleted topic, or partition gone: Kafka drops it too
                log.info("transactional offset of group %r on %s-%d dropped: %s",
                         group, topic, index, exc)

    # -- InitProducerId --------------------------------------------------------------------
    def init_producer_id(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(INIT_PRODUCER_ID)
        body, version = request.body, request.api_version
        txn_id = body.transactional_id
        pid, epoch, code = -1, -1, ErrorCode.NONE
        if not self._may_write_some():
            code = (ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED if txn_id is not None
                    else ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
        else:
            expected = (body.producer_id, body.producer_epoch) if version >= 3 else (-1, -1)
            try:
                pid, epoch = self.coordinator.init_producer_id(
                    txn_id, body.transaction_timeout_ms, *expected)
            except TxnError as exc:
                code = _code(exc.error, INIT_PRODUCER_ID, version)
        return cls(version=version, throttle_time_ms=0, error_code=code, producer_id=pid,
                   producer_epoch=epoch)

    # -- AddPartitionsToTxn ----------------------------------------------------------------
    def add_partitions_to_txn(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(ADD_PARTITIONS_TO_TXN)
        topic_cls = cls.AddPartitionsToTxnTopicResult
        part_cls = topic_cls.AddPartitionsToTxnPartitionResult
        body, version = request.body, request.api_version
        wanted = [(t.name, list(t.partitions)) for t in body.v3_and_below_topics]
        errors: dict[Partition, int] = {}
        for name, parts in wanted:
            try:
                queue = self.topics.stream(name, create=False, need="write")
            except PartitionError as exc:
                errors.update({(name, p): exc.code for p in parts})
                continue
            errors.update({(name, p): ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                           for p in parts if not queue.partitions.has(p)})
            spread = self.topics.partition_elsewhere  # cluster: its markers go to its node
            if spread is not None:  # and this coordinator writes none there: refused
                errors.update({(name, p): ErrorCode.NOT_LEADER_OR_FOLLOWER
                               for p in parts if (name, p) not in errors and spread(name, p)})
        if errors:
            default = ErrorCode.OPERATION_NOT_ATTEMPTED
        else:
            default = ErrorCode.NONE
            try:
                self.coordinator.add_partitions(
                    body.v3_and_below_transactional_id, body.v3_and_below_producer_id,
                    body.v3_and_below_producer_epoch,
                    [(name, p) for name, parts in wanted for p in parts])
            except TxnError as exc:
                default = _code(exc.error, ADD_PARTITIONS_TO_TXN, version)
        return cls(version=version, throttle_time_ms=0, results_by_topic_v3_and_below=[
            topic_cls(name=name, results_by_partition=[
                part_cls(partition_index=p, partition_error_code=errors.get((name, p), default))
                for p in parts]) for name, parts in wanted])

    # -- AddOffsetsToTxn -------------------------------------------------------------------
    def add_offsets_to_txn(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(ADD_OFFSETS_TO_TXN)
        body, version = request.body, request.api_version
        code = ErrorCode.NONE
        if not valid_group_id(body.group_id):
            code = ErrorCode.INVALID_GROUP_ID
        elif not group_allowed(self.broker, self.topics.vhost, body.group_id):
            code = ErrorCode.GROUP_AUTHORIZATION_FAILED
        else:
            try:
                self.coordinator.add_offsets(body.transactional_id, body.producer_id,
                                             body.producer_epoch, body.group_id)
            except TxnError as exc:
                code = _code(exc.error, ADD_OFFSETS_TO_TXN, version)
        return cls(version=version, throttle_time_ms=0, error_code=code)

    # -- TxnOffsetCommit -------------------------------------------------------------------
    def txn_offset_commit(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(TXN_OFFSET_COMMIT)
        topic_cls = cls.TxnOffsetCommitResponseTopic
        part_cls = topic_cls.TxnOffsetCommitResponsePartition
        body, version = request.body, request.api_version
        group = body.group_id
        codes: dict[Partition, int] = {}
        offsets: dict[Partition, TxnOffset] = {}
        refusal = (ErrorCode.INVALID_GROUP_ID if not valid_group_id(group)
                   else ErrorCode.GROUP_AUTHORIZATION_FAILED
                   if not group_allowed(self.broker, self.topics.vhost, group)
                   else self._member_check(group, body, version))
        for topic in body.topics:
            queue, code = None, refusal
            if code is None:
                try:
                    queue = self.topics.stream(topic.name, create=False, need="read")
                except PartitionError as exc:
                    code = exc.code
            for p in topic.partitions:
                key = (topic.name, p.partition_index)
                if code is not None:
                    codes[key] = code
                elif not queue.partitions.has(p.partition_index):
                    codes[key] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
                elif len(p.committed_metadata or "") > MAX_METADATA:
                    codes[key] = ErrorCode.OFFSET_METADATA_TOO_LARGE  # as OffsetCommit
                else:
                    epoch = getattr(p, "committed_leader_epoch", None)  # v2+
                    offsets[key] = TxnOffset(p.committed_offset,
                                             -1 if epoch is None else epoch,
                                             p.committed_metadata or "")
        if offsets:
            try:
                self.coordinator.txn_offset_commit(body.transactional_id, body.producer_id,
                                                   body.producer_epoch, group, offsets)
                codes.update(dict.fromkeys(offsets, ErrorCode.NONE))
            except TxnError as exc:
                codes.update(dict.fromkeys(offsets, _code(exc.error, TXN_OFFSET_COMMIT, version)))
        return cls(version=version, throttle_time_ms=0, topics=[
            topic_cls(name=t.name, partitions=[
                part_cls(partition_index=p.partition_index,
                         error_code=codes[(t.name, p.partition_index)]) for p in t.partitions])
            for t in body.topics])

    def _member_check(self, group: str, body: Any, version: int) -> ErrorCode | None:
        """KIP-447 (v3): a commit naming a member or generation is checked against the
        group, as Kafka's doTxnCommitOffsets does (a group it does not know has no member
        and generation 0); without them it is not (the producer's epoch fences)."""
        if version < 3:
            return None
        member, generation = body.member_id, body.generation_id
        kafka_group = self.group_of(group)
        members = kafka_group.members if kafka_group is not None else {}
        current = kafka_group.generation if kafka_group is not None else 0
        if member and member not in members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation >= 0 and generation != current:
            return ErrorCode.ILLEGAL_GENERATION
        return None

    # -- EndTxn ----------------------------------------------------------------------------
    def end_txn(self, request: Request, session: Any) -> Any:
        cls = codec.response_class(END_TXN)
        body, version = request.body, request.api_version
        try:
            waiting = self.coordinator.end_txn(body.transactional_id, body.producer_id,
                                               body.producer_epoch, bool(body.committed))
        except TxnError as exc:
            return cls(version=version, throttle_time_ms=0,
                       error_code=_code(exc.error, END_TXN, version))
        response = cls(version=version, throttle_time_ms=0, error_code=ErrorCode.NONE)
        if waiting is None:
            return response
        return asyncio.ensure_future(self._durable(response, waiting))

    @staticmethod
    async def _durable(response: Any, waiting: Any) -> Any:
        try:
            await waiting
        except Exception as exc:  # the markers are written; their fsync failed
            log.warning("Kafka transaction markers not durable: %s", exc)
            response.error_code = ErrorCode.KAFKA_STORAGE_ERROR
        return response
