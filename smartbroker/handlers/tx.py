"""AMQP class ``tx``: publishes and acks take effect together at commit."""

from __future__ import annotations

from pamqp import commands

from smartbroker.errors import ChannelError, precondition_failed


def select(conn, ch, m: commands.Tx.Select) -> None:
    if ch.confirm:
        raise precondition_failed("cannot switch from confirm to tx mode")
    if ch.tx is None:
        ch.tx = []
    conn.send_method(ch.number, commands.Tx.SelectOk())


class _CommitWaiter:
    """Sends tx.commit-ok once the transaction's store records are fsynced."""

    def __init__(self, conn, ch) -> None:
        self.conn, self.ch = conn, ch

    def sync_mark(self) -> int:
        return 0

    def synced(self, mark: int) -> None:
        if not self.ch.closing and self.ch.number in self.conn.channels:
            self.conn.send_method(self.ch.number, commands.Tx.CommitOk())

    def sync_failed(self, mark: int) -> None:
        if self.ch.number in self.conn.channels:
            self.conn.fail_channel(self.ch, ChannelError(506, "message store unavailable", 90, 20))

    def nack_waiting(self, seq: int) -> None:
        """A publish of the transaction was refused or lost by its queue's leader (cluster
        forwarding): the commit cannot be answered -ok."""
        self.sync_failed(seq)


def commit(conn, ch, m: commands.Tx.Commit) -> None:
    if ch.tx is None:
        raise precondition_failed("channel is not transactional")
    logs = ch.tx_commit()
    if logs and conn.vhost.store is not None:
        conn.vhost.store.request_sync(_CommitWaiter(conn, ch), logs)
        return
    conn.send_method(ch.number, commands.Tx.CommitOk())


def rollback(conn, ch, m: commands.Tx.Rollback) -> None:
    if ch.tx is None:
        raise precondition_failed("channel is not transactional")
    ch.tx_rollback()
    conn.send_method(ch.number, commands.Tx.RollbackOk())


HANDLERS = {
    commands.Tx.Select: select,
    commands.Tx.Commit: commit,
    commands.Tx.Rollback: rollback,
}
