"""AMQP class ``tx``: publishes and acks take effect together at commit."""

from __future__ import annotations

from pamqp import commands

from smartbroker.errors import precondition_failed


def select(conn, ch, m: commands.Tx.Select) -> None:
    if ch.confirm:
        raise precondition_failed("cannot switch from confirm to tx mode")
    if ch.tx is None:
        ch.tx = []
    conn.send_method(ch.number, commands.Tx.SelectOk())


def commit(conn, ch, m: commands.Tx.Commit) -> None:
    if ch.tx is None:
        raise precondition_failed("channel is not transactional")
    ch.tx_commit()
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
