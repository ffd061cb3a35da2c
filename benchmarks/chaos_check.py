"""chaos.py's checker: from the clients' ledger, what the broker lost, duplicated,
invented or reordered (Jepsen's queue checker, with AMQP's own allowances).

- **lost**: confirmed, never consumed. Must be 0.
- **phantom**: consumed, never published.
- **duplicated**: consumed more than once, split by why:
  - ``among_unconfirmed``: the publisher sent it again (its first publish was nacked or
    never confirmed: a failover, a stall) and more than one copy made it in. Allowed:
    at-least-once publishing.
  - ``redelivered``: the same copy again, flagged ``redelivered`` (a consumer's ack
    that did not take before its connection or the leader went). Allowed: AMQP's
    at-least-once delivery.
  - ``among_confirmed``: a message published once, delivered again without the flag
    (a stream's reader never rereads: it resumes after its last offset). Not allowed.
- **order violations** per publisher: within one consumer connection, the first
  deliveries (not redelivered) of messages published once must come in publish order
  (a queue is FIFO per publisher and channel; a message republished or redelivered is
  out of order by design and not counted).
"""

from __future__ import annotations

from collections import Counter, defaultdict

from chaos_clients import Delivery, Ledger


def _seq(mid: str) -> tuple[str, int]:
    publisher, _, seq = mid.partition(":")
    return publisher, int(seq) if seq.isdigit() else -1


def duplicates(ledger: Ledger) -> dict[str, list[str]]:
    by_mid: dict[str, list[Delivery]] = defaultdict(list)
    for d in ledger.deliveries:
        by_mid[d.mid].append(d)
    out: dict[str, list[str]] = {"among_unconfirmed": [], "redelivered": [],
                                 "among_confirmed": []}
    for mid, seen in by_mid.items():
        if len(seen) < 2:
            continue
        extra = [d for d in seen[1:] if not d.redelivered]  # a stream never flags one
        if not extra:
            out["redelivered"].append(mid)
        elif ledger.sent.get(mid, 0) > 1:
            out["among_unconfirmed"].append(mid)
        else:
            out["among_confirmed"].append(mid)
    return out


def order_violations(ledger: Ledger) -> dict[str, int]:
    last: dict[tuple[str, str], int] = {}
    out: Counter[str] = Counter()
    for d in ledger.deliveries:
        if d.redelivered or ledger.sent.get(d.mid) != 1:
            continue
        publisher, seq = _seq(d.mid)
        key = (d.consumer + "@" + d.queue, publisher)
        if seq < last.get(key, -1):
            out[publisher] += 1
        last[key] = max(seq, last.get(key, -1))
    return dict(out)


def detail(ledger: Ledger, mids: list[str], t0: float) -> dict[str, list[str]]:
    """Each delivery of ``mids``: consumer connection, seconds into the run, flag."""
    want = set(mids)
    out: dict[str, list[str]] = defaultdict(list)
    for d in ledger.deliveries:
        if d.mid in want:
            out[d.mid].append(f"{d.consumer} {d.at - t0:.1f}s a{d.attempt}"
                              + (" redelivered" if d.redelivered else ""))
    return dict(out)


def sent_where(ledger: Ledger, mid: str, t0: float) -> str:
    """Its queue, and through which node and when it was last published."""
    node, at = ledger.last_sent[mid]
    return f"{ledger.queue_of[mid]} via {node} at {at - t0:.1f}s, attempt {ledger.sent[mid]}"


def check(ledger: Ledger, t0: float = 0.0) -> dict:
    consumed = {d.mid for d in ledger.deliveries}
    lost = sorted(ledger.confirmed - consumed, key=_seq)
    phantom = sorted(consumed - ledger.sent.keys(), key=_seq)
    dups = duplicates(ledger)
    unconfirmed = ledger.sent.keys() - ledger.confirmed
    return {
        "published": len(ledger.sent),
        "publishes_sent": sum(ledger.sent.values()),
        "confirmed": len(ledger.confirmed),
        "confirmed_first_try": len(ledger.confirmed_first_try),
        "never_confirmed": len(unconfirmed),
        "never_confirmed_consumed": len(unconfirmed & consumed),
        "deliveries": len(ledger.deliveries),
        "consumed": len(consumed),
        "lost": len(lost),
        "lost_sample": lost[:20],
        "lost_detail": {m: sent_where(ledger, m, t0) for m in lost[:40]},
        "phantom": len(phantom),
        "phantom_sample": phantom[:20],
        "duplicated": {k: len(v) for k, v in dups.items()},
        "duplicated_sample": {k: v[:10] for k, v in dups.items() if v},
        "duplicated_among_confirmed_detail": detail(ledger, dups["among_confirmed"][:10], t0),
        "order_violations": order_violations(ledger),
        "nacks": ledger.nacks,
        "returns": ledger.returns,
        "stalled_connections": ledger.stalls,
        "client_connections": ledger.connections,
        "connect_failures": ledger.connect_failures,
    }
