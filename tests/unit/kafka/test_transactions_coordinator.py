"""The transaction coordinator alone: its state across restarts (the keyed log, a crash
midway through compaction, Prepare* completed at load), producer ids never reused, a disk
that refuses, transactional ids forgotten when idle."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartbroker.kafka.transactions import TransactionCoordinator, TxnError


def test_coordinator_state_survives_a_restart(tmp_path: Path) -> None:
    written: list[tuple[list[tuple[str, int]], int, int, bool]] = []

    def markers(parts: list[tuple[str, int]], pid: int, epoch: int, commit: bool) -> None:
        written.append((parts, pid, epoch, commit))

    path = tmp_path / "kafka-transactions"
    c = TransactionCoordinator(path, markers, lambda g, o: None)
    pid, epoch = c.init_producer_id("tx", 60000)
    c.add_partitions("tx", pid, epoch, [("t", 0)])
    c.init_producer_id("gone", 60000)
    assert c.expire_ids(c.txns["gone"].updated_ms + 7 * 86_400_000 + 1) == ["gone"]
    other = c.new_producer_id()
    c.close()
    c2 = TransactionCoordinator(path, markers, lambda g, o: None)
    assert c2.new_producer_id() > other  # ids never reused
    assert set(c2.txns) == {"tx"}
    assert c2.txns["tx"].state == "Ongoing" and c2.txns["tx"].partitions == {("t", 0)}
    c2.txns["tx"].state = "PrepareCommit"  # as if it crashed before the markers
    c2._save(c2.txns["tx"])
    c2.close()
    c3 = TransactionCoordinator(path, markers, lambda g, o: None)
    c3.recover()
    assert written == [([("t", 0)], pid, epoch, True)]
    assert c3.txns["tx"].state == "CompleteCommit"
    with pytest.raises(TxnError) as err:
        c3.add_partitions("tx", pid, epoch - 1, [("t", 0)])
    assert err.value.error == "PRODUCER_FENCED"
    c3.close()
    # a crash between the two steps of the compaction at load: the new log is used
    path.rename(path.with_name(path.name + ".new"))
    c4 = TransactionCoordinator(path, markers, lambda g, o: None)
    assert c4.txns["tx"].state == "CompleteCommit"
    c4.close()


def test_a_disk_that_refuses_never_hands_out_an_id_twice(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    c = TransactionCoordinator(blocker / "kafka-transactions", lambda *a: None, lambda g, o: None)
    with pytest.raises(TxnError) as err:
        c.init_producer_id(None, 1000)
    assert err.value.error == "COORDINATOR_NOT_AVAILABLE"


def test_idle_transactional_ids_are_forgotten() -> None:
    c = TransactionCoordinator(None, lambda *a: None, lambda g, o: None)
    pid, epoch = c.init_producer_id("idle", 1000)
    c.init_producer_id("busy", 1000)
    bpid, bepoch = c.txns["busy"].producer_id, c.txns["busy"].epoch
    c.add_partitions("busy", bpid, bepoch, [("t", 0)])  # open: never forgotten
    week = 7 * 86_400_000
    assert c.expire_ids(c.txns["idle"].updated_ms + week) == []
    assert c.expire_ids(c.txns["idle"].updated_ms + week + 1) == ["idle"]
    assert c.lookup(pid) is None and c.lookup(bpid) is not None
    assert c.init_producer_id("idle", 1000)[0] != pid  # afresh


def test_markers_the_disk_refuses_are_written_later() -> None:
    fail = [True]
    written: list[bool] = []

    def markers(parts: list[tuple[str, int]], pid: int, epoch: int, commit: bool) -> None:
        if fail[0]:
            raise OSError("disk full")
        written.append(commit)

    c = TransactionCoordinator(None, markers, lambda g, o: None)
    pid, epoch = c.init_producer_id("tx", 60000)
    c.add_partitions("tx", pid, epoch, [("t", 0)])
    with pytest.raises(TxnError) as err:
        c.end_txn("tx", pid, epoch, commit=True)
    assert err.value.error == "COORDINATOR_NOT_AVAILABLE"
    with pytest.raises(TxnError) as err:
        c.end_txn("tx", pid, epoch, commit=True)  # the client's retry
    assert err.value.error == "CONCURRENT_TRANSACTIONS"
    c.retry_prepared()  # still refused: stays prepared
    assert c.txns["tx"].state == "PrepareCommit"
    fail[0] = False
    c.retry_prepared()  # the maintenance pass
    assert c.txns["tx"].state == "CompleteCommit" and written == [True]
    assert c.end_txn("tx", pid, epoch, commit=True) is None
